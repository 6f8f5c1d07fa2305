"""Squeeze-and-Excitation channel attention, the AA paper's comparison baseline.

Hu et al., "Squeeze-and-Excitation Networks", arXiv 1709.01507. Layout and rounding follow timm's
``SEModule`` (``fc1``/``fc2`` 1x1 convs with bias), so an SE-ResNet-50 built with ``reduction=16``
has timm's ``seresnet50`` parameter count (28,088,024) and loads its state dicts (a block's ``post_attention`` takes
timm's ``se`` keys: ``aaconv.models.backbone.accept_se_keys``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .parts import AttentionPart, Drawing, PartOptions, PostBuilder, register_part


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


def is_channel_gate(module: nn.Module) -> bool:
    """The duck-typed rule for a channel gate SE did not build: 1x1-conv children ``fc1`` (C -> C/r) and ``fc2``
    (C/r -> C), the squeeze-excite layout of ``SqueezeExcite`` and timm's ``SEModule``."""
    fc1, fc2 = getattr(module, "fc1", None), getattr(module, "fc2", None)
    return (
        isinstance(fc1, nn.Conv2d)
        and isinstance(fc2, nn.Conv2d)
        and fc1.kernel_size == fc2.kernel_size == (1, 1)
        and fc2.out_channels == fc1.in_channels
    )


def gate_factor(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The per-channel factor g of y = x * g: (B, C, H, W) input and output -> (B, C), the least-squares
    sum_hw(x y) / sum_hw(x^2), so it does not depend on how the gate computes it; NaN for a channel whose input is
    all zero (a zero-initialised residual BN before training: its factor has no effect)."""
    x, y = x.double(), y.double()
    energy = (x * x).sum((2, 3))
    return ((x * y).sum((2, 3)) / energy.where(energy > 0, torch.nan)).float()


def read_gate(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """A channel gate's numbers: {"factor": (B, C)}, read from its forward's input and output (``gate_factor``)."""
    return {"factor": gate_factor(x, y)}


register_part(
    AttentionPart(
        name="se",
        slot="post",
        options=SEOptions,
        build=build_se,
        modules=(SqueezeExcite,),
        paper="arXiv:1709.01507",
        drawing=Drawing(kind="gate", read=read_gate, also_finds=is_channel_gate, together=True),
    )
)
