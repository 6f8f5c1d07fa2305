"""aaconv: convolutional networks with attention (AA-conv, AW-conv, SE) on ImageNet and COCO.

Importing aaconv registers its models with timm's registry (aaconv.models.timm_models).
"""

from aaconv.models.timm_models import register_timm_models

register_timm_models()
