"""Models: ResNet and MnasNet backbones with attention, classifiers and COCO detectors; Wide ResNets for CIFAR.

`create_model` builds a classifier by name (aaconv.models.registry, which also registers the ImageNet models
with timm); the ResNets and MnasNets follow the Backbone protocol (aaconv.models.backbone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from aaconv.models.backbone import Backbone
from aaconv.models.registry import BUILDERS, backbone_options, create_model

MODELS: tuple[str, ...] = tuple(BUILDERS)


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


__all__ = ["MODELS", "Backbone", "backbone_options", "create_model", "create_detector"]
