"""Turn an attention variant name into the builders a backbone block uses.

A block asks the builders for its spatial (3x3) conv and for a module applied to the residual
branch output (after its last BN, before the addition). Variants (``VARIANTS``):

- ``none``: plain ``nn.Conv2d`` (same parameters / state-dict keys as torchvision), no post module.
- ``se``: plain conv, post = ``SqueezeExcite`` (Hu et al., arXiv 1709.01507).
- ``aa``: ``AAConv2d`` (Bello et al., arXiv 1904.09925).
- ``aw``: ``AWConv2d`` (Zhu et al., arXiv 2108.08205).
- ``aa+se``, ``aw+se``: the AA / AW conv with SE after the branch.
- ``aw+aa``: ``AAConv2d`` whose convolutional branch is an ``AWConv2d``.

Parts may be written in any order ("se+aw" == "aw+se").

AA's defaults have one home each: the depth rule (``kappa``, ``upsilon``, ``num_heads``, ``min_dk_per_head``)
in ``AA_DEFAULTS`` below, every layer option (``relative``, ``sine``, ``coordconv``, ``memory_pool``, ``impl``,
``stride_mode``, ``max_size``, ``query_chunk``) in ``AAConv2d``'s signature. An option given as ``None`` takes
that default, so a config can leave a key null.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple, Protocol

from torch import nn

from .aa import AAConv2d, plain_conv
from .aw import AWConv2d
from .se import SqueezeExcite

VARIANTS = ("none", "se", "aa", "aw", "aa+se", "aw+se", "aw+aa")
_PART_ORDER = ("aw", "aa", "se")
AA_DEFAULTS: dict[str, Any] = {"kappa": 0.2, "upsilon": 0.1, "num_heads": 8, "min_dk_per_head": 20}
"""The AA paper's ResNet depth rule (Bello et al. 2019): "kappa = 2 upsilon = 0.2", N_h = 8, and at least 20 key
dims per head (stated for its CIFAR networks; its ImageNet parameter counts need it too, docs/models.md)."""


class ConvBuilder(Protocol):
    def __call__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
    ) -> nn.Module: ...


class AttentionBuilders(NamedTuple):
    conv: ConvBuilder
    """Builds the block's spatial conv; padding ``kernel_size // 2``, no bias."""
    post: Callable[[int], nn.Module] | None
    """Builds the module applied to the residual branch output; ``None`` = nothing."""


def normalize_variant(variant: str) -> str:
    """Canonical spelling of ``variant`` ("se+aw" -> "aw+se"); ValueError if it is not a variant."""
    parts = [p.strip().lower() for p in variant.split("+")]
    for part in parts:
        if part not in ("none", *_PART_ORDER):
            raise ValueError(f"unknown attention part {part!r} in {variant!r}; valid variants: {VARIANTS}")
    canonical = "+".join(sorted(parts, key=lambda p: ("none", *_PART_ORDER).index(p)))
    if canonical not in VARIANTS:
        raise ValueError(f"unsupported attention combination {variant!r}; valid variants: {VARIANTS}")
    return canonical


def round_to_heads(value: float, num_heads: int) -> int:
    """``value`` rounded to the nearest multiple of ``num_heads`` (halves up), at least ``num_heads``."""
    return max(num_heads, int(math.floor(value / num_heads + 0.5)) * num_heads)


def attention_depths(
    out_channels: int, kappa: float, upsilon: float, num_heads: int, min_dk_per_head: int
) -> tuple[int, int]:
    """(dk, dv) from the paper's ratios: dk = max(round(kappa * out_channels), min_dk_per_head * num_heads) and
    dv = round(upsilon * out_channels), rounded to the nearest multiple of ``num_heads`` (so dk_h >= 1, dv >= N_h).

    dv is capped at the largest multiple of ``num_heads`` <= ``out_channels`` so the conv branch keeps
    ``out_channels - dv >= 0`` channels (``upsilon=1`` with ``out_channels % num_heads == 0``: fully
    attentional, no conv branch). Examples, 8 heads, kappa 0.2, upsilon 0.1: out 128 -> (160, 16) with the
    paper's minimum of 20 dims per head, (24, 16) without it (``min_dk_per_head=0``); 512 -> (160, 48) / (104, 48);
    1024 -> (208, 104) either way.
    """
    if out_channels < num_heads:
        raise ValueError(f"AA needs out_channels >= num_heads, got {out_channels} < {num_heads}")
    dk = max(round_to_heads(kappa * out_channels, num_heads), min_dk_per_head * num_heads)
    dv = min(round_to_heads(upsilon * out_channels, num_heads), out_channels // num_heads * num_heads)
    return dk, dv


def _aw_conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1, **options: Any
) -> AWConv2d:
    return AWConv2d(in_channels, out_channels, kernel_size, stride, groups=groups, **options)


def _aa_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    *,
    kappa: float,
    upsilon: float,
    num_heads: int,
    min_dk_per_head: int,
    branch: ConvBuilder | None = None,
    **options: Any,
) -> AAConv2d:
    dk, dv = attention_depths(out_channels, kappa, upsilon, num_heads, min_dk_per_head)
    return AAConv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride,
        dk=dk,
        dv=dv,
        num_heads=num_heads,
        groups=groups,
        conv_builder=branch,
        **options,
    )


def _given(options: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: value for key, value in (options or {}).items() if value is not None}


def create_attention(
    variant: str = "none",
    *,
    aa: Mapping[str, Any] | None = None,
    aw: Mapping[str, Any] | None = None,
    se: Mapping[str, Any] | None = None,
) -> AttentionBuilders:
    """Builders for ``variant`` (one of ``VARIANTS``, parts in any order).

    Args:
        aa: the depth rule (``AA_DEFAULTS`` fills what is missing; dk, dv come from ``attention_depths``) plus
            any ``AAConv2d`` keyword (``relative``, ``sine``, ``coordconv``, ``memory_pool``, ``impl``, ...).
        aw: ``AWConv2d`` keywords (``reduction``, ``num_maps``, ``gate``, ``impl``).
        se: ``SqueezeExcite`` keywords (``reduction``, ``divisor``, ``rd_channels``).
        Options set to ``None`` are left out (their default applies).
    """
    parts = set(normalize_variant(variant).split("+"))
    aw_conv: ConvBuilder = partial(_aw_conv, **_given(aw))
    conv: ConvBuilder = plain_conv
    if "aa" in parts:
        conv = partial(_aa_conv, **{**AA_DEFAULTS, **_given(aa)}, branch=aw_conv if "aw" in parts else None)
    elif "aw" in parts:
        conv = aw_conv
    post = partial(SqueezeExcite, **_given(se)) if "se" in parts else None
    return AttentionBuilders(conv=conv, post=post)
