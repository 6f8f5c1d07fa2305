"""The Backbone protocol: what a detector (or any feature consumer) needs from a classification network.

A backbone is an `nn.Module` that also states its stages in timm's `feature_info` form and can return
their outputs. ResNet (aaconv.models.resnet) and MnasNet (aaconv.models.mnasnet) implement it;
aaconv.models.detection reads nothing else. timm's feature extraction (`timm.create_model(name,
features_only=True)`, see aaconv.models.registry) walks the same `feature_info`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

FeatureInfo = list[dict[str, Any]]


def feature_info(channels: Sequence[int], reductions: Sequence[int], modules: Sequence[str]) -> FeatureInfo:
    """timm's `feature_info`: one {"num_chs", "reduction", "module"} entry per stage, in forward order."""
    return [{"num_chs": c, "reduction": r, "module": m} for c, r, m in zip(channels, reductions, modules, strict=True)]


@runtime_checkable
class Backbone(Protocol):
    """A network for (B, 3, H, W) images whose intermediate stages can be read out.

    Attributes:
        feature_info: one entry per stage in forward order, as timm's: `num_chs` (channels), `reduction`
            (stride relative to the input) and `module` (the name of the sub-module whose output the stage
            is, as in `named_modules()`). A stage's position in this list is its id: `forward_stages`, the
            detectors' `returned_stages` and timm's `out_indices` all count in it.
    """

    feature_info: FeatureInfo

    def forward_stages(self, x: Tensor, stages: Sequence[int]) -> list[Tensor]:
        """(B, 3, H, W) -> [(B, num_chs_i, H / reduction_i, W / reduction_i) for i in sorted `stages`]."""
        ...

    def trainable_units(self) -> list[nn.Module]:
        """The units a detector freezes from the front (torchvision's `trainable_backbone_layers` counts the
        last ones): the stem first, then the stages."""
        ...
