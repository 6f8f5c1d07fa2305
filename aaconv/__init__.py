"""aaconv: convolutional networks with attention (AA-conv, AW-conv, SE) on ImageNet and COCO.

Importing aaconv registers its models with timm's registry (aaconv.models.registry) once timm is imported.
"""

from aaconv.models.timm_models import register_timm_models_on_import

register_timm_models_on_import()
