"""Models: ResNet and MnasNet backbones with attention, classifiers and COCO detectors; Wide ResNets for CIFAR.

Each network registers itself where it is defined (aaconv.models.registry); `create_model` builds one by name.
The ResNets and MnasNets follow the Backbone protocol (aaconv.models.backbone) and are registered with timm
(aaconv.models.timm_models).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from aaconv.models import mnasnet, resnet, wrn  # noqa: F401  (registers their networks)
from aaconv.models.backbone import Backbone
from aaconv.models.registry import MODELS, backbone_options, backbones, create_model, get_entry


def create_detector(
    head: str,
    backbone: str | Mapping[str, Any],
    attention: str | Mapping[str, Any] = "none",
    num_classes: int = 91,
    **kwargs: Any,
) -> nn.Module:
    """RetinaNet / Faster R-CNN with an FPN over `backbone`; see aaconv.models.detection.build_detector."""
    from aaconv.models.detection import build_detector

    return build_detector(head, backbone, attention, num_classes=num_classes, **kwargs)


__all__ = ["MODELS", "Backbone", "backbone_options", "backbones", "create_model", "create_detector", "get_entry"]
