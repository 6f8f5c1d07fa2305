"""The attention layers' TorchScript path: the same computation in the subset of Python torch.jit.script compiles.

The eager layers pick a kernel per device and input size (SDPA, flex_attention, grouped or unfolded AW convs)
with Python that TorchScript cannot compile. Under ``torch.jit.is_scripting()`` their forward calls these
functions instead, on the same parameters:

- ``relative_attention``: the AA paper's reference formulation (Bello et al. 2019, arXiv 1904.09925, section 3
  and the appendix's ``rel_to_abs``), with (B, N_h, HW, HW) logits and the eager paths' tables at any map size
  (``relative_tables.relative_table``);
- ``sine_embedding`` / ``coordinates``: AA's optional position inputs;
- ``aw_conv``: the AW conv (Zhu et al. 2021, arXiv 2108.08205) as one grouped conv over the batch.

tests/layers/test_scripted.py checks each against the eager layer.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from .relative_tables import relative_table


def _rel_to_abs(x: Tensor) -> Tensor:
    """(..., L, 2L-1) logits by relative offset -> (..., L, L) with out[i, j] = x[i, j - i + L - 1]."""
    length = x.shape[-2]
    flat = F.pad(x, [0, 1]).flatten(-2)
    flat = F.pad(flat, [0, length - 1])
    return flat.reshape(list(x.shape[:-2]) + [length + 1, 2 * length - 1])[..., :length, length - 1 :]


def relative_attention(
    qkv: Tensor,
    rel_width: Tensor | None,
    rel_height: Tensor | None,
    dk: int,
    dv: int,
    num_heads: int,
    scale: float,
) -> Tensor:
    """RelativeAttention2d: qkv (B, 2 dk + dv, H, W) -> (B, dv, H, W); q scaled by `scale` (dk_h^-1/2)."""
    batch, height, width = qkv.shape[0], qkv.shape[2], qkv.shape[3]
    q, k, v = qkv.split([dk, dk, dv], dim=1)
    q = q.reshape(batch, num_heads, -1, height * width).transpose(-1, -2) * scale  # (B, N, HW, dk_h)
    k = k.reshape(batch, num_heads, -1, height * width).transpose(-1, -2)
    v = v.reshape(batch, num_heads, -1, height * width).transpose(-1, -2)
    logits = q @ k.transpose(-1, -2)  # (B, N, HW, HW)
    if rel_width is not None and rel_height is not None:
        rel_w = relative_table(rel_width, width).to(q.dtype)  # (2W-1, dk_h)
        rel_h = relative_table(rel_height, height).to(q.dtype)  # (2H-1, dk_h)
        grid = q.reshape(batch, num_heads, height, width, q.shape[-1])
        along_w = _rel_to_abs(grid @ rel_w.t())  # (B, N, H, W, W): [y_i, x_i, x_j]
        along_h = _rel_to_abs(grid.transpose(2, 3) @ rel_h.t()).transpose(2, 3)  # (B, N, H, W, H): [y_i, x_i, y_j]
        relative = along_w.unsqueeze(-2) + along_h.unsqueeze(-1)  # (B, N, H, W, H, W)
        logits = logits + relative.reshape(batch, num_heads, height * width, height * width)
    out = logits.softmax(-1) @ v  # (B, N, HW, dv_h)
    return out.transpose(-1, -2).reshape(batch, dv, height, width)


def _encode(length: int, freqs: Tensor, half: int) -> Tensor:
    """(half, length): [sin(p w_0), cos(p w_0), sin(p w_1), ...] at positions p, zero rows to `half`."""
    angles = torch.arange(length, device=freqs.device, dtype=torch.float64)[None, :] * freqs[:, None]
    pairs = torch.stack([angles.sin(), angles.cos()], dim=1).flatten(0, 1)
    return F.pad(pairs, [0, 0, 0, half - pairs.shape[0]])


def sine_embedding(x: Tensor) -> Tensor:
    """aa.sine_embedding_2d for x (B, C, H, W): the (C, H, W) embedding in x's dtype."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    half = channels // 2
    steps = torch.arange(0, half // 2, device=x.device, dtype=torch.float64)
    freqs = torch.pow(10000.0, -steps * 2 / max(half, 1))
    out = torch.zeros(channels, height, width, device=x.device, dtype=torch.float64)
    out[:half] = _encode(height, freqs, half)[:, :, None]
    out[half : 2 * half] = _encode(width, freqs, half)[:, None, :]
    return out.to(x.dtype)


def coordinates(x: Tensor) -> Tensor:
    """aa.coordinate_channels for x (B, C, H, W): (B, 2, H, W), y then x, each linspace(-1, 1)."""
    y = torch.linspace(-1.0, 1.0, x.shape[2], device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1.0, 1.0, x.shape[3], device=x.device, dtype=x.dtype)
    return torch.stack(torch.meshgrid([y, xs], indexing="ij")).expand(x.shape[0], -1, -1, -1)


def aw_conv(
    x: Tensor,
    attn: Tensor,
    kernel: Tensor,
    num_maps: int,
    stride: tuple[int, int],
    padding: tuple[int, int],
    groups: int,
    map_index: Tensor,
) -> Tensor:
    """AWConv2d: x (B, C_in, H, W), attn (B, M * C_in, k, k), kernel (C_out, C_in/groups, k, k) -> (B, C_out, H', W')
    with the per-sample kernel K * (1 + A), filter group m using map m, as one grouped conv over the batch."""
    batch = x.shape[0]
    in_per_group, kh, kw = kernel.shape[1], kernel.shape[2], kernel.shape[3]
    if groups == 1:
        scale = (1 + attn).reshape(batch, num_maps, 1, in_per_group, kh, kw)
        weight = kernel.reshape(num_maps, -1, in_per_group, kh, kw) * scale  # (B, M, C_out/M, C_in, k, k)
    else:
        weight = kernel * (1 + attn[:, map_index])  # (B, C_out, C_in/groups, k, k)
    out = F.conv2d(
        x.reshape(1, -1, x.shape[2], x.shape[3]),
        weight.reshape(-1, in_per_group, kh, kw),
        None,
        stride,
        padding,
        [1, 1],
        batch * groups,
    )
    return out.reshape(batch, -1, out.shape[-2], out.shape[-1])
