"""The pieces of timm's classifier API that ResNet and MnasNet share: global pooling, a new classifier, and the
stage indices that `forward_intermediates` / `prune_intermediate_layers` take.

A network keeps its own classifier attribute (`fc` in ResNet, `classifier` in MnasNet: their state-dict keys);
these helpers keep the semantics of timm's `SelectAdaptivePool2d`, `reset_classifier` and
`feature_take_indices` without importing timm (`import aaconv` does not pay timm's import).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from aaconv.errors import ConfigError

GLOBAL_POOLS = ("avg", "max", "")  # "": no pooling (the head returns the (B, C, H, W) map)


class GlobalPool(nn.Module):
    """timm's `global_pool`: (B, C, H, W) -> (B, C) by the mean ("avg") or max ("max") over H, W; "" passes the
    map through unchanged."""

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        if pool_type not in GLOBAL_POOLS:
            raise ConfigError(f"global_pool must be one of {', '.join(map(repr, GLOBAL_POOLS))}, got {pool_type!r}")
        self.pool_type = pool_type

    def forward(self, x: Tensor) -> Tensor:
        if self.pool_type == "avg":
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.pool_type == "max":
            return F.adaptive_max_pool2d(x, 1).flatten(1)
        return x


def check_head(num_classes: int, global_pool: str) -> None:
    """A network's constructor: ConfigError unless a linear classifier can follow `global_pool`."""
    if num_classes < 0:
        raise ConfigError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
    if global_pool == "" and num_classes > 0:
        raise ConfigError(f'global_pool="" (no pooling) needs num_classes=0, got num_classes={num_classes}')


def new_classifier(model: nn.Module, in_features: int, num_classes: int) -> nn.Module:
    """A Linear(in_features, num_classes) on the device and dtype of `model`'s parameters and in its train/eval
    mode (timm's `reset_classifier`), or Identity for num_classes = 0."""
    if num_classes < 0:
        raise ConfigError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
    if num_classes == 0:
        return nn.Identity().train(model.training)
    reference = next(model.parameters())
    head = nn.Linear(in_features, num_classes, device=reference.device, dtype=reference.dtype)
    return head.train(model.training)


def new_head(model: nn.Module, num_classes: int, global_pool: str | None) -> tuple[GlobalPool, nn.Module]:
    """timm's `reset_classifier` for a network with `global_pool` and `num_features`: the pooling `global_pool`
    (None: the current one) and a new classifier for `num_classes` (0: none), in the model's train/eval mode."""
    pool = GlobalPool(model.global_pool.pool_type if global_pool is None else global_pool)
    return pool.train(model.training), new_classifier(model, model.num_features, num_classes)


def take_indices(num_stages: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's `feature_take_indices`: None -> every stage; n -> the last n stages; a sequence -> those stages
    (negative ones count from the end). ConfigError naming the valid range for any other."""
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ConfigError(f"the number of last stages to take must be 1..{num_stages}, got {indices}")
        return list(range(num_stages - indices, num_stages))
    taken = [index + num_stages if index < 0 else index for index in indices]
    bad = [index for index, taken_index in zip(indices, taken, strict=True) if not 0 <= taken_index < num_stages]
    if bad or not taken:
        raise ConfigError(
            f"stage indices must be among 0..{num_stages - 1} (or -{num_stages}..-1), got {list(indices)}"
        )
    return taken
