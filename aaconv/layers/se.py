"""Squeeze-and-Excitation channel attention, the AA paper's comparison baseline.

Hu et al., "Squeeze-and-Excitation Networks", arXiv 1709.01507. Layout and rounding follow timm's
``SEModule`` (``fc1``/``fc2`` 1x1 convs with bias), so an SE-ResNet-50 built with ``reduction=16``
has timm's ``seresnet50`` parameter count (28,088,024) and state-dict key names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .parts import AttentionPart, PartOptions, PostBuilder, register_part


def reduced_channels(channels: int, reduction: float, divisor: int = 8) -> int:
    """``channels / reduction`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``).

    Same rounding as timm's ``make_divisible(channels / reduction, divisor, round_limit=0)``;
    ``divisor=1`` gives plain rounding to the nearest integer.
    """
    value = channels / reduction
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(relu(fc1(mean_hw(x))))) with fc1: C -> C/r, fc2: C/r -> C.

    Shapes: (B, C, H, W) -> (B, C, H, W).

    Args:
        channels: C.
        reduction: r; the hidden width is ``reduced_channels(C, r, divisor)``.
        divisor: the hidden width is a multiple of this (timm's default 8).
        rd_channels: explicit hidden width, overriding ``reduction``/``divisor``
            (MnasNet-A1 sizes its SE from the block's input width).
    """

    def __init__(
        self, channels: int, reduction: float = 16, *, divisor: int = 8, rd_channels: int | None = None
    ) -> None:
        super().__init__()
        hidden = rd_channels or reduced_channels(channels, reduction, divisor)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()


@dataclass(frozen=True)
class ChannelMLPOptions(PartOptions):
    """The options of a post part with a C -> C/r -> C channel MLP (SE, CBAM): r, the rounding divisor, and an
    explicit hidden width."""

    reduction: float = 16
    divisor: int = 8
    rd_channels: int | None = None

    def check(self) -> dict[str, str]:
        problems = {}
        if self.reduction <= 0:
            problems["reduction"] = "a number > 0"
        if self.divisor <= 0:
            problems["divisor"] = "a positive integer"
        if self.rd_channels is not None and self.rd_channels <= 0:
            problems["rd_channels"] = "a positive integer, or null"
        return problems


@dataclass(frozen=True)
class SEOptions(ChannelMLPOptions):
    """``attention.se``: ``SqueezeExcite``'s options (its docstring)."""


def build_se(options: SEOptions) -> PostBuilder:
    """SE after a block; a backbone's ``hidden`` width is used unless ``rd_channels`` is set."""

    def post(channels: int, hidden: int | None = None) -> SqueezeExcite:
        rd_channels = options.rd_channels or hidden
        return SqueezeExcite(channels, options.reduction, divisor=options.divisor, rd_channels=rd_channels)

    return post


register_part(
    AttentionPart(
        name="se", slot="post", options=SEOptions, build=build_se, modules=(SqueezeExcite,), paper="arXiv:1709.01507"
    )
)
