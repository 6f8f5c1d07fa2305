"""The Backbone protocol: what a detector (or any feature consumer) needs from a classification network.

A backbone is an `nn.Module` that also states its stages in timm's `feature_info` form, can return
their outputs and can checkpoint its blocks (timm's `set_grad_checkpointing`). ResNet (aaconv.models.resnet) and MnasNet (aaconv.models.mnasnet) implement it;
aaconv.models.detection reads nothing else. timm's feature extraction (`timm.create_model(name,
features_only=True)`, see aaconv.models.registry) walks the same `feature_info`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

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


def drop_path_rates(drop_path_rate: float, num_blocks: int, span: int) -> list[float]:
    """Stochastic depth's linear rule (Huang et al. 2016, "Deep Networks with Stochastic Depth"): block i of
    `num_blocks` (counted over the whole network) drops its residual branch with probability
    drop_path_rate * i / span. timm's ResNet takes span = num_blocks - 1 (the last block gets the full rate),
    timm's EfficientNet builder span = num_blocks."""
    if not 0.0 <= drop_path_rate < 1.0:
        raise ConfigError(f"backbone.drop_path_rate must be in [0, 1), got {drop_path_rate}")
    return [drop_path_rate * i / span for i in range(num_blocks)]


def accept_se_keys(block: nn.Module) -> None:
    """Lets ``block`` load state dicts that name its post-block attention module ``se``: timm's name for that slot
    whatever the module holds (SE, CBAM, ...), so timm's weights (seresnet50, mnasnet_a1) and aaconv checkpoints
    written before the module was named ``post_attention`` load as they are."""
    block.register_load_state_dict_pre_hook(_rename_se_keys)


def _rename_se_keys(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    """load_state_dict pre-hook: ``<prefix>se.*`` -> ``<prefix>post_attention.*`` (``accept_se_keys``)."""
    old = prefix + "se."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + "post_attention." + key.removeprefix(old)] = state_dict.pop(key)


def drop_path(rate: float) -> nn.Module:
    """timm's `DropPath(rate)` for a residual branch, (B, ...) -> (B, ...) with each sample zeroed with probability
    `rate` in training (the rest scaled by 1 / (1 - rate)); nn.Identity at rate 0, as timm's EfficientNet blocks.
    timm is imported only for a rate above 0 (`import aaconv` does not pay timm's import). No parameters."""
    if rate == 0.0:
        return nn.Identity()
    from timm.layers import DropPath

    return DropPath(rate)


@contextlib.contextmanager
def _buffers_kept(module: nn.Module) -> Iterator[None]:
    """Restores `module`'s buffers (BatchNorm running statistics) when the block exits."""
    saved = [(buffer, buffer.clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _recompute_keeps_buffers(block: nn.Module) -> tuple[contextlib.AbstractContextManager, ...]:
    """torch.utils.checkpoint's `context_fn`: nothing around the forward, buffers restored around the recompute."""
    return contextlib.nullcontext(), _buffers_kept(block)


def checkpoint_blocks(stages: Sequence[nn.Module], x: Tensor) -> Tensor:
    """Runs `stages` in order, each block of an nn.Sequential stage (a stage of another type whole) under
    `torch.utils.checkpoint.checkpoint(use_reentrant=False)`: gradient checkpointing (Chen et al. 2016, "Training
    Deep Nets with Sublinear Memory Cost"; timm's `checkpoint_seq(..., flatten=True)`, one block per segment).
    Only the block inputs are kept for backward, which runs each block's forward again.
    (B, C, H, W) -> the last stage's output.

    The recompute replays the forward's RNG state (DropPath, dropout: the same masks), so the gradients equal the
    plain run's, and it restores the block's buffers afterwards, so BatchNorm running statistics are updated once
    per step as in the plain run (timm lets the recompute update them a second time). Under torch.compile the
    compiled graph recomputes without mutating buffers, and the restore is skipped.
    """
    blocks = [block for stage in stages for block in (stage if isinstance(stage, nn.Sequential) else (stage,))]
    for block in blocks:
        if torch.compiler.is_compiling():
            x = checkpoint(block, x, use_reentrant=False)
        else:
            x = checkpoint(block, x, use_reentrant=False, context_fn=partial(_recompute_keeps_buffers, block))
    return x


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

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's: checkpoint each block (not the stem or head) in `forward`, `forward_features` and
        `forward_stages` (checkpoint_blocks)."""
        ...


def is_backbone_class(cls: type) -> bool:
    """Whether instances of `cls` follow the Backbone protocol (its methods; `feature_info` is set per instance)."""
    return all(
        callable(getattr(cls, method, None))
        for method in ("forward_stages", "trainable_units", "set_grad_checkpointing")
    )
