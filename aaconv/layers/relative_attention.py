"""Multi-head 2-D self-attention with learned relative position logits (the attention half of AA).

Bello et al., "Attention Augmented Convolutional Networks", ICCV 2019, arXiv 1904.09925, section 3.
For queries/keys at positions i = (y_i, x_i), j = (y_j, x_j) on an H x W map, with q pre-scaled by
dk_h^-1/2::

    logits[i, j] = q_i . k_j + q_i . rW[x_j - x_i] + q_i . rH[y_j - y_i]
    out_i = sum_j softmax_j(logits[i, :]) v_j

The math is stated once, in four pieces every implementation below is built from:

- ``relative_offsets``: q_i . [rW; rH][o] for every table row o, (..., L, 2W-1 + 2H-1);
- ``skew``: the strided views aW_i[x] = q_i . rW[x - x_i] and aH_i[y] = q_i . rH[y - y_i] of those offsets (the
  appendix's ``rel_to_abs`` without its copy, for whole image rows or part of one row);
- ``relative_logits``: aW_i[x_j] + aH_i[y_j] broadcast over the (H, W) grid of keys;
- ``probabilities``: the softmax over the keys, in float32 for half-precision logits.

Four exact implementations (schedules of those pieces) share the same parameters:

- ``attention_reference``: the paper's formulation; materialises the (B, N_h, HW, HW) logits. Written in the
  subset of Python TorchScript compiles: under ``torch.jit.script`` the layer runs it (no separate twin), and
  ``attention_probs`` gives its probabilities to ``aaconv.engine.attention_maps``.
- ``attention_chunked``: the same explicit logits, ``q_i . k_j + aW_i[x_j] + aH_i[y_j]`` (the relative terms
  written in place into the block's logits, through the same ``skew`` views its hand-written backward scatters
  through), computed for a cache-sized block of (heads, queries) at a time in the qkv projection's channels-first
  layout and recomputed in the backward (activation checkpointing of the attention core): no HW x HW tensor beyond
  one block's logits, and every dot product at head dim dk_h. On the CPU the fastest path at every map size
  measured.
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
aaconv.layers.relative_tables), the one rule of every implementation here (TorchScript included): the 2W-1 central
rows when W <= max_size (exactly the built table), and beyond it the trained rows with every longer offset
clipped to the outermost one (Shaw et al. 2018, arXiv 1803.02155), computed in the forward, so any H, W runs and
the parameters (and state dicts) stay as built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.flex_attention import flex_attention

from .relative_tables import relative_table

ATTENTION_IMPLS = ("auto", "chunked", "fused", "flex", "reference")
# formulations with a backward on each device type (this torch has no flex backward on the CPU)
TRAINABLE_IMPLS = {"cpu": ("chunked", "fused", "reference"), "cuda": ("chunked", "fused", "flex", "reference")}
KEEP_ELEMENTS = 1 << 23  # chunked path: up to this many logits (32 MiB in fp32), one block whose probabilities are kept
BLOCK_ELEMENTS = 1 << 20  # chunked path: else blocks of about this many logits (4 MiB in fp32; measured, docs)
FLASH_MAX_HEAD_DIM = 256  # the flash SDPA kernel's head-dim limit (Hopper / Ampere)


def relative_offsets(q: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """q (..., L, d) and the map's table [rW; rH] (2W-1 + 2H-1, d) -> (..., L, 2W-1 + 2H-1): q_i . table[o] for every
    offset row o, a fresh contiguous tensor (``skew`` reads it)."""
    return q @ table.t()


def skew(
    offsets: torch.Tensor, start: int, count: int, first: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The relative terms of the ``count`` queries from position ``start`` (row-major), as views of ``offsets``
    (h, r, 2W-1 + 2H-1), the ``relative_offsets`` of r queries from position ``first`` (a fresh tensor: contiguous,
    at the start of its storage): aW (h, rows, cols, W) with aW[.., x] = offsets[.., i, x - x_i + W - 1] and aH
    (h, rows, cols, H) with aH[.., y] = offsets[.., i, 2W-1 + y - y_i + H - 1]. The queries are whole image rows
    (rows x W) or part of one row (1 x count).

    The offset a query needs moves by one table row per query position: a strided view (the appendix's
    ``rel_to_abs`` skew without its copy), writable, so a backward can scatter through the same view."""
    block, n = offsets.shape[1], offsets.shape[2]
    y0, x0 = start // width, start % width
    whole_rows = x0 == 0 and count % width == 0
    rows, cols = (count // width, width) if whole_rows else (1, count)
    heads = offsets.shape[0]
    base = (start - first) * n
    a_w = offsets.as_strided([heads, rows, cols, width], [block * n, cols * n, n - 1, 1], base + width - 1 - x0)
    a_h = offsets.as_strided(
        [heads, rows, cols, height], [block * n, cols * n - 1, n, 1], base + 2 * width - 1 + height - 1 - y0
    )
    return a_w, a_h


def relative_logits(a_w: torch.Tensor, a_h: torch.Tensor) -> torch.Tensor:
    """aW (..., W) and aH (..., H) of some queries -> (..., H, W): aW[x_j] + aH[y_j] over the grid of keys."""
    return a_h.unsqueeze(-1) + a_w.unsqueeze(-2)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the keys, bf16 / fp16 logits computed in float32 (the same in every path, forward and backward's
    recomputation, with or without autocast)."""
    return logits.softmax(-1, dtype=torch.promote_types(logits.dtype, torch.float32)).to(logits.dtype)


def relative_terms(q: torch.Tensor, table: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q (B, N, HW, d) -> aW (B, N, HW, W) and aH (B, N, HW, H) of every query (``skew`` over the whole map)."""
    batch, num_heads, positions = q.shape[0], q.shape[1], q.shape[2]
    offsets = relative_offsets(q.reshape(batch * num_heads, positions, q.shape[3]), table)
    a_w, a_h = skew(offsets, 0, positions, 0, height, width)
    return a_w.reshape(batch, num_heads, positions, width), a_h.reshape(batch, num_heads, positions, height)


def attention_probs(q: Tensor, k: Tensor, table: Tensor | None, height: int, width: int) -> Tensor:
    """The paper's attention probabilities: q, k (B, N, HW, dk_h), q pre-scaled, and the map's table [rW; rH]
    (``tables_for_map``; None: no relative logits) -> (B, N, HW, HW), softmax over the keys (``probabilities``)."""
    logits = q @ k.transpose(-1, -2)
    if table is not None:
        logits = logits + relative_logits(*relative_terms(q, table, height, width)).flatten(-2)
    return probabilities(logits)


def attention_reference(q: Tensor, k: Tensor, v: Tensor, table: Tensor | None, height: int, width: int) -> Tensor:
    """The paper's attention. q, k: (B, N, HW, dk_h), q pre-scaled; v: (B, N, HW, dv_h) -> (B, N, HW, dv_h)."""
    return attention_probs(q, k, table, height, width) @ v


def _pad_last(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.pad(x, (0, size - x.shape[-1]))


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_chunk: int | None) -> torch.Tensor:
    if query_chunk is None or q.shape[-2] <= query_chunk:
        return F.scaled_dot_product_attention(q, k, v, scale=1.0)
    chunks = [F.scaled_dot_product_attention(qc, k, v, scale=1.0) for qc in q.split(query_chunk, dim=-2)]
    return torch.cat(chunks, dim=-2)


def attention_fused(
    q: Tensor, k: Tensor, v: Tensor, table: Tensor | None, height: int, width: int, query_chunk: int | None = None
) -> Tensor:
    """Same result as ``attention_reference`` without any (HW, HW) tensor (see the module docstring)."""
    if table is not None:
        q = torch.cat([q, *relative_terms(q, table, height, width)], dim=-1)
        eye_w = torch.eye(width, dtype=k.dtype, device=k.device).repeat(height, 1)  # onehot(x_j)
        eye_h = torch.eye(height, dtype=k.dtype, device=k.device).repeat_interleave(width, 0)  # onehot(y_j)
        onehot = torch.cat([eye_w, eye_h], dim=-1).expand(*k.shape[:2], -1, -1)
        k = torch.cat([k, onehot], dim=-1)
    value_dim = v.shape[-1]
    head_dim = -(-max(q.shape[-1], value_dim) // 8) * 8  # equal dims, multiple of 8: efficient kernels
    out = _sdpa(_pad_last(q, head_dim), _pad_last(k, head_dim), _pad_last(v, head_dim), query_chunk)
    return out[..., :value_dim]


class _ChunkedAttention(torch.autograd.Function):
    """softmax(q_i . k_j + aW_i[x_j] + aH_i[y_j]) v over blocks of (heads, queries), nothing L x L held beyond one
    block.

    Channels-first, as the qkv projection lays them out: q, k: (B N, d, L); v and the output: (B N, e, L); table:
    [rW; rH], (2W-1 + 2H-1, d), or None; L = H W. Each block builds its own relative terms from q and the table
    (``skew``), so nothing of width H + W is kept. The forward keeps only its inputs and output for the
    backward, which recomputes each block's probabilities (activation checkpointing of the attention core); when all
    the logits fit ``KEEP_ELEMENTS`` they are one block whose probabilities are kept instead.
    """

    @staticmethod
    def forward(ctx, q, k, v, table, height: int, width: int, blocks: list[tuple[slice, slice]]):
        out = torch.empty_like(v)
        for heads, rows in blocks:
            probs = probabilities(_block_logits(q[heads, :, rows], k[heads], table, rows, height, width))
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
                probs = probabilities(_block_logits(q_rows, k[heads], table, rows, height, width))
            else:
                probs = kept
            grad_o = grad_out[heads, :, rows]  # (h, e, r)
            grad_v[heads].baddbmm_(grad_o, probs)
            grad_logits = (grad_o.mT @ v[heads]).sub_(delta[heads, rows]).mul_(probs)  # (h, r, L)
            grad_k[heads].baddbmm_(q_rows, grad_logits)
            grad_q[heads, :, rows] = _block_grad_q(grad_logits, q_rows, k[heads], table, grad_table, rows, width)
        return grad_q, grad_k, grad_v, grad_table, None, None, None


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


def _run_views(
    logits: torch.Tensor, offsets: torch.Tensor, rows: slice, height: int, width: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """For each run of ``_query_runs(rows)``: the block logits' (h, rows, cols, H, W) view of its queries and its aW, aH
    views (``skew``)."""
    for run in _query_runs(rows, width):
        a_w, a_h = skew(offsets, run.start, run.stop - run.start, rows.start, height, width)
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
    for grid, a_w, a_h in _run_views(logits, relative_offsets(q_rows.mT, table), rows, height, width):
        torch.add(a_h.unsqueeze(-1), a_w.unsqueeze(-2), out=grid)  # relative_logits, written in place
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
    q: Tensor, k: Tensor, v: Tensor, table: Tensor | None, height: int, width: int, query_chunk: int | None = None
) -> Tensor:
    """Same result as ``attention_reference``: explicit logits ``q.k + aW + aH`` a block of (heads, queries) at a
    time (``_blocks``: about ``BLOCK_ELEMENTS`` logits, or ``query_chunk`` queries), recomputed in the backward:
    O(L (dk_h + dv_h)) memory per head kept, nothing L x L or L x (H + W). Runs channels-first: q, k, v taken as
    (B N, d, L) (views of the qkv projection's channels, copied once) and the output returned as a view of
    (B, N, e, L), which is the (B, dv, H, W) map."""
    batch, num_heads, positions, _ = q.shape
    blocks = _blocks(batch * num_heads, positions, query_chunk)
    q, k, v = (t.transpose(-1, -2).reshape(batch * num_heads, -1, positions) for t in (q, k, v))
    out = _ChunkedAttention.apply(q, k, v, table, height, width, blocks)
    return out.view(batch, num_heads, -1, positions).transpose(-1, -2)


@functools.cache
def _compiled_flex() -> Callable[..., torch.Tensor]:
    """flex_attention compiled once per process (uncompiled, it runs an unfused reference loop)."""
    return torch.compile(flex_attention)


def attention_flex(q: Tensor, k: Tensor, v: Tensor, table: Tensor | None, height: int, width: int) -> Tensor:
    """Same result as ``attention_reference`` through flex_attention, the relative logits added by score_mod."""
    value_dim = v.shape[-1]
    head_dim = max(16, 1 << (max(q.shape[-1], value_dim) - 1).bit_length())  # the kernel's tile sizes
    flex = _compiled_flex() if q.is_cuda else flex_attention
    if table is None:
        return flex(*(_pad_last(t, head_dim) for t in (q, k, v)), scale=1.0)[..., :value_dim]
    a_w, a_h = relative_terms(q, table, height, width)
    q, k, v = (_pad_last(t, head_dim) for t in (q, k, v))

    def add_relative(score, b, h, q_idx, kv_idx):  # flex's score_mod signature: relative_logits at one (i, j)
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

    __jit_unused_properties__ = ["impl"]  # TorchScript runs the reference formulation, whatever the impl

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
        if torch.jit.is_scripting():  # TorchScript compiles the reference formulation, the same code as eager's
            height, width = qkv.shape[2], qkv.shape[3]
            q, k, v = split_heads(qkv, self.dk, self.dv, self.num_heads, self.scale)
            table = tables_for_map(self.rel_width, self.rel_height, height, width, q.dtype)
            return merge_heads(attention_reference(q, k, v, table, height, width), height, width)
        args = (self.dk, self.dv, self.num_heads, self.scale, self.impl, self.query_chunk)
        return relative_attention(qkv, self.rel_width, self.rel_height, *args)

    def probabilities(self, qkv: torch.Tensor) -> torch.Tensor:
        """The attention probabilities of the layer's forward on ``qkv`` (B, 2*dk + dv, H, W) -> (B, N_h, HW, HW),
        softmax over the last dim (key positions, row-major y * W + x), in float32 or qkv's wider dtype, through
        ``attention_probs`` (what ``aaconv.engine.attention_maps`` draws)."""
        height, width = qkv.shape[2], qkv.shape[3]
        qkv = qkv.to(torch.promote_types(qkv.dtype, torch.float32))
        q, k, _ = split_heads(qkv, self.dk, self.dv, self.num_heads, self.scale)
        table = tables_for_map(self.rel_width, self.rel_height, height, width, q.dtype)
        return attention_probs(q, k, table, height, width)


def split_heads(
    qkv: torch.Tensor, dk: int, dv: int, num_heads: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """qkv (B, 2*dk + dv, H, W), heads as contiguous channel groups -> q, k (B, N_h, HW, dk_h), q times ``scale``
    (dk_h^-1/2), and v (B, N_h, HW, dv_h)."""
    batch, positions = qkv.shape[0], qkv.shape[2] * qkv.shape[3]
    q, k, v = qkv.split([dk, dk, dv], dim=1)
    q = q.reshape(batch, num_heads, -1, positions).transpose(-1, -2) * scale
    k = k.reshape(batch, num_heads, -1, positions).transpose(-1, -2)
    v = v.reshape(batch, num_heads, -1, positions).transpose(-1, -2)
    return q, k, v


def merge_heads(out: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, N_h, HW, dv_h) -> (B, dv, H, W), head n on channels n*dv_h .. (n+1)*dv_h - 1."""
    return out.transpose(-1, -2).reshape(out.shape[0], -1, height, width)


def tables_for_map(
    rel_width: Tensor | None, rel_height: Tensor | None, height: int, width: int, dtype: torch.dtype
) -> Tensor | None:
    """The table [rW; rH] (2W-1 + 2H-1, dk_h) of an H x W map, each read at its side by ``relative_table``, in the
    activations' dtype (autocast): the one table ``relative_offsets`` reads. None without relative logits."""
    if rel_width is None or rel_height is None:
        return None
    return torch.cat([relative_table(rel_width, width), relative_table(rel_height, height)]).to(dtype)


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
    height, width = qkv.shape[2:]
    q, k, v = split_heads(qkv, dk, dv, num_heads, scale)
    table = tables_for_map(rel_width, rel_height, height, width, q.dtype)
    if impl == "auto":
        impl = auto_impl(q.device, q.shape[-1], height, width)
    if impl == "reference":
        out = attention_reference(q, k, v, table, height, width)
    elif impl == "flex":
        out = attention_flex(q, k, v, table, height, width)
    elif impl == "chunked":
        out = attention_chunked(q, k, v, table, height, width, query_chunk)
    else:
        out = attention_fused(q, k, v, table, height, width, query_chunk)
    return merge_heads(out, height, width)
