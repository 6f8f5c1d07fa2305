"""Models: ResNet and MnasNet backbones with attention, classifiers and COCO detectors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from aaconv.models.mnasnet import MNASNETS, build_mnasnet
from aaconv.models.resnet import RESNETS, build_resnet
from aaconv.models.wrn import WRNS, build_wrn

MODELS: tuple[str, ...] = RESNETS + MNASNETS + WRNS


def create_model(name: str, attention: str | Mapping[str, Any] = "none", num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Builds classifier `name` (one of MODELS) with `attention` (a variant name such as "aa+se" or the
    `attention` config mapping {variant, aa, aw, se}); kwargs go to the backbone (ResNet / MnasNet / WRN)."""
    if name in RESNETS:
        return build_resnet(name, attention, num_classes=num_classes, **kwargs)
    if name in MNASNETS:
        return build_mnasnet(name, attention, num_classes=num_classes, **kwargs)
    if name in WRNS:
        return build_wrn(name, attention, num_classes=num_classes, **kwargs)
    raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")


def create_detector(head: str, backbone: str | Mapping[str, Any], attention: str | Mapping[str, Any] = "none",
                    num_classes: int = 91, **kwargs: Any) -> nn.Module:
    """RetinaNet / Faster R-CNN with an FPN over `backbone`; see aaconv.models.detection.build_detector."""
    from aaconv.models.detection import build_detector

    return build_detector(head, backbone, attention, num_classes=num_classes, **kwargs)


__all__ = ["MODELS", "create_model", "create_detector"]
