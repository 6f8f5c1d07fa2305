"""The Backbone protocol: what a detector (or any feature consumer) needs from a classification network.

A backbone is an `nn.Module` that also states its stages in timm's `feature_info` form and can return
their outputs. ResNet (aaconv.models.resnet) and MnasNet (aaconv.models.mnasnet) implement it;
aaconv.models.detection reads nothing else. timm's feature extraction (`timm.create_model(name,
features_only=True)`, see aaconv.models.registry) walks the same `feature_info`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from aaconv.errors import ConfigError
from aaconv.layers import Attention

FeatureInfo = list[dict[str, Any]]


def feature_size(input_size: int | None, stride: int) -> int | None:
    """Side of a stride-`stride` feature map of an `input_size` input (each stride-2 step: ceil(H / 2))."""
    if input_size is None:
        return None
    return max(1, math.ceil(input_size / stride))


def check_stage_ids(attention: Attention, attention_stages: Iterable[int], valid: range, names: str) -> None:
    """ConfigError unless `attention_stages` and every attention option naming stages are among `valid`
    (`names`: what the ids are, e.g. "layer1..layer4")."""
    keys = {"backbone.attention_stages": tuple(attention_stages), **attention.stage_ids()}
    for key, ids in keys.items():
        unknown = sorted(set(ids) - set(valid))
        if unknown:
            raise ConfigError(f"{key} must be among {valid.start}..{valid.stop - 1} ({names}), got {unknown}")


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


def is_backbone_class(cls: type) -> bool:
    """Whether instances of `cls` follow the Backbone protocol (its methods; `feature_info` is set per instance)."""
    return all(callable(getattr(cls, method, None)) for method in ("forward_stages", "trainable_units"))
