"""AW-convolution: attention shaped like the conv kernel, modulating it per sample.

Zhu, Hofstee, Lee, Al-Ars, "An Attention Module for Convolutional Neural Networks", ICANN 2021,
arXiv 2108.08205::

    A0 = AvgPool(X)                        (B, C_in, k, k)   pooled to the kernel's spatial size
    A  = gate(fc2(relu(fc1(A0))))          (B, M, C_in, k, k) fc1: C_in -> C_in/r, fc2: C_in/r -> M*C_in (1x1)
    W' = K * A + K                         per-sample kernel; filter group m (C_out/M filters) uses map m
    O  = conv(X, W')

Three exact formulations of the per-sample conv:

- ``"grouped"``: W' materialised as (B*C_out, C_in/groups, k, k) and applied by one grouped conv over
  the batch folded into channels (groups = B * groups). Supports ``groups > 1``.
- ``"per_sample"``: the same kernels built and applied one sample at a time (B ordinary convs) with a hand-written
  backward, so each sample's W', its gradient and the products that reduce it to K and A stay in the CPU cache
  instead of streaming B copies of the layer's weights through memory, and no per-sample kernel is kept for the
  backward. ``groups == 1``.
- ``"unfold"``: A only varies per (input channel, kernel offset), so scale the unfolded input patches instead,
  (M, C_in*k*k, B*L), and apply the shared kernel of each map with one GEMM over the whole batch; its
  backward needs only these per-offset products, never per-sample kernels or their gradients. ``groups == 1``.

``impl="auto"`` picks per layer and input size (``resolve_impl``), by the per-stage measurements of
``scripts/bench_layers.py --aw-stages`` on the CPU (docs/performance.md): ``"unfold"`` where C_out > M * L, the
per-sample kernels outweighing the scaled patches (small maps: ResNet-50's layer4); ``"per_sample"`` where the
conv has at most ``PER_SAMPLE_MAX_POSITIONS`` output positions (layer3: 10x10 at 160 px, 14x14 at 224 px);
``"grouped"`` elsewhere (large maps) and for ``groups > 1``. The GPU choice is unmeasured.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .parts import AttentionPart, ConvBuilder, ConvPartOptions, ConvSite, Drawing, register_part

Pair = tuple[int, int]  # a conv's (height, width) stride or padding

AW_IMPLS = ("auto", "grouped", "per_sample", "unfold")
# largest output map (positions) on which "auto" runs the per-sample convs rather than the grouped conv: they won
# at 10x10 (256 channels), the grouped conv from 20x20 (128 channels), 14x14 a tie; docs/performance.md
PER_SAMPLE_MAX_POSITIONS = 256
AW_GATES = ("sigmoid", "none")


def _map_index(out_channels: int, in_channels: int, groups: int, num_maps: int) -> torch.Tensor:
    """(C_out, C_in/groups) indices into the flattened (M * C_in) maps: filter o, local input channel c
    reads map o // (C_out/M) at input channel (o // (C_out/groups)) * (C_in/groups) + c."""
    out_idx = torch.arange(out_channels)[:, None]
    local = torch.arange(in_channels // groups)[None, :]
    channel = out_idx // (out_channels // groups) * (in_channels // groups) + local
    return out_idx // (out_channels // num_maps) * in_channels + channel


class _PerSampleConv(torch.autograd.Function):
    """conv(x_b, K * scale_b) one sample at a time, with a hand-written backward that never holds more than one
    sample's kernels: it rebuilds W'_b, takes the conv's input and weight gradients for that sample, and reduces
    the weight gradient G_b at once, dK += G_b * scale_b and dscale_b = sum over each map's filters of G_b * K.

    x: (B, C_in, H, W); kernel: (C_out, C_in, k, k); scale: (B, M, 1, C_in, k, k) -> (B, C_out, H_out, W_out).
    """

    @staticmethod
    def forward(ctx, x, kernel, scale, stride: tuple[int, int], padding: tuple[int, int]):
        maps = kernel.view(scale.shape[1], -1, *kernel.shape[1:])  # (M, C_out/M, C_in, k, k)
        outs = [
            F.conv2d(sample, (maps * s).reshape(kernel.shape), stride=stride, padding=padding)
            for sample, s in zip(x.split(1), scale, strict=True)
        ]
        out = torch.cat(outs)
        ctx.save_for_backward(x, kernel, scale)
        ctx.stride, ctx.padding, ctx.dtype = stride, padding, out.dtype  # the dtype the convs ran in (autocast)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, kernel, scale = ctx.saved_tensors
        maps = kernel.view(scale.shape[1], -1, *kernel.shape[1:])
        grad_x, grad_maps, grad_scale = torch.empty_like(x), torch.zeros_like(maps), scale.new_empty(scale.shape)
        for b, s in enumerate(scale):
            weight = (maps * s).reshape(kernel.shape).to(ctx.dtype)
            grad_xb, grad_w, _ = torch.ops.aten.convolution_backward(
                grad_out[b : b + 1].to(ctx.dtype),
                x[b : b + 1].to(ctx.dtype),
                weight,
                None,
                list(ctx.stride),
                list(ctx.padding),
                [1, 1],
                False,
                [0, 0],
                1,
                [True, True, False],
            )
            grad_x[b : b + 1] = grad_xb
            grad_w = grad_w.to(maps.dtype).reshape(maps.shape)
            grad_maps.addcmul_(grad_w, s)
            grad_scale[b] = (grad_w * maps).sum(1, keepdim=True)
        return grad_x, grad_maps.reshape(kernel.shape), grad_scale, None, None


class AWConv2d(nn.Module):
    """k x k conv whose kernel is modulated per sample by a kernel-shaped attention map (AW-conv).

    Shapes: (B, C_in, H, W) -> (B, C_out, H_out, W_out), padding ``kernel_size // 2``, no bias
    (the same output size as the ``nn.Conv2d`` it replaces).

    Args:
        in_channels, out_channels, kernel_size, stride, groups: as ``nn.Conv2d``. The kernel K lives in
            ``self.conv`` (an ``nn.Conv2d``) so a backbone's conv init and pretrained conv weights apply.
        reduction: r, the generator's hidden width is ``max(1, in_channels // r)``. Default 16 (as SE).
        num_maps: M, the number of attention maps; must divide ``out_channels``. Default 4.
        gate: ``"sigmoid"`` (A in (0, 1), so W' = K * (1 + A) scales each weight by 1..2) or ``"none"``
            (A unbounded; zero generator output gives exactly K). Default ``"sigmoid"``.
        impl: ``"grouped"``, ``"per_sample"``, ``"unfold"`` or ``"auto"`` (per layer and input size, see the
            module docstring).
    """

    __jit_unused_properties__ = ["impl"]  # TorchScript runs the grouped formulation, whatever the impl

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        reduction: int = 16,
        num_maps: int = 4,
        gate: str = "sigmoid",
        groups: int = 1,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if out_channels % num_maps:
            raise ValueError(f"AWConv2d: num_maps={num_maps} must divide out_channels={out_channels}")
        if gate not in AW_GATES:
            raise ValueError(f"AWConv2d: gate must be one of {AW_GATES}, got {gate!r}")
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False
        )
        hidden = max(1, in_channels // reduction)
        self.fc1 = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, num_maps * in_channels, kernel_size=1)
        self.num_maps = num_maps
        self.gate = gate
        self.impl = impl
        self.register_buffer("map_index", _map_index(out_channels, in_channels, groups, num_maps), persistent=False)

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in AW_IMPLS:
            raise ValueError(f"AWConv2d: impl must be one of {AW_IMPLS}, got {value!r}")
        if value in ("unfold", "per_sample") and self.conv.groups != 1:
            raise ValueError(f"AWConv2d: impl={value!r} supports groups=1 only; use impl='grouped'")
        self._impl = value

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(H_out, W_out) for an input of spatial ``size``."""
        return _output_size(size, self.conv.kernel_size, self.conv.stride, self.conv.padding)

    def resolve_impl(self, size: tuple[int, int]) -> str:
        """The formulation for an input of spatial ``size`` (``resolve_impl`` below)."""
        conv = self.conv
        return resolve_impl(self.impl, conv.out_channels, conv.groups, self.num_maps, self.output_size(size))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """A: (B, C_in, H, W) -> (B, M * C_in, k, k)."""
        pooled = F.adaptive_avg_pool2d(x, self.conv.kernel_size)
        logits = self.fc2(self.act(self.fc1(pooled)))
        return logits.sigmoid() if self.gate == "sigmoid" else logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.attention(x)
        conv = self.conv
        if torch.jit.is_scripting():  # TorchScript compiles the grouped formulation, the same code as eager's
            return grouped_conv(
                x, attn, conv.weight, self.map_index, self.num_maps, conv.stride, conv.padding, conv.groups
            )
        return modulated_conv(
            x, attn, conv.weight, self.map_index, self.num_maps, conv.stride, conv.padding, conv.groups, self.impl
        )


def _output_size(
    size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[int, int]:
    return tuple((n + 2 * p - k) // s + 1 for n, p, k, s in zip(size, padding, kernel, stride, strict=True))


def resolve_impl(impl: str, out_channels: int, groups: int, num_maps: int, out_size: tuple[int, int]) -> str:
    """The formulation for an output map of ``out_size``: ``impl``, or for ``"auto"`` (module docstring)
    ``"unfold"`` when the per-sample kernels (C_out * C_in*k*k per sample) outweigh the scaled patches
    (M * C_in*k*k * L per sample, L the output positions), i.e. C_out > M * L; else ``"per_sample"`` up to
    ``PER_SAMPLE_MAX_POSITIONS`` output positions; else, and for ``groups > 1``, ``"grouped"``."""
    if impl != "auto":
        return impl
    positions = out_size[0] * out_size[1]
    if groups > 1:  # unfold and per_sample take groups=1 only
        return "grouped"
    if out_channels > num_maps * positions:
        return "unfold"
    return "per_sample" if positions <= PER_SAMPLE_MAX_POSITIONS else "grouped"


@torch.fx.wrap
def modulated_conv(
    x: Tensor,
    attn: Tensor,
    kernel: Tensor,
    map_index: Tensor,
    num_maps: int,
    stride: Pair,
    padding: Pair,
    groups: int,
    impl: str,
) -> Tensor:
    """O = conv(x, W') with W' = K (1 + A): x (B, C_in, H, W), attn (B, M * C_in, k, k), kernel K
    (C_out, C_in/groups, k, k) -> (B, C_out, H_out, W_out), by ``impl`` resolved for x's size. A module-level
    function of tensors so that torch.fx.symbolic_trace records it as one call (torch.fx.wrap), which then picks
    the formulation on the real shapes."""
    out_size = _output_size(x.shape[-2:], kernel.shape[-2:], stride, padding)
    impl = resolve_impl(impl, kernel.shape[0], groups, num_maps, out_size)
    if impl == "unfold":
        return _conv_unfold(x, attn, kernel, num_maps, stride, padding, out_size)
    if impl == "per_sample":
        scale = (1 + attn).reshape(len(attn), num_maps, 1, *kernel.shape[1:])  # (B, M, 1, C_in, k, k)
        return _PerSampleConv.apply(x, kernel, scale, stride, padding)
    return grouped_conv(x, attn, kernel, map_index, num_maps, stride, padding, groups)


def grouped_conv(
    x: Tensor, attn: Tensor, kernel: Tensor, map_index: Tensor, num_maps: int, stride: Pair, padding: Pair, groups: int
) -> Tensor:
    """The grouped formulation: every sample's kernel W' (``modulated_kernels``) in one grouped conv over the batch.
    Written in the subset of Python TorchScript compiles (the layer's scripted forward)."""
    batch, height, width = x.shape[0], x.shape[2], x.shape[3]
    weight = modulated_kernels(kernel, attn, map_index, num_maps, groups).flatten(0, 1)
    out = F.conv2d(x.reshape(1, -1, height, width), weight, None, stride, padding, [1, 1], batch * groups)
    return out.view(batch, -1, out.shape[2], out.shape[3])


def modulated_kernels(
    kernel: torch.Tensor, attn: torch.Tensor, map_index: torch.Tensor, num_maps: int, groups: int
) -> torch.Tensor:
    """W' = K (1 + A): attn (B, M * C_in, k, k) -> (B, C_out, C_in/groups, k, k)."""
    if groups > 1:
        return kernel * (1 + attn[:, map_index])
    # broadcast each map over its C_out / M filters: no (B, C_out, C_in, k, k) gather of A
    batch, in_per_group, kh, kw = attn.shape[0], kernel.shape[1], kernel.shape[2], kernel.shape[3]
    scale = (1 + attn).view(batch, num_maps, 1, in_per_group, kh, kw)
    return (kernel.view(num_maps, -1, in_per_group, kh, kw) * scale).view(batch, kernel.shape[0], in_per_group, kh, kw)


def _conv_unfold(
    x: torch.Tensor,
    attn: torch.Tensor,
    kernel: torch.Tensor,
    num_maps: int,
    stride: tuple[int, int],
    padding: tuple[int, int],
    out_size: tuple[int, int],
) -> torch.Tensor:
    batch = x.shape[0]
    cols = F.unfold(x, kernel.shape[-2:], padding=padding, stride=stride)  # (B, C_in*k*k, L): (c, i, j)
    scale = (1 + attn).reshape(batch, num_maps, -1).permute(1, 2, 0).unsqueeze(-1)  # (M, C_in*k*k, B, 1)
    scaled = (cols.transpose(0, 1) * scale).flatten(2)  # (M, C_in*k*k, B*L)
    kernel = kernel.reshape(num_maps, -1, cols.shape[1])  # (M, C_out/M, C_in*k*k)
    out = torch.bmm(kernel, scaled).unflatten(2, (batch, -1))  # (M, C_out/M, B, L): one GEMM per map
    return out.permute(2, 0, 1, 3).reshape(batch, -1, *out_size)


@dataclass(frozen=True)
class AWOptions(ConvPartOptions):
    """``attention.aw``: ``AWConv2d``'s options (its docstring); the AW paper leaves r, M and the gate open."""

    reduction: int = 16
    num_maps: int = 4
    gate: str = "sigmoid"
    impl: str = "auto"

    def check(self) -> dict[str, str]:
        problems = super().check()
        for key in ("reduction", "num_maps"):
            if getattr(self, key) <= 0:
                problems[key] = "a positive integer"
        if self.gate not in AW_GATES:
            problems["gate"] = f"one of {', '.join(AW_GATES)}"
        if self.impl not in AW_IMPLS:
            problems["impl"] = f"one of {', '.join(AW_IMPLS)}"
        return problems


def _aw_conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1, *, options: AWOptions
) -> AWConv2d:
    o = options
    return AWConv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride,
        reduction=o.reduction,
        num_maps=o.num_maps,
        gate=o.gate,
        groups=groups,
        impl=o.impl,
    )


def build_aw(options: AWOptions, site: ConvSite, base: ConvBuilder) -> ConvBuilder | None:
    """The AW-conv builder at ``site`` (it replaces the plain conv ``base``), or None where AW does not go."""
    return partial(_aw_conv, options=options) if site.role in options.replaces else None


def read_aw(layer: AWConv2d, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """An AW layer's kernel attention for its input x (B, C_in, H, W): {"attention": A (B, M, C_in, k, k)}, from the
    layer's own ``attention`` (W' = K * A + K)."""
    attention = layer.attention(x.to(layer.fc1.weight.dtype))
    return {"attention": attention.unflatten(1, (layer.num_maps, -1))}


register_part(
    AttentionPart(
        name="aw",
        slot="conv",
        options=AWOptions,
        build=build_aw,
        modules=(AWConv2d,),
        paper="arXiv:2108.08205",
        drawing=Drawing(kind="aw", read=read_aw),
    )
)
