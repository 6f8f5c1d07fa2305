"""RetinaNet's P6 / P7 levels (torchvision's `LastLevelP6P7`) with convs that take a 1-pixel map without a stride.

P6 and P7 are 3x3 stride-2 convs (padding 1) over P5 and P6. On small inputs those maps shrink to one pixel
(P7's input is 1x1 for images up to 64 px a side, P6's up to 32 px), and there oneDNN's bfloat16
weight-gradient kernel, which torch uses for CPU convolutions, returns garbage: values of 1e13 to 1e37, inf or
NaN that change from run to run and with the thread count (measured with torch 2.14.1, oneDNN 3.12.0;
the forward pass and the input gradient are correct, float32 and float16 are correct, stride 1 is correct;
the reproducer is in docs/reliability.md). Along a dimension of size 1, a conv whose kernel is `2 * padding + 1`
gives one output whatever its stride, so dropping the stride there changes no value and routes around the
faulty kernel.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import LastLevelP6P7


class OnePixelSafeConv2d(nn.Conv2d):
    """nn.Conv2d that uses stride 1 along a spatial dimension of size 1 where the kernel is `2 * padding + 1`:
    the same (B, C_out, H_out, W_out) output, and correct bfloat16 weight gradients on the CPU (module docstring).
    Zero padding and dilation 1 only (P6 / P7's convs)."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        stride = tuple(
            1 if size == 1 and kernel == 2 * padding + 1 else step
            for size, step, kernel, padding in zip(
                input.shape[-2:], self.stride, self.kernel_size, self.padding, strict=True
            )
        )
        return F.conv2d(input, weight, bias, stride, self.padding, self.dilation, self.groups)


def one_pixel_safe(conv: nn.Conv2d) -> OnePixelSafeConv2d:
    """`conv`'s weights in a OnePixelSafeConv2d (built on the meta device: no random draw, so the caller's
    random stream, and with it every later initialisation, is that of torchvision's model)."""
    if conv.padding_mode != "zeros" or conv.dilation != (1, 1) or isinstance(conv.padding, str):
        raise ValueError(f"OnePixelSafeConv2d takes zero-padded, undilated convs with int padding, got {conv}")
    safe = OnePixelSafeConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        groups=conv.groups,
        bias=conv.bias is not None,
        device="meta",
    )
    safe.load_state_dict(conv.state_dict(), assign=True)
    return safe


class SafeLastLevelP6P7(LastLevelP6P7):
    """torchvision's `LastLevelP6P7` (same parameters, keys and initialisation) with OnePixelSafeConv2d convs."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels)
        self.p6 = one_pixel_safe(self.p6)
        self.p7 = one_pixel_safe(self.p7)
