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

Memory downsampling (``memory_pool=True``; the paper's largest augmented stage, 28x28 in ResNets): the
attention branch attends over its input average-pooled 3x3 / stride 2 (after any stride pooling) and its
output is upsampled back to the conv branch's size bilinearly; the conv branch is untouched. It quarters
the attended positions, so the (HW)^2 logits shrink 16x.

Position encodings (the paper's ablation compares none, 2-D sine, CoordConv and relative): ``relative``
learned relative logits (default); ``sine=True`` adds a fixed 2-D sinusoidal embedding to the attention
branch's input (Image Transformer style); ``coordconv=True`` concatenates two coordinate channels (y, x
in [-1, 1]) to it (Liu et al. 2018, arXiv 1807.03247), so the qkv conv takes 2 more input channels; all
off: none. They combine.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .parts import STAGE_IDS, AttentionPart, ConvBuilder, ConvPartOptions, ConvSite, Drawing, plain_conv, register_part
from .relative_attention import RelativeAttention2d

STRIDE_MODES = ("avgpool", "qkv")


def _sine_encoding(length: int, freqs: torch.Tensor, half: int) -> torch.Tensor:
    """(half, length): [sin(p w_0), cos(p w_0), sin(p w_1), ...] at positions p, zero rows up to ``half``."""
    angles = torch.arange(length, device=freqs.device, dtype=torch.float64)[None, :] * freqs[:, None]
    pairs = torch.stack([angles.sin(), angles.cos()], dim=1).flatten(0, 1)
    return F.pad(pairs, [0, 0, 0, half - pairs.shape[0]])


def sine_embedding_2d(
    channels: int,
    height: int,
    width: int,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(channels, H, W) fixed embedding: the first half of the channels encodes y, the second half x,
    each as [sin(p w_0), cos(p w_0), sin(p w_1), ...] with w_i = 10000^(-2i / half); odd leftovers are 0."""
    half = channels // 2
    steps = torch.arange(0, half // 2, device=device, dtype=torch.float64)
    freqs = torch.pow(10000.0, -steps * 2 / max(half, 1))
    out = torch.zeros(channels, height, width, device=device, dtype=torch.float64)
    out[:half] = _sine_encoding(height, freqs, half)[:, :, None]
    out[half : 2 * half] = _sine_encoding(width, freqs, half)[:, None, :]
    return out.to(dtype)


def coordinate_channels(
    batch: int,
    height: int,
    width: int,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(batch, 2, H, W) CoordConv channels: channel 0 is y, channel 1 is x, each ``linspace(-1, 1)`` over its side."""
    y = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    x = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid([y, x], indexing="ij")).expand(batch, -1, -1, -1)


# Shape-dependent steps of AAConv2d.forward as functions of tensors: torch.fx.wrap makes torch.fx.symbolic_trace
# record each as one call, which then runs eagerly on the real shapes. Like the whole layer, they are written in
# the subset of Python TorchScript compiles.
@torch.fx.wrap
def add_sine_embedding(inputs: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) + ``sine_embedding_2d(C, H, W)``."""
    channels, height, width = inputs.shape[1], inputs.shape[2], inputs.shape[3]
    return inputs + sine_embedding_2d(channels, height, width, inputs.device, inputs.dtype)


@torch.fx.wrap
def append_coordinates(inputs: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C + 2, H, W): ``coordinate_channels`` concatenated."""
    batch, height, width = inputs.shape[0], inputs.shape[2], inputs.shape[3]
    coords = coordinate_channels(batch, height, width, inputs.device, inputs.dtype)
    return torch.cat([inputs, coords], dim=1)


@torch.fx.wrap
def upsample_to_stride(attn: torch.Tensor, x: torch.Tensor, stride: int) -> torch.Tensor:
    """``attn`` upsampled bilinearly to the size a stride-``stride`` conv gives on ``x``: floor((H-1)/s)+1."""
    size = [(x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1]
    return F.interpolate(attn, size=size, mode="bilinear", align_corners=False)


def _average_pool(stride: int) -> nn.AvgPool2d:
    """(2*(s//2)+1)-wide window, stride s, padding s//2 excluded from the mean: 3x3/2 for s = 2."""
    return nn.AvgPool2d(2 * (stride // 2) + 1, stride, stride // 2, count_include_pad=False)


class AAConv2d(nn.Module):
    """k x k conv with ``out_channels - dv`` filters concatenated with ``dv`` channels of 2-D self-attention.

    Shapes: (B, C_in, H, W) -> (B, C_out, H_out, W_out) with H_out = floor((H-1)/stride)+1 (same as the
    ``nn.Conv2d(padding=k//2)`` it replaces). Any H, W, varying between calls (relative offsets beyond
    ``max_size`` clipped: ``relative_tables.relative_table``).

    Args:
        in_channels, out_channels, kernel_size, stride, groups: as ``nn.Conv2d`` (padding ``k//2``, no
            bias); ``groups`` applies to the conv branch and needs ``in_channels`` and
            ``out_channels - dv`` divisible by it (a depthwise conv cannot be augmented).
        dk, dv: absolute key and value depths, multiples of ``num_heads``; ``dv == out_channels`` is the
            fully attentional layer (no conv branch).
        num_heads: N_h (paper: 8 in ResNets, 4 in MnasNet).
        relative: learned relative position logits (paper); all encodings off: none.
        sine: add ``sine_embedding_2d`` to the (pooled) input of the qkv projection.
        coordconv: concatenate ``coordinate_channels`` to the (pooled) input of the qkv projection.
        memory_pool: attend over a 3x3 / stride-2 average-pooled map and upsample the attention output
            bilinearly (module docstring); ``max_size`` then applies to the pooled map.
        impl: ``"reference"`` (paper formulation, (B, N_h, HW, HW) logits), ``"chunked"`` (the same logits
            a chunk of queries at a time, recomputed in the backward), ``"fused"`` (exact rewrite on SDPA, no
            HW x HW tensor), ``"flex"`` (flex_attention) or ``"auto"`` (``auto_impl``). All use the same
            parameters; switch with ``layer.impl = ...``.
        stride_mode: how the attention branch downsamples when ``stride > 1`` (module docstring).
        max_size: largest H, W whose relative offsets the tables learn; default 256 covers 224 px ImageNet
            stages and detection maps up to 256 (800x1333 input: 100x167 at stride 8). A larger map clips its
            longer offsets to the outermost rows (``relative_tables.relative_table``, Shaw et al. 2018).
            Costs 2 * (2*max_size - 1) * dk_h parameters per layer.
        query_chunk: chunked and fused paths, attend in chunks of this many query positions.
        conv_builder: builds the conv branch, ``(in, out, k, stride, groups) -> nn.Module``; default a plain
            ``nn.Conv2d`` (``aw+aa`` passes an ``AWConv2d`` builder).
    """

    __jit_unused_properties__ = ["impl"]  # TorchScript runs the reference formulation, whatever the impl

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        dk: int,
        dv: int,
        num_heads: int,
        relative: bool = True,
        sine: bool = False,
        coordconv: bool = False,
        memory_pool: bool = False,
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
        self.stride = stride
        pool_stride = stride > 1 and stride_mode == "avgpool"
        pools = [_average_pool(stride)] if pool_stride else []
        pools += [_average_pool(2)] if memory_pool else []
        self.pool = nn.Sequential(*pools) if pools else nn.Identity()
        qkv_stride = 1 if pool_stride else stride
        self.qkv = nn.Conv2d(in_channels + 2 * coordconv, 2 * dk + dv, kernel_size=1, stride=qkv_stride)
        self.attention = RelativeAttention2d(
            dk, dv, num_heads, relative=relative, max_size=max_size, impl=impl, query_chunk=query_chunk
        )
        self.proj = nn.Conv2d(dv, dv, kernel_size=1)
        self.sine = sine
        self.coordconv = coordconv
        self.memory_pool = memory_pool

    @property
    def impl(self) -> str:
        return self.attention.impl

    @impl.setter
    def impl(self, value: str) -> None:
        self.attention.impl = value

    def attention_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """The attention branch's qkv projection of the layer's input x: (B, 2*dk + dv, H', W') of the pooled input,
        with the position inputs the layer adds."""
        inputs = self.pool(x)
        if self.sine:
            inputs = add_sine_embedding(inputs)
        if self.coordconv:
            inputs = append_coordinates(inputs)
        return self.qkv(inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.proj(self.attention(self.attention_qkv(x)))
        if self.memory_pool:  # the 1x1 proj commutes with bilinear upsampling (weights sum to 1): upsample last
            attn = upsample_to_stride(attn, x, self.stride)
        conv = self.conv
        if conv is None:
            return attn
        return torch.cat([conv(x), attn], dim=1)


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


@dataclass(frozen=True)
class AAOptions(ConvPartOptions):
    """``attention.aa``: the depth rule, where AA goes, and ``AAConv2d``'s layer options.

    The depth rule's defaults are the AA paper's ResNet setting (Bello et al. 2019): "kappa = 2 upsilon = 0.2"
    (kappa 0.2, upsilon 0.1), N_h = 8, and at least 20 key dims per head (stated for its CIFAR networks; its
    ImageNet parameter counts need it too: docs/models.md). A layer option left None takes ``AAConv2d``'s default.

    Attributes:
        memory_pool_stages: stages whose AA convs attend over a 3x3/2-pooled map, upsampled back (the paper's
            ResNets: layer2, 28x28 at 224 px).
        basic_block_convs: which of a block's spatial convs (``ConvSite.index``, from 1) AA takes; None: all.
    """

    kappa: float = 0.2
    upsilon: float = 0.1
    num_heads: int = 8
    min_dk_per_head: int = 20
    memory_pool_stages: tuple[int, ...] = dataclasses.field(default=(), metadata=STAGE_IDS)
    basic_block_convs: tuple[int, ...] | None = None
    relative: bool | None = None
    sine: bool | None = None
    coordconv: bool | None = None
    impl: str | None = None
    stride_mode: str | None = None
    max_size: int | None = None
    query_chunk: int | None = None

    def check(self) -> dict[str, str]:
        problems = super().check()
        if self.kappa <= 0:
            problems["kappa"] = "a number > 0"
        if self.upsilon <= 0:
            problems["upsilon"] = "a number > 0"
        if self.num_heads <= 0:
            problems["num_heads"] = "a positive integer"
        if self.min_dk_per_head < 0:
            problems["min_dk_per_head"] = "an integer >= 0"
        if self.basic_block_convs is not None and (not self.basic_block_convs or min(self.basic_block_convs) < 1):
            problems["basic_block_convs"] = "a non-empty list of conv numbers from 1, e.g. [1] or [1, 2]"
        if self.stride_mode is not None and self.stride_mode not in STRIDE_MODES:
            problems["stride_mode"] = f"one of {', '.join(STRIDE_MODES)}"
        for key in ("max_size", "query_chunk"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                problems[key] = "a positive integer, or null"
        return problems


_LAYER_OPTIONS = ("relative", "sine", "coordconv", "impl", "stride_mode", "max_size", "query_chunk")


def _aa_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    *,
    options: AAOptions,
    branch: ConvBuilder,
    **layer: object,
) -> AAConv2d:
    o = options
    dk, dv = attention_depths(out_channels, o.kappa, o.upsilon, o.num_heads, o.min_dk_per_head)
    return AAConv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride,
        dk=dk,
        dv=dv,
        num_heads=o.num_heads,
        groups=groups,
        conv_builder=branch,
        **layer,
    )


def build_aa(options: AAOptions, site: ConvSite, base: ConvBuilder) -> ConvBuilder | None:
    """The AA-conv builder at ``site`` (its conv branch built by ``base``), or None where AA does not go.
    Relative tables cover ``site.size`` (halved where the stage attends over a pooled map) unless
    ``max_size`` is set."""
    if site.role not in options.replaces:
        return None
    if options.basic_block_convs is not None and site.index not in options.basic_block_convs:
        return None
    memory_pool = site.stage in options.memory_pool_stages
    layer = {key: getattr(options, key) for key in _LAYER_OPTIONS if getattr(options, key) is not None}
    if site.size is not None:
        layer.setdefault("max_size", math.ceil(site.size / 2) if memory_pool else site.size)
    return partial(_aa_conv, options=options, branch=base, memory_pool=memory_pool, **layer)


def read_aa(layer: AAConv2d, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """An AA layer's attention for its input x: {"attention": (B, N_h, H', W', H', W')}, for the query at grid cell
    (row, col) its heads' softmax over the H' x W' key positions (each map sums to 1), from the layer's own core
    (``RelativeAttention2d.probabilities``), in float32 or wider."""
    qkv = layer.attention_qkv(x.to(layer.qkv.weight.dtype))
    grid = qkv.shape[-2:]
    return {"attention": layer.attention.probabilities(qkv).unflatten(-1, grid).unflatten(2, grid)}


register_part(
    AttentionPart(
        name="aa",
        slot="wrap",
        options=AAOptions,
        build=build_aa,
        modules=(AAConv2d,),
        paper="arXiv:1904.09925",
        drawing=Drawing(kind="aa", read=read_aa, per_query=True),
    )
)
