"""Multi-head 2-D self-attention with learned relative position logits (the attention half of AA).

Bello et al., "Attention Augmented Convolutional Networks", ICCV 2019, arXiv 1904.09925, section 3.
For queries/keys at positions i = (y_i, x_i), j = (y_j, x_j) on an H x W map, with q pre-scaled by
dk_h^-1/2::

    logits[i, j] = q_i . k_j + q_i . rW[x_j - x_i] + q_i . rH[y_j - y_i]
    out_i = sum_j softmax_j(logits[i, :]) v_j

Four exact implementations share the same parameters:

- ``attention_reference``: the paper's formulation; materialises the (B, N_h, HW, HW) logits and
  computes the relative terms with the appendix's ``rel_to_abs`` trick.
- ``attention_chunked``: the same explicit logits, ``q_i . k_j + aW_i[x_j] + aH_i[y_j]`` with
  ``aW_i[x] = q_i . rW[x - x_i]`` and ``aH_i[y] = q_i . rH[y - y_i]`` read from ``q_i . [rW; rH]`` through a
  skewed view (the appendix's ``rel_to_abs`` without its copy), computed for a cache-sized block of (heads,
  queries) at a time in the qkv projection's channels-first layout and recomputed in the backward (activation
  checkpointing of the attention core), the terms added by broadcasting (as BoTNet adds its relative logits): no
  HW x HW tensor beyond one block's logits, and every dot product at head dim dk_h. On the CPU the fastest path
  at every map size measured.
- ``attention_fused``: the logits as a plain dot product of augmented vectors,
  ``[q_i, aW_i, aH_i] . [k_j, onehot(x_j), onehot(y_j)]``, fed to ``F.scaled_dot_product_attention`` so no
  HW x HW tensor exists. v is zero-padded to the q/k head dim because torch's memory-efficient CPU/GPU kernels
  need equal head dims (with unequal ones SDPA silently falls back to the math path, which materialises
  HW x HW). ``query_chunk`` splits the queries for kernels with a head-dim limit.
- ``attention_flex``: ``torch.nn.attention.flex_attention`` on the plain q, k (head dim stays dk_h) with a
  ``score_mod`` that adds ``aW_i[x_j] + aH_i[y_j]`` to each score, so the kernel's head dim does not grow with
  H + W. Fused (compiled) on CUDA; this torch has no flex backward on CPU (eager forward only).

``impl="auto"`` picks per device and map (``auto_impl``): on the CPU ``chunked`` (measured); on CUDA ``fused`` while
the padded augmented head dim dk_h + H + W fits the flash kernel (<= 256), ``flex`` beyond (detection maps).

Relative-table policy: ``rW``/``rH`` are (2 * max_size - 1, dk_h) parameters, shared across heads,
covering offsets -(max_size-1) .. max_size-1. A map of width W reads ``relative_table(rW, W)`` (and rH likewise;
aaconv.layers.relative_tables), the one rule of every implementation here and of scripted.py: the 2W-1 central
rows when W <= max_size (exactly the built table), and beyond it the trained rows with every longer offset
clipped to the outermost one (Shaw et al. 2018, arXiv 1803.02155), computed in the forward, so any H, W runs and
the parameters (and state dicts) stay as built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import flex_attention

from . import scripted
from .relative_tables import relative_table

ATTENTION_IMPLS = ("auto", "chunked", "fused", "flex", "reference")
# formulations with a backward on each device type (this torch has no flex backward on the CPU)
TRAINABLE_IMPLS = {"cpu": ("chunked", "fused", "reference"), "cuda": ("chunked", "fused", "flex", "reference")}
KEEP_ELEMENTS = 1 << 23  # chunked path: up to this many logits (32 MiB in fp32), one block whose probabilities are kept
BLOCK_ELEMENTS = 1 << 20  # chunked path: else blocks of about this many logits (4 MiB in fp32; measured, docs)
FLASH_MAX_HEAD_DIM = 256  # the flash SDPA kernel's head-dim limit (Hopper / Ampere)


def rel_to_abs(x: torch.Tensor) -> torch.Tensor:
    """(..., L, 2L-1) logits indexed by relative offset -> (..., L, L) with out[i, j] = x[i, j - i + L - 1].

    The appendix's pad / flatten / reshape trick.
    """
    length = x.shape[-2]
    flat = F.pad(x, (0, 1)).flatten(-2)  # (..., L * 2L)
    flat = F.pad(flat, (0, length - 1))
    return flat.unflatten(-1, (length + 1, 2 * length - 1))[..., :length, length - 1 :]


def relative_logits_reference(
    q: torch.Tensor, rel_w: torch.Tensor, rel_h: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """q: (B, N, HW, d); rel_w: (2W-1, d); rel_h: (2H-1, d) -> (B, N, HW, HW) relative logits."""
    q = q.unflatten(2, (height, width))  # (B, N, H, W, d)
    along_w = rel_to_abs(q @ rel_w.T)  # (B, N, H, W, W): [y_i, x_i, x_j]
    along_h = rel_to_abs(q.transpose(2, 3) @ rel_h.T).transpose(2, 3)  # (B, N, H, W, H): [y_i, x_i, y_j]
    shape = (*q.shape[:4], height, width)
    logits = along_w.unsqueeze(-2).expand(shape) + along_h.unsqueeze(-1).expand(shape)
    return logits.flatten(4).flatten(2, 3)


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_w: torch.Tensor | None,
    rel_h: torch.Tensor | None,
    height: int,
    width: int,
) -> torch.Tensor:
    """The paper's attention. q, k: (B, N, HW, dk_h), q pre-scaled; v: (B, N, HW, dv_h) -> (B, N, HW, dv_h)."""
    logits = q @ k.transpose(-1, -2)
    if rel_w is not None and rel_h is not None:
        logits = logits + relative_logits_reference(q, rel_w, rel_h, height, width)
    return logits.softmax(-1) @ v


