"""Convolutional Block Attention Module: a channel gate, then a spatial gate, on a block's output.

Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018, arXiv 1807.06521::

    M_c(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))          (B, C, 1, 1), one MLP C -> C/r -> C
    F'     = M_c(F) * F
    M_s(F') = sigmoid(BN(conv_7x7([mean_c(F'); max_c(F')])))     (B, 1, H, W)
    F''    = M_s(F') * F'

Placed like SE: after a block's last BN, before the residual addition (the paper's ResNet integration). The
MLP's hidden width is C / r rounded to the nearest integer (``divisor=1``, the paper's C/r); the 7x7 conv has no
bias and is followed by a BatchNorm, as in the authors' released code. The AW paper presents AW as complementary
to activation attention of this kind (Zhu et al. 2021), hence ``aw+cbam``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .parts import AttentionPart, Drawing, PostBuilder, register_part
from .se import ChannelMLPOptions, reduced_channels


class CBAM(nn.Module):
    """F -> M_s(F') * F' with F' = M_c(F) * F. Shapes: (B, C, H, W) -> (B, C, H, W).

    Args:
        channels: C.
        reduction: r; the MLP's hidden width is ``reduced_channels(C, r, divisor)``.
        divisor: the hidden width is a multiple of this (1: the paper's C / r).
        spatial_kernel: the spatial gate's conv size (the paper: 7).
        rd_channels: explicit hidden width, overriding ``reduction`` / ``divisor``.
    """

    def __init__(
        self,
        channels: int,
        reduction: float = 16,
        *,
        divisor: int = 1,
        spatial_kernel: int = 7,
        rd_channels: int | None = None,
    ) -> None:
        super().__init__()
        hidden = rd_channels or reduced_channels(channels, reduction, divisor)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)
        self.spatial_conv = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1)

    def _mlp(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(pooled)))

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """M_c: (B, C, H, W) -> (B, C, 1, 1) in (0, 1); one MLP for both poolings."""
        return (self._mlp(x.mean((2, 3), keepdim=True)) + self._mlp(x.amax((2, 3), keepdim=True))).sigmoid()

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        """M_s: (B, C, H, W) -> (B, 1, H, W) in (0, 1)."""
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return self.spatial_bn(self.spatial_conv(pooled)).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_gate(x)
        return x * self.spatial_gate(x)


@dataclass(frozen=True)
class CBAMOptions(ChannelMLPOptions):
    """``attention.cbam``: ``CBAM``'s options (its docstring)."""

    divisor: int = 1
    spatial_kernel: int = 7

    def check(self) -> dict[str, str]:
        problems = super().check()
        if self.spatial_kernel <= 0 or self.spatial_kernel % 2 == 0:
            problems["spatial_kernel"] = "an odd positive integer"
        return problems


def build_cbam(options: CBAMOptions) -> PostBuilder:
    """CBAM after a block; a backbone's ``hidden`` width is used unless ``rd_channels`` is set."""

    def post(channels: int, hidden: int | None = None) -> CBAM:
        o = options
        return CBAM(
            channels,
            o.reduction,
            divisor=o.divisor,
            spatial_kernel=o.spatial_kernel,
            rd_channels=o.rd_channels or hidden,
        )

    return post


def read_cbam(module: CBAM, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """A CBAM module's gates for its input x (B, C, H, W), through its own methods, as its forward applies them:
    {"channel": M_c (B, C), "spatial": M_s (B, H, W)} with M_c = ``channel_gate(x)`` and M_s =
    ``spatial_gate(x * M_c)``, both in (0, 1); M_s has the size of the module's input and output."""
    x = x.to(module.fc1.weight.dtype)
    channel = module.channel_gate(x)
    spatial = module.spatial_gate(x * channel)
    return {"channel": channel.flatten(1), "spatial": spatial[:, 0]}


register_part(
    AttentionPart(
        name="cbam",
        slot="post",
        options=CBAMOptions,
        build=build_cbam,
        modules=(CBAM,),
        paper="arXiv:1807.06521",
        drawing=Drawing(kind="cbam", read=read_cbam, together=True),
    )
)
