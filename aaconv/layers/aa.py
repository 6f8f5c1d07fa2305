"""Attention-augmented convolution (AA-conv).

Bello, Zoph, Vaswani, Shlens, Le, "Attention Augmented Convolutional Networks", ICCV 2019,
arXiv 1904.09925::

    AAConv(X) = concat_channels(Conv_kxk(X) -> C_out - dv,  Proj_1x1(MHA(QKV_1x1(X))) -> dv)

The multi-head relative self-attention lives in ``relative_attention.py``.

Stride (the paper has none): ``stride_mode="avgpool"`` (default) average-pools the input with a
(2*(s//2)+1)-wide window, stride s, padding s//2 (3x3/2 for s=2, padding excluded from the mean) before
the qkv projection, so every input pixel reaches the attention; ``stride_mode="qkv"`` strides the 1x1 qkv
conv instead (cheaper, drops 3/4 of the pixels at s=2). Both give the conv branch's output size
floor((H-1)/s)+1 for odd kernels.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .relative_attention import RelativeAttention2d

STRIDE_MODES = ("avgpool", "qkv")


def plain_conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
) -> nn.Conv2d:
    """torchvision-style ``conv3x3``: padding ``kernel_size // 2``, no bias."""
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False
    )


class AAConv2d(nn.Module):
    """k x k conv with ``out_channels - dv`` filters concatenated with ``dv`` channels of 2-D self-attention.

    Shapes: (B, C_in, H, W) -> (B, C_out, H_out, W_out) with H_out = floor((H-1)/stride)+1 (same as the
    ``nn.Conv2d(padding=k//2)`` it replaces). Any H, W up to ``max_size``, varying between calls.

    Args:
        in_channels, out_channels, kernel_size, stride, groups: as ``nn.Conv2d`` (padding ``k//2``, no
            bias); ``groups`` applies to the conv branch and needs ``in_channels`` and
            ``out_channels - dv`` divisible by it (a depthwise conv cannot be augmented).
        dk, dv: absolute key and value depths, multiples of ``num_heads``; ``dv == out_channels`` is the
            fully attentional layer (no conv branch).
        num_heads: N_h (paper: 8).
        relative: learned relative position logits (paper) or, ``False``, no position encoding.
        impl: ``"reference"`` (paper formulation, (B, N_h, HW, HW) logits), ``"fused"`` (exact rewrite
            on ``scaled_dot_product_attention``, no HW x HW tensor) or ``"auto"`` (= fused). Both use the
            same parameters; switch with ``layer.impl = ...``.
        stride_mode: how the attention branch downsamples when ``stride > 1`` (module docstring).
        max_size: largest H, W the relative tables cover; default 256 covers 224 px ImageNet stages and
            detection maps up to 256 (800x1333 input: 100x167 at stride 8). Larger -> ValueError.
            Costs 2 * (2*max_size - 1) * dk_h parameters per layer.
        query_chunk: fused path only, attend in chunks of this many query positions.
        conv_builder: builds the conv branch, ``(in, out, k, stride, groups) -> nn.Module``; default a plain
            ``nn.Conv2d`` (``aw+aa`` passes an ``AWConv2d`` builder).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        dk: int,
        dv: int,
        num_heads: int = 8,
        relative: bool = True,
        impl: str = "auto",
        stride_mode: str = "avgpool",
        max_size: int = 256,
        query_chunk: int | None = None,
        groups: int = 1,
        conv_builder: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        conv_channels = out_channels - dv
        if not 0 < dv <= out_channels:
            raise ValueError(f"AAConv2d: need 0 < dv <= out_channels, got dv={dv}, out_channels={out_channels}")
        if kernel_size % 2 == 0:
            raise ValueError(f"AAConv2d: kernel_size must be odd, got {kernel_size}")
        if stride_mode not in STRIDE_MODES:
            raise ValueError(f"AAConv2d: stride_mode must be one of {STRIDE_MODES}, got {stride_mode!r}")
        if conv_channels and (in_channels % groups or conv_channels % groups):
            raise ValueError(
                f"AAConv2d cannot build a conv branch with groups={groups}: in_channels={in_channels} and "
                f"out_channels - dv = {conv_channels} must both be divisible by groups "
                "(depthwise convs cannot be attention-augmented; augment a groups=1 conv)"
            )
        build_conv = conv_builder or plain_conv
        self.conv = build_conv(in_channels, conv_channels, kernel_size, stride, groups) if conv_channels else None
        pool_stride = stride > 1 and stride_mode == "avgpool"
        self.pool = (
            nn.AvgPool2d(2 * (stride // 2) + 1, stride, stride // 2, count_include_pad=False)
            if pool_stride
            else nn.Identity()
        )
        qkv_stride = 1 if pool_stride else stride
        self.qkv = nn.Conv2d(in_channels, 2 * dk + dv, kernel_size=1, stride=qkv_stride)
        self.attention = RelativeAttention2d(
            dk, dv, num_heads, relative=relative, max_size=max_size, impl=impl, query_chunk=query_chunk
        )
        self.proj = nn.Conv2d(dv, dv, kernel_size=1)

    @property
    def impl(self) -> str:
        return self.attention.impl

    @impl.setter
    def impl(self, value: str) -> None:
        self.attention.impl = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.proj(self.attention(self.qkv(self.pool(x))))
        if self.conv is None:
            return attn
        return torch.cat([self.conv(x), attn], dim=1)