def _offset_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """(2L-1, d) table -> (L, L, d) with out[a, b] = table[b - a + L - 1]."""
    pos = torch.arange(length, device=table.device)
    return table[pos[None, :] - pos[:, None] + length - 1]


def _pad_last(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.pad(x, (0, size - x.shape[-1]))


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_chunk: int | None) -> torch.Tensor:
    if query_chunk is None or q.shape[-2] <= query_chunk:
        return F.scaled_dot_product_attention(q, k, v, scale=1.0)
    chunks = [F.scaled_dot_product_attention(qc, k, v, scale=1.0) for qc in q.split(query_chunk, dim=-2)]
    return torch.cat(chunks, dim=-2)


def attention_fused(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_w: torch.Tensor | None,
    rel_h: torch.Tensor | None,
    height: int,
    width: int,
    query_chunk: int | None = None,
) -> torch.Tensor:
    """Same result as ``attention_reference`` without any (HW, HW) tensor (see the module docstring)."""
    if rel_w is not None and rel_h is not None:
        q = torch.cat([q, *_relative_terms(q, rel_w, rel_h, height, width)], dim=-1)
        eye_w = torch.eye(width, dtype=k.dtype, device=k.device).repeat(height, 1)  # onehot(x_j)
        eye_h = torch.eye(height, dtype=k.dtype, device=k.device).repeat_interleave(width, 0)  # onehot(y_j)
        onehot = torch.cat([eye_w, eye_h], dim=-1).expand(*k.shape[:2], -1, -1)
        k = torch.cat([k, onehot], dim=-1)
    value_dim = v.shape[-1]
    head_dim = -(-max(q.shape[-1], value_dim) // 8) * 8  # equal dims, multiple of 8: efficient kernels
    out = _sdpa(_pad_last(q, head_dim), _pad_last(k, head_dim), _pad_last(v, head_dim), query_chunk)
    return out[..., :value_dim]


def _relative_terms(
    q: torch.Tensor, rel_w: torch.Tensor, rel_h: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """aW: (B, N, HW, W) with aW[i, x] = q_i . rW[x - x_i]; aH: (B, N, HW, H) with aH[i, y] = q_i . rH[y - y_i]."""
    grid = q.unflatten(2, (height, width))  # (B, N, H, W, d)
    a_w = torch.einsum("bnyxd,xud->bnyxu", grid, _offset_table(rel_w, width))
    a_h = torch.einsum("bnyxd,yud->bnyxu", grid, _offset_table(rel_h, height))
    return a_w.flatten(2, 3), a_h.flatten(2, 3)


class _ChunkedAttention(torch.autograd.Function):
    """softmax(q_i . k_j + aW_i[x_j] + aH_i[y_j]) v over blocks of (heads, queries), nothing L x L held beyond one
    block.

    Channels-first, as the qkv projection lays them out: q, k: (B N, d, L); v and the output: (B N, e, L); table:
    [rW; rH], (2W-1 + 2H-1, d), or None; L = H W. Each block builds its own relative terms from q and the table
    (``_skewed``), so nothing of width H + W is kept. The forward keeps only its inputs and output for the
    backward, which recomputes each block's probabilities (activation checkpointing of the attention core); when all
    the logits fit ``KEEP_ELEMENTS`` they are one block whose probabilities are kept instead.
    """

    @staticmethod
    def forward(ctx, q, k, v, table, height: int, width: int, blocks: list[tuple[slice, slice]]):
        out = torch.empty_like(v)
        for heads, rows in blocks:
            probs = _softmax(_block_logits(q[heads, :, rows], k[heads], table, rows, height, width))
            out[heads, :, rows] = v[heads] @ probs.mT
        ctx.blocks, ctx.height, ctx.width = blocks, height, width
        kept = probs if len(blocks) == 1 else None
        ctx.save_for_backward(q, k, v, table, out, kept)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, table, out, kept = ctx.saved_tensors
        height, width = ctx.height, ctx.width
        delta = (grad_out * out).sum(1).unsqueeze(-1)  # (B N, L, 1): sum_j P_ij dP_ij, the softmax backward's row term
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        grad_table = None if table is None else torch.zeros_like(table)
        for heads, rows in ctx.blocks:
            q_rows = q[heads, :, rows]
            if kept is None:
                probs = _softmax(_block_logits(q_rows, k[heads], table, rows, height, width))
            else:
                probs = kept
            grad_o = grad_out[heads, :, rows]  # (h, e, r)
            grad_v[heads].baddbmm_(grad_o, probs)
            grad_logits = (grad_o.mT @ v[heads]).sub_(delta[heads, rows]).mul_(probs)  # (h, r, L)
            grad_k[heads].baddbmm_(q_rows, grad_logits)
            grad_q[heads, :, rows] = _block_grad_q(grad_logits, q_rows, k[heads], table, grad_table, rows, width)
        return grad_q, grad_k, grad_v, grad_table, None, None, None


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the keys, bf16 / fp16 logits computed in float32 (the same in the forward and the backward's
    recomputation, with or without autocast)."""
    return logits.softmax(-1, dtype=torch.promote_types(logits.dtype, torch.float32)).to(logits.dtype)


def _blocks(heads: int, length: int, query_chunk: int | None) -> list[tuple[slice, slice]]:
    """(heads, queries) blocks of the (heads, L, L) logits: one block when they are at most ``KEEP_ELEMENTS`` (and
    no ``query_chunk``), else ``query_chunk`` queries, or as many as ``BLOCK_ELEMENTS`` logits of one head hold,
    of as many heads as the rest of ``BLOCK_ELEMENTS`` holds."""
    if query_chunk is None and heads * length * length <= KEEP_ELEMENTS:
        return [(slice(0, heads), slice(0, length))]
    rows = min(length, query_chunk or max(1, BLOCK_ELEMENTS // length))
    per_block = max(1, BLOCK_ELEMENTS // (rows * length))
    return [
        (slice(h, min(h + per_block, heads)), slice(r, min(r + rows, length)))
        for h in range(0, heads, per_block)
        for r in range(0, length, rows)
    ]


def _query_runs(rows: slice, width: int) -> list[slice]:
    """The queries ``rows`` (row-major positions) split into runs that are each whole image rows or part of one row:
    at most a partial first row, the whole rows, and a partial last row."""
    first_full = -(-rows.start // width) * width
    last_full = rows.stop // width * width
    if first_full >= last_full:  # no whole row: one run, or two across a row boundary
        cuts = [rows.start, *([first_full] if rows.start < first_full < rows.stop else []), rows.stop]
    else:
        cuts = [rows.start, first_full, last_full, rows.stop]
    return [slice(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if a < b]


def _skewed(
    offsets: torch.Tensor, run: slice, first: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of the relative terms of the queries ``run`` (whole image rows, or part of one row; ``_query_runs``) in
    ``offsets`` (h, r, 2W-1 + 2H-1), a fresh contiguous tensor of the block's r queries from position ``first``
    against every table row: aW (h, rows, cols, W) with aW[.., x] = offsets[.., i, x - x_i + W - 1] and aH
    (h, rows, cols, H) with aH[.., y] = offsets[.., i, 2W-1 + y - y_i + H - 1].

    The offset a query needs moves by one table row per query position: a strided view (the appendix's
    ``rel_to_abs`` skew without its copy), writable, so the backward scatters through the same view."""
    block, n = offsets.shape[1:]
    count = run.stop - run.start
    y0, x0 = divmod(run.start, width)
    grid_rows, grid_cols = (count // width, width) if x0 == 0 and count % width == 0 else (1, count)
    size, base = (offsets.shape[0], grid_rows, grid_cols), (run.start - first) * n
    a_w = offsets.as_strided((*size, width), (block * n, grid_cols * n, n - 1, 1), base + width - 1 - x0)
    a_h = offsets.as_strided(
        (*size, height), (block * n, grid_cols * n - 1, n, 1), base + 2 * width - 1 + height - 1 - y0
    )
    return a_w, a_h


def _run_views(
    logits: torch.Tensor, offsets: torch.Tensor, rows: slice, height: int, width: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """For each run of ``_query_runs(rows)``: the block logits' (h, rows, cols, H, W) view of its queries and its aW, aH
    views (``_skewed``)."""
    for run in _query_runs(rows, width):
        a_w, a_h = _skewed(offsets, run, rows.start, height, width)
        grid = logits[:, run.start - rows.start : run.stop - rows.start].view(*a_w.shape[:3], height, width)
        yield grid, a_w, a_h


def _block_logits(
    q_rows: torch.Tensor, k: torch.Tensor, table: torch.Tensor | None, rows: slice, height: int, width: int
) -> torch.Tensor:
    """(h, r, L) logits of the queries q_rows (h, d, r) against k (h, d, L): q.k plus aW[x_j] + aH[y_j], the two
    terms broadcast over the (H, W) grid of keys in one pass and the product accumulated onto them."""
    if table is None:
        return q_rows.mT @ k
    logits = q_rows.new_empty(q_rows.shape[0], q_rows.shape[2], k.shape[2])
    for grid, a_w, a_h in _run_views(logits, q_rows.mT @ table.T, rows, height, width):
        torch.add(a_h[..., :, None], a_w[..., None, :], out=grid)
    return logits.baddbmm_(q_rows.mT, k)


def _block_grad_q(
    grad_logits: torch.Tensor,
    q_rows: torch.Tensor,
    k: torch.Tensor,
    table: torch.Tensor | None,
    grad_table: torch.Tensor | None,
    rows: slice,
    width: int,
) -> torch.Tensor:
    """The block's dq (h, d, r) from its logits' gradient (h, r, L); adds the table's gradient to ``grad_table``.
    The relative terms' gradients are the logits' summed over key rows (aW) and key columns (aH), written to their
    table offsets through the same skewed views."""
    grad_q = k @ grad_logits.mT
    if table is None:
        return grad_q
    heads, _, count = q_rows.shape
    grad_offsets = grad_logits.new_zeros(heads, count, table.shape[0])
    ones = grad_logits.new_ones(width)
    for grid, a_w, a_h in _run_views(grad_logits, grad_offsets, rows, grad_logits.shape[-1] // width, width):
        a_w.copy_(grid.sum(-2))
        a_h.copy_(grid @ ones)  # the sum over columns as a matrix-vector product: a reduction this short runs slower
    grad_table += (grad_offsets.mT @ q_rows.mT).sum(0)
    return grad_q.baddbmm_(table.T.expand(heads, -1, -1), grad_offsets.mT)


def attention_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_w: torch.Tensor | None,
    rel_h: torch.Tensor | None,
    height: int,
    width: int,
    query_chunk: int | None = None,
) -> torch.Tensor:
    """Same result as ``attention_reference``: explicit logits ``q.k + aW + aH`` a block of (heads, queries) at a
    time (``_blocks``: about ``BLOCK_ELEMENTS`` logits, or ``query_chunk`` queries), recomputed in the backward:
    O(L (dk_h + dv_h)) memory per head kept, nothing L x L or L x (H + W). Runs channels-first: q, k, v taken as
    (B N, d, L) (views of the qkv projection's channels, copied once) and the output returned as a view of
    (B, N, e, L), which is the (B, dv, H, W) map."""
    table = None if rel_w is None or rel_h is None else torch.cat([rel_w, rel_h])
    batch, num_heads, positions, _ = q.shape
    blocks = _blocks(batch * num_heads, positions, query_chunk)
    q, k, v = (t.transpose(-1, -2).reshape(batch * num_heads, -1, positions) for t in (q, k, v))
    out = _ChunkedAttention.apply(q, k, v, table, height, width, blocks)
    return out.view(batch, num_heads, -1, positions).transpose(-1, -2)


@functools.cache
def _compiled_flex() -> Callable[..., torch.Tensor]:
    """flex_attention compiled once per process (uncompiled, it runs an unfused reference loop)."""
    return torch.compile(flex_attention)


def attention_flex(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_w: torch.Tensor | None,
    rel_h: torch.Tensor | None,
    height: int,
    width: int,
) -> torch.Tensor:
    """Same result as ``attention_reference`` through flex_attention, the relative logits added by score_mod."""
    value_dim = v.shape[-1]
    head_dim = max(16, 1 << (max(q.shape[-1], value_dim) - 1).bit_length())  # the kernel's tile sizes
    q, k, v = (_pad_last(t, head_dim) for t in (q, k, v))
    flex = _compiled_flex() if q.is_cuda else flex_attention
    if rel_w is None or rel_h is None:
        return flex(q, k, v, scale=1.0)[..., :value_dim]
    a_w, a_h = _relative_terms(q[..., : rel_w.shape[-1]], rel_w, rel_h, height, width)

    def add_relative(score, b, h, q_idx, kv_idx):  # flex's score_mod signature
        return score + a_w[b, h, q_idx, kv_idx % width] + a_h[b, h, q_idx, kv_idx // width]

    return flex(q, k, v, score_mod=add_relative, scale=1.0)[..., :value_dim]


def auto_impl(device: torch.device, head_dim: int, height: int, width: int) -> str:
    """The implementation ``impl="auto"`` runs for an H x W map at head dim dk_h (module docstring).

    CPU, measured with ``scripts/bench_layers.py --aa-maps`` (docs/performance.md): the chunked path, fastest from
    5x5 to 56x56 at head dims 20 and 32. CUDA, from the kernels' limits (unmeasured): fused unless the augmented
    head dim exceeds the flash kernel's limit, where flex keeps q.k at dk_h."""
    if device.type != "cuda":
        return "chunked"
    augmented = -(-(head_dim + height + width) // 8) * 8
    return "flex" if augmented > FLASH_MAX_HEAD_DIM else "fused"


class RelativeAttention2d(nn.Module):
    """Multi-head self-attention over an H x W map from a precomputed qkv projection.

    Shapes: qkv (B, 2*dk + dv, H, W) -> (B, dv, H, W). Heads are contiguous channel groups of q, k, v;
    the output concatenates heads on channels (head n -> channels n*dv_h .. (n+1)*dv_h - 1).

    Args:
        dk, dv: total key and value depth, multiples of ``num_heads``.
        num_heads: N_h.
        relative: learn relative width/height logits (``rel_width``, ``rel_height``, shared across heads,
            init N(0, dk_h^-1/2): the appendix passes dk_h^-1/2 as the *mean* by a TF1 argument-order
            quirk, we read it as the std). ``False``: no position encoding (permutation-equivariant).
        max_size: largest H and W whose offsets the relative tables learn; larger maps clip the longer offsets
            (the policy in the module docstring).
        impl: ``"reference"``, ``"chunked"``, ``"fused"``, ``"flex"`` or ``"auto"`` (per device and map:
            ``auto_impl``).
        query_chunk: process queries in chunks of this many positions on the chunked and fused paths (chunked:
            default blocks of about ``BLOCK_ELEMENTS`` logits).
    """

    __jit_unused_properties__ = ["impl"]  # TorchScript runs aaconv.layers.scripted instead of the impl choice

    def __init__(
        self,
        dk: int,
        dv: int,
        num_heads: int = 8,
        *,
        relative: bool = True,
        max_size: int = 256,
        impl: str = "auto",
        query_chunk: int | None = None,
    ) -> None:
        super().__init__()
        if dk % num_heads or dv % num_heads or dk <= 0 or dv <= 0:
            raise ValueError(f"dk={dk} and dv={dv} must be positive multiples of num_heads={num_heads}")
        self.dk, self.dv, self.num_heads = dk, dv, num_heads
        self.max_size = max_size
        self.query_chunk = query_chunk
        self.impl = impl
        head_dim = dk // num_heads
        self.scale = head_dim**-0.5
        if relative:
            self.rel_width = nn.Parameter(torch.randn(2 * max_size - 1, head_dim) * self.scale)
            self.rel_height = nn.Parameter(torch.randn(2 * max_size - 1, head_dim) * self.scale)
        else:
            self.register_parameter("rel_width", None)
            self.register_parameter("rel_height", None)

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in ATTENTION_IMPLS:
            raise ValueError(f"impl must be one of {ATTENTION_IMPLS}, got {value!r}")
        self._impl = value

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        args = (self.dk, self.dv, self.num_heads, self.scale)
        if torch.jit.is_scripting():  # TorchScript compiles the reference formulation only
            return scripted.relative_attention(qkv, self.rel_width, self.rel_height, *args)
        return relative_attention(qkv, self.rel_width, self.rel_height, *args, self.impl, self.query_chunk)


def _tables(
    rel_width: torch.Tensor | None, rel_height: torch.Tensor | None, height: int, width: int, dtype: torch.dtype
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The (2W-1, dk_h) and (2H-1, dk_h) tables of an H x W map (``relative_table``), in the activations' dtype
    (autocast)."""
    if rel_width is None or rel_height is None:
        return None, None
    return relative_table(rel_width, width).to(dtype), relative_table(rel_height, height).to(dtype)


@torch.fx.wrap
def relative_attention(
    qkv: torch.Tensor,
    rel_width: torch.Tensor | None,
    rel_height: torch.Tensor | None,
    dk: int,
    dv: int,
    num_heads: int,
    scale: float,
    impl: str,
    query_chunk: int | None,
) -> torch.Tensor:
    """RelativeAttention2d's forward: qkv (B, 2*dk + dv, H, W) -> (B, dv, H, W) by ``impl`` (``"auto"``:
    ``auto_impl`` for the map and device). A module-level function of tensors so that torch.fx.symbolic_trace
    records it as one call (torch.fx.wrap), which then picks the kernel on the real shapes and device."""
    batch, _, height, width = qkv.shape
    q, k, v = qkv.split([dk, dk, dv], dim=1)
    q, k, v = (t.reshape(batch, num_heads, -1, height * width).transpose(-1, -2) for t in (q, k, v))
    q = q * scale
    rel_w, rel_h = _tables(rel_width, rel_height, height, width, q.dtype)
    if impl == "auto":
        impl = auto_impl(q.device, q.shape[-1], height, width)
    if impl == "reference":
        out = attention_reference(q, k, v, rel_w, rel_h, height, width)
    elif impl == "flex":
        out = attention_flex(q, k, v, rel_w, rel_h, height, width)
    elif impl == "chunked":
        out = attention_chunked(q, k, v, rel_w, rel_h, height, width, query_chunk)
    else:
        out = attention_fused(q, k, v, rel_w, rel_h, height, width, query_chunk)
    return out.transpose(-1, -2).reshape(batch, dv, height, width)
