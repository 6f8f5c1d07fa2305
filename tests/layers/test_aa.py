"""AAConv2d and its relative attention against brute force written from the formula (papers.md section 1)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aaconv.layers import AAConv2d, AWConv2d, relative_attention
from aaconv.layers.aa import coordinate_channels, sine_embedding_2d
from aaconv.layers.relative_attention import (
    TRAINABLE_IMPLS,
    RelativeAttention2d,
    attention_chunked,
    attention_flex,
    attention_fused,
    attention_reference,
    auto_impl,
    relative_logits,
    relative_terms,
)

f64 = torch.float64
# the exact rewrites trainable on the CPU, each checked against the paper's formulation (flex: CUDA tests below)
FORMULATIONS = [impl for impl in TRAINABLE_IMPLS["cpu"] if impl != "reference"]
ALL_CPU_IMPLS = ["reference", *FORMULATIONS]


def brute_relative_logits(q, rel_w, rel_h, height, width):
    """logits[b, n, i, j] = q_i . rW[x_j - x_i] + q_i . rH[y_j - y_i], one (i, j) at a time."""
    out = torch.zeros(*q.shape[:2], height * width, height * width, dtype=q.dtype)
    for i in range(height * width):
        yi, xi = divmod(i, width)
        for j in range(height * width):
            yj, xj = divmod(j, width)
            rel = rel_w[xj - xi + width - 1] + rel_h[yj - yi + height - 1]
            out[:, :, i, j] = (q[:, :, i] * rel).sum(-1)
    return out


def brute_attention(q, k, v, rel_w, rel_h, height, width):
    logits = q @ k.transpose(-1, -2)
    if rel_w is not None:
        logits = logits + brute_relative_logits(q, rel_w, rel_h, height, width)
    return torch.softmax(logits, -1) @ v


def brute_attention_branch(layer, inputs):
    """The attention branch from the paper's description on the (already pooled) input, head by head,
    independent of the layer's reshapes: proj(concat_heads(softmax(q k^T + rel) v))."""
    attn = layer.attention
    feats = layer.qkv(inputs)
    _, _, height, width = feats.shape
    dkh, dvh = attn.dk // attn.num_heads, attn.dv // attn.num_heads
    rel_w = rel_h = None
    if attn.rel_width is not None:
        c = attn.max_size - 1
        rel_w, rel_h = attn.rel_width[c - width + 1 : c + width], attn.rel_height[c - height + 1 : c + height]
    heads = []
    for n in range(attn.num_heads):
        q = feats[:, n * dkh : (n + 1) * dkh].flatten(2).transpose(1, 2)[:, None] * dkh**-0.5
        k = feats[:, attn.dk + n * dkh : attn.dk + (n + 1) * dkh].flatten(2).transpose(1, 2)[:, None]
        v = feats[:, 2 * attn.dk + n * dvh : 2 * attn.dk + (n + 1) * dvh].flatten(2).transpose(1, 2)[:, None]
        out = brute_attention(q, k, v, rel_w, rel_h, height, width)[:, 0]  # (B, HW, dvh)
        heads.append(out.transpose(1, 2).reshape(inputs.shape[0], dvh, height, width))
    return layer.proj(torch.cat(heads, 1))


def brute_aaconv(layer, x):
    attn_out = brute_attention_branch(layer, layer.pool(x))
    return attn_out if layer.conv is None else torch.cat([layer.conv(x), attn_out], 1)


def avg_pool_3x3_s2(x):
    return F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)


@pytest.mark.parametrize("height,width", [(3, 5), (4, 4), (5, 2)])
def test_relative_logits_match_brute_force(height, width):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, height * width, 4, dtype=f64, generator=g)
    rel_w = torch.randn(2 * width - 1, 4, dtype=f64, generator=g)
    rel_h = torch.randn(2 * height - 1, 4, dtype=f64, generator=g)
    expected = brute_relative_logits(q, rel_w, rel_h, height, width)
    a_w, a_h = relative_terms(q, torch.cat([rel_w, rel_h]), height, width)  # the core's skew of q . [rW; rH]
    torch.testing.assert_close(relative_logits(a_w, a_h).flatten(-2), expected)


@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("height,width", [(3, 5), (4, 4)])
def test_attention_paths_match_brute_force(relative, height, width):
    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn(2, 2, height * width, 3, dtype=f64, generator=g) for _ in range(2))
    v = torch.randn(2, 2, height * width, 5, dtype=f64, generator=g)
    rel_w = torch.randn(2 * width - 1, 3, dtype=f64, generator=g) if relative else None
    rel_h = torch.randn(2 * height - 1, 3, dtype=f64, generator=g) if relative else None
    expected = brute_attention(q, k, v, rel_w, rel_h, height, width)
    table = torch.cat([rel_w, rel_h]) if relative else None  # [rW; rH], the table the paths read
    torch.testing.assert_close(attention_reference(q, k, v, table, height, width), expected)
    torch.testing.assert_close(attention_fused(q, k, v, table, height, width), expected)
    torch.testing.assert_close(attention_fused(q, k, v, table, height, width, query_chunk=4), expected)
    for chunk in (None, 1, 4):
        torch.testing.assert_close(attention_chunked(q, k, v, table, height, width, chunk), expected)


@pytest.mark.parametrize("impl", ALL_CPU_IMPLS)
@pytest.mark.parametrize("stride,stride_mode", [(1, "avgpool"), (2, "avgpool"), (2, "qkv")])
def test_layer_matches_brute_force(impl, stride, stride_mode):
    torch.manual_seed(2)
    layer = AAConv2d(6, 12, 3, stride, dk=8, dv=4, num_heads=2, impl=impl, stride_mode=stride_mode, max_size=8)
    layer = layer.double()
    x = torch.randn(2, 6, 5, 7, dtype=f64)
    out = layer(x)
    reference_conv = nn.Conv2d(6, 12, 3, stride, padding=1, bias=False).double()
    assert out.shape == reference_conv(x).shape
    torch.testing.assert_close(out, brute_aaconv(layer, x))


def _param_grads(layer, x, seed=3):
    out = layer(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    grads = torch.autograd.grad((out * weights).sum(), [x, *layer.parameters()])
    return out, grads


@pytest.mark.parametrize(
    "size,stride,heads,relative",
    [((4, 5), 1, 1, True), ((6, 6), 2, 2, True), ((7, 3), 1, 4, True), ((5, 6), 2, 4, False)],
)
@pytest.mark.parametrize(
    "options",
    [{}, {"memory_pool": True}, {"coordconv": True}, {"sine": True, "coordconv": True, "memory_pool": True}],
    ids=["plain", "memory_pool", "coordconv", "all"],
)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("impl", FORMULATIONS)
def test_formulations_match_reference_forward_backward(impl, size, stride, heads, relative, options, dtype, tol):
    torch.manual_seed(4)
    layer = AAConv2d(8, 16, 3, stride, dk=4 * heads, dv=2 * heads, num_heads=heads, relative=relative, **options)
    layer = layer.to(dtype)
    x = torch.randn(2, 8, *size, dtype=dtype, requires_grad=True)
    layer.impl = "reference"
    out_ref, grads_ref = _param_grads(layer, x)
    layer.impl = impl
    out, grads = _param_grads(layer, x)
    torch.testing.assert_close(out, out_ref, rtol=tol, atol=tol)
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "query_chunk,block_elements",
    [(1, None), (3, None), (7, None), (None, 30), (None, 2 * 30 * 30), (None, 3 * 30 * 30)],
)
def test_chunked_path_matches_reference_across_blocks(monkeypatch, query_chunk, block_elements):
    """Blocks recomputed in the backward: query chunks that split rows unevenly (3 and 7 do not divide 5 x 6 = 30, so
    blocks start and end inside image rows), and blocks of one row, of two heads' whole logits, and of three heads
    (not dividing 2 x 2 = 4 heads)."""
    monkeypatch.setattr(relative_attention, "KEEP_ELEMENTS", 0)
    if block_elements is not None:
        monkeypatch.setattr(relative_attention, "BLOCK_ELEMENTS", block_elements)
    torch.manual_seed(4)
    layer = AAConv2d(8, 16, 3, dk=8, dv=4, num_heads=2, query_chunk=query_chunk).double()
    x = torch.randn(2, 8, 5, 6, dtype=f64, requires_grad=True)
    layer.impl = "reference"
    out_ref, grads_ref = _param_grads(layer, x)
    layer.impl = "chunked"
    out, grads = _param_grads(layer, x)
    torch.testing.assert_close(out, out_ref)
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref)


@pytest.mark.parametrize("heads,length,query_chunk", [(32, 196, None), (16, 4096, None), (32, 3136, None), (5, 30, 7)])
def test_chunked_blocks_cover_every_logit_once(heads, length, query_chunk):
    """One block when everything fits KEEP_ELEMENTS, else blocks of at most BLOCK_ELEMENTS logits (or one row)."""
    blocks = relative_attention._blocks(heads, length, query_chunk)
    covered = torch.zeros(heads, length, dtype=torch.long)
    for head_range, rows in blocks:
        covered[head_range, rows] += 1
        if len(blocks) > 1:
            logits = len(range(heads)[head_range]) * len(range(length)[rows]) * length
            assert logits <= max(relative_attention.BLOCK_ELEMENTS, length)
    assert bool((covered == 1).all())
    assert (len(blocks) == 1) == (query_chunk is None and heads * length**2 <= relative_attention.KEEP_ELEMENTS)


@pytest.mark.parametrize("start,stop", [(0, 30), (3, 5), (4, 8), (4, 20), (6, 18), (0, 4), (2, 6), (5, 7)])
def test_chunked_query_runs_are_rows_or_parts_of_one_row(start, stop):
    """The runs a block's relative terms are read in: consecutive, covering the block, each whole rows of the 6-wide
    map or within one row (the grids the skewed views need)."""
    runs = relative_attention._query_runs(slice(start, stop), 6)
    assert [r.start for r in runs] == [start, *(r.stop for r in runs[:-1])] and runs[-1].stop == stop
    for run in runs:
        whole_rows = run.start % 6 == 0 and (run.stop - run.start) % 6 == 0
        assert whole_rows or run.start // 6 == (run.stop - 1) // 6
    assert len(runs) <= 3


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 6e-2)])
def test_low_precision_paths_agree_with_float64(dtype, tol):
    torch.manual_seed(5)
    layer = AAConv2d(8, 16, 3, dk=8, dv=8, num_heads=2).double()
    x = torch.randn(2, 8, 6, 5, dtype=f64, requires_grad=True)
    layer.impl = "reference"
    out64, grads64 = _param_grads(layer, x)
    low = AAConv2d(8, 16, 3, dk=8, dv=8, num_heads=2)
    low.load_state_dict(layer.state_dict())
    low = low.to(dtype)
    x_low = x.detach().to(dtype).requires_grad_()
    for impl in ALL_CPU_IMPLS:
        low.impl = impl
        out, grads = _param_grads(low, x_low)
        scale = out64.abs().max()
        assert (out.double() - out64).abs().max() <= tol * scale
        for g, g64 in zip(grads, grads64, strict=True):
            assert (g.double() - g64).abs().max() <= tol * max(g64.abs().max(), 1e-3)


def _masked_background_qkv(content, height, width, top, left, dk):
    """qkv map: ``content`` pasted at (top, left) on a constant background whose keys get zero weight.

    Every query has q[0] = 1 and background keys k[0] = -1e4, so exp(logit) underflows to exactly 0 for
    them and only the content positions (same relative offsets after a shift) take part.
    """
    qkv = torch.full((content.shape[0], content.shape[1], height, width), 0.3, dtype=content.dtype)
    qkv[:, dk, :, :] = -1e4
    qkv[:, :, top : top + content.shape[2], left : left + content.shape[3]] = content
    return qkv


@pytest.mark.parametrize("impl", ALL_CPU_IMPLS)
def test_relative_attention_is_translation_equivariant(impl):
    torch.manual_seed(6)
    attn = RelativeAttention2d(dk=4, dv=4, num_heads=1, relative=True, max_size=10, impl=impl).double()
    content = torch.randn(1, 12, 3, 4, dtype=f64)
    qkv = _masked_background_qkv(content, 8, 9, top=2, left=2, dk=4)
    qkv[:, 0] = 1.0  # q[0] = 1 at every position, content included
    out = attn(qkv)
    for dy, dx in [(1, 2), (-2, -1), (2, -2)]:
        shifted_out = attn(torch.roll(qkv, (dy, dx), dims=(2, 3)))
        torch.testing.assert_close(shifted_out[:, :, 2 + dy : 5 + dy, 2 + dx : 6 + dx], out[:, :, 2:5, 2:6])
    with torch.no_grad():  # the relative terms do shape the output being compared
        attn.rel_width.zero_()
    assert not torch.allclose(attn(qkv), out)


def test_aaconv_without_position_encoding_is_permutation_equivariant():
    torch.manual_seed(7)
    layer = AAConv2d(6, 10, 1, dk=8, dv=6, num_heads=2, relative=False).double()
    x = torch.randn(2, 6, 4, 5, dtype=f64)
    perm = torch.randperm(20)
    permuted = x.flatten(2)[:, :, perm].view_as(x)
    expected = layer(x).flatten(2)[:, :, perm].view(2, 10, 4, 5)
    torch.testing.assert_close(layer(permuted), expected)


def test_relative_encoding_breaks_permutation_equivariance():
    torch.manual_seed(7)
    layer = AAConv2d(6, 10, 1, dk=8, dv=6, num_heads=2, relative=True).double()
    x = torch.randn(2, 6, 4, 5, dtype=f64)
    perm = torch.randperm(20)
    permuted = x.flatten(2)[:, :, perm].view_as(x)
    expected = layer(x).flatten(2)[:, :, perm].view(2, 10, 4, 5)
    assert not torch.allclose(layer(permuted), expected)


@pytest.mark.parametrize("impl", ALL_CPU_IMPLS)
def test_gradients_reach_every_parameter(impl):
    torch.manual_seed(8)
    layer = AAConv2d(6, 12, 3, 2, dk=8, dv=4, num_heads=2, impl=impl, max_size=6)
    _, grads = _param_grads(layer, torch.randn(2, 6, 7, 6, requires_grad=True))
    names = [n for n, _ in layer.named_parameters()]
    assert {"attention.rel_width", "attention.rel_height"} <= set(names)
    for name, grad in zip(names, grads[1:], strict=True):
        assert grad is not None and grad.abs().sum() > 0, name
    # a map of H x W trains exactly the 2W-1 / 2H-1 central rows (4x3 after the stride)
    rows_w = (dict(zip(names, grads[1:], strict=True))["attention.rel_width"].abs().sum(1) > 0).nonzero().flatten()
    assert rows_w.tolist() == list(range(5 - 2, 5 + 3))


def test_parameter_count_matches_formula():
    cin, cout, k, dk, dv, heads, max_size = 16, 32, 3, 16, 8, 4, 20
    layer = AAConv2d(cin, cout, k, dk=dk, dv=dv, num_heads=heads, max_size=max_size)
    expected = (
        (cout - dv) * cin * k * k  # conv branch, no bias
        + cin * (2 * dk + dv)
        + (2 * dk + dv)  # qkv 1x1 with bias
        + dv * dv
        + dv  # output projection with bias
        + 2 * (2 * max_size - 1) * (dk // heads)  # rW, rH shared across heads
    )
    assert sum(p.numel() for p in layer.parameters()) == expected
    plain = AAConv2d(cin, cout, k, dk=dk, dv=dv, num_heads=heads, relative=False)
    assert sum(p.numel() for p in plain.parameters()) == expected - 2 * (2 * max_size - 1) * (dk // heads)


def test_relative_table_init_std():
    torch.manual_seed(9)
    attn = RelativeAttention2d(dk=8 * 16, dv=8, num_heads=8, max_size=256)
    assert attn.rel_width.std().item() == pytest.approx(16**-0.5, rel=0.05)
    assert attn.rel_width.mean().abs().item() < 0.01


def test_variable_sizes_within_and_beyond_max_size():
    layer = AAConv2d(4, 16, 3, dk=8, dv=8, num_heads=2, max_size=9)
    for size in [(3, 9), (9, 2), (5, 5), (4, 10), (12, 11)]:  # beyond 9: clipped offsets (test_relative_tables.py)
        assert layer(torch.randn(1, 4, *size)).shape == (1, 16, *size)


def test_fully_attentional_layer_has_no_conv_branch():
    layer = AAConv2d(8, 16, 3, 2, dk=16, dv=16, num_heads=8)
    assert layer.conv is None
    assert layer(torch.randn(2, 8, 7, 8)).shape == (2, 16, 4, 4)


def test_conv_builder_and_groups():
    layer = AAConv2d(8, 16, 3, dk=8, dv=8, num_heads=2, conv_builder=lambda *a: AWConv2d(*a[:4], groups=a[4]))
    assert isinstance(layer.conv, AWConv2d)
    assert layer(torch.randn(2, 8, 5, 5)).shape == (2, 16, 5, 5)
    grouped = AAConv2d(8, 16, 3, dk=8, dv=8, num_heads=2, groups=2)
    assert grouped.conv.groups == 2
    with pytest.raises(ValueError, match="depthwise"):
        AAConv2d(16, 16, 3, dk=8, dv=8, num_heads=2, groups=16)


def test_torch_compile_matches_eager():
    torch.manual_seed(10)
    layer = AAConv2d(4, 8, 3, dk=8, dv=4, num_heads=2)
    x = torch.randn(2, 4, 5, 6)
    compiled = torch.compile(layer, backend="inductor")
    torch.testing.assert_close(compiled(x), layer(x), rtol=1e-4, atol=1e-5)


def _saved_tensor_numels(layer, x):
    numels = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: numels.append(t.numel()) or t, lambda t: t):
        layer(x).sum().backward()
    return numels


def test_fused_and_chunked_paths_keep_no_hw_by_hw_tensor_for_backward():
    """The fused path must stay on an SDPA kernel that saves O(HW) tensors (DESIGN.md: with unequal
    q/k and v head dims SDPA silently falls back to the math path, which saves the HW x HW weights); the
    chunked path keeps the probabilities only when one chunk covers every query."""
    layer = AAConv2d(8, 16, 3, dk=16, dv=8, num_heads=1)
    x = torch.randn(1, 8, 12, 10, requires_grad=True)
    positions = 12 * 10
    layer.impl = "reference"
    assert max(_saved_tensor_numels(layer, x)) >= positions**2  # the check can see such a tensor
    layer.impl = "chunked"
    assert max(_saved_tensor_numels(layer, x)) == positions**2  # one chunk: its probabilities are kept
    layer.impl = "fused"
    assert max(_saved_tensor_numels(layer, x)) < positions**2
    layer.impl, layer.attention.query_chunk = "chunked", 16  # 8 chunks: recomputed in the backward
    assert max(_saved_tensor_numels(layer, x)) < positions**2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("options", [{}, {"memory_pool": True, "coordconv": True}], ids=["plain", "pool+coords"])
@pytest.mark.parametrize("impl", [impl for impl in TRAINABLE_IMPLS["cuda"] if impl not in ("reference", "flex")])
def test_formulations_match_reference_on_cuda(impl, dtype, options):
    torch.manual_seed(11)
    layer = AAConv2d(16, 32, 3, dk=16, dv=16, num_heads=4, **options).cuda().to(dtype)
    x = torch.randn(2, 16, 9, 13, device="cuda", dtype=dtype)
    layer.impl = "reference"
    expected = layer(x).float()
    layer.impl = impl
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(layer(x).float(), expected, rtol=tol, atol=tol)


def test_sine_embedding_matches_formula():
    channels, height, width = 10, 3, 4  # half = 5: two (sin, cos) pairs per axis and one zero channel
    emb = sine_embedding_2d(channels, height, width, dtype=f64)
    for c in range(channels):
        axis, i = divmod(c, 5)
        for y in range(height):
            for x in range(width):
                pos = (y, x)[axis]
                if i == 4:
                    expected = 0.0
                else:
                    angle = pos / 10000 ** (2 * (i // 2) / 5)
                    expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
                assert emb[c, y, x].item() == pytest.approx(expected, abs=1e-12)


def test_sine_encoding_adds_position_to_the_attention_input():
    torch.manual_seed(12)
    layer = AAConv2d(6, 10, 1, dk=8, dv=6, num_heads=2, relative=False, sine=True).double()
    x = torch.randn(2, 6, 4, 5, dtype=f64)
    manual = layer.proj(layer.attention(layer.qkv(x + sine_embedding_2d(6, 4, 5, dtype=f64))))
    torch.testing.assert_close(layer(x)[:, 4:], manual)
    perm = torch.randperm(20)
    permuted = x.flatten(2)[:, :, perm].view_as(x)
    assert not torch.allclose(layer(permuted), layer(x).flatten(2)[:, :, perm].view(2, 10, 4, 5))


@pytest.mark.parametrize("impl", ALL_CPU_IMPLS)
@pytest.mark.parametrize("stride,stride_mode", [(1, "avgpool"), (2, "avgpool"), (2, "qkv")])
def test_memory_pool_is_pool_then_attention_then_bilinear_upsample(impl, stride, stride_mode):
    torch.manual_seed(13)
    layer = AAConv2d(
        6, 12, 3, stride, dk=8, dv=4, num_heads=2, impl=impl, stride_mode=stride_mode, memory_pool=True, max_size=8
    ).double()
    x = torch.randn(2, 6, 9, 11, dtype=f64)
    inputs = F.avg_pool2d(x, 3, stride, 1, count_include_pad=False) if stride_mode == "avgpool" and stride > 1 else x
    conv = layer.conv(x)
    attention = brute_attention_branch(layer, avg_pool_3x3_s2(inputs))  # "qkv": layer.qkv strides the pooled map
    attention = F.interpolate(attention, size=conv.shape[2:], mode="bilinear", align_corners=False)
    out = layer(x)
    assert out.shape == nn.Conv2d(6, 12, 3, stride, padding=1)(x.float()).shape
    torch.testing.assert_close(out, torch.cat([conv, attention], 1))


def test_memory_pool_reads_the_tables_at_the_pooled_size():
    layer = AAConv2d(4, 16, 3, dk=8, dv=8, num_heads=2, memory_pool=True, max_size=5)
    captured = []
    layer.attention.register_forward_hook(lambda module, args, out: captured.append(args[0].shape[2:]))
    assert layer(torch.randn(1, 4, 10, 9)).shape == (1, 16, 10, 9)
    assert layer(torch.randn(1, 4, 12, 9)).shape == (1, 16, 12, 9)
    assert captured == [(5, 5), (6, 5)]  # 6 > max_size: clipped offsets (test_relative_tables.py)


def test_coordinate_channels_match_formula():
    coords = coordinate_channels(2, 3, 5, dtype=f64)
    assert coords.shape == (2, 2, 3, 5)
    for y in range(3):
        for x in range(5):
            assert coords[1, 0, y, x].item() == pytest.approx(-1 + 2 * y / 2)
            assert coords[1, 1, y, x].item() == pytest.approx(-1 + 2 * x / 4)


def test_coordconv_concatenates_coordinates_to_the_attention_input():
    torch.manual_seed(14)
    layer = AAConv2d(6, 10, 3, 2, dk=8, dv=6, num_heads=2, relative=False, coordconv=True).double()
    assert layer.qkv.in_channels == 6 + 2
    x = torch.randn(2, 6, 7, 9, dtype=f64)
    pooled = avg_pool_3x3_s2(x)  # 4 x 5
    ys = torch.linspace(-1, 1, 4, dtype=f64)[:, None].expand(4, 5)
    xs = torch.linspace(-1, 1, 5, dtype=f64)[None, :].expand(4, 5)
    inputs = torch.cat([pooled, torch.stack([ys, xs]).expand(2, -1, -1, -1)], 1)
    torch.testing.assert_close(layer(x)[:, 4:], brute_attention_branch(layer, inputs))
    square = torch.randn(2, 6, 5, 5, dtype=f64)  # odd: the 3x3/2 pool samples symmetric positions
    flipped = square.flip(-1)
    assert not torch.allclose(layer(flipped).flip(-1)[:, 4:], layer(square)[:, 4:])  # position now matters
    with torch.no_grad():
        layer.qkv.weight[:, 6:] = 0.0  # ...and only through the coordinate channels
    torch.testing.assert_close(layer(flipped).flip(-1)[:, 4:], layer(square)[:, 4:])


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("height,width", [(3, 5), (6, 2)])
def test_flex_forward_matches_brute_force(relative, height, width):
    """flex_attention's score_mod path (forward only on CPU: this torch has no flex backward there)."""
    g = torch.Generator().manual_seed(13)
    q, k = (torch.randn(2, 3, height * width, 5, dtype=f64, generator=g) for _ in range(2))
    v = torch.randn(2, 3, height * width, 4, dtype=f64, generator=g)
    rel_w = torch.randn(2 * width - 1, 5, dtype=f64, generator=g) if relative else None
    rel_h = torch.randn(2 * height - 1, 5, dtype=f64, generator=g) if relative else None
    out = attention_flex(q, k, v, torch.cat([rel_w, rel_h]) if relative else None, height, width)
    torch.testing.assert_close(out, brute_attention(q, k, v, rel_w, rel_h, height, width))


def test_auto_impl_rule():
    """CPU: chunked at every size; CUDA: fused while dk_h + H + W (padded to 8) fits flash's 256, else flex."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for head_dim, height, width in [(32, 14, 14), (20, 20, 20), (13, 100, 168)]:
        assert auto_impl(cpu, head_dim, height, width) == "chunked"
    assert auto_impl(cuda, 13, 28, 28) == "fused"
    assert auto_impl(cuda, 20, 100, 136) == "fused"  # 256 exactly
    assert auto_impl(cuda, 21, 100, 136) == "flex"
    layer = AAConv2d(6, 12, 3, dk=8, dv=4, num_heads=2, max_size=8).double()
    x = torch.randn(2, 6, 5, 7, dtype=f64)
    auto = layer(x)
    layer.impl = "chunked"
    torch.testing.assert_close(auto, layer(x), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("relative,size,dk_h", [(True, (9, 13), 3), (True, (16, 16), 20), (False, (9, 13), 20)])
def test_flex_matches_reference_forward_backward_on_cuda(relative, size, dk_h):
    torch.manual_seed(14)
    layer = AAConv2d(16, 32, 3, dk=4 * dk_h, dv=16, num_heads=4, relative=relative, max_size=16).cuda()
    x = torch.randn(2, 16, *size, device="cuda", requires_grad=True)
    weights = torch.randn(2, 32, *size, device="cuda")
    results = {}
    for impl in ("reference", "flex"):
        layer.impl = impl
        out = layer(x)
        results[impl] = (out, *torch.autograd.grad((out * weights).sum(), [x, *layer.parameters()]))
    for got, expected in zip(results["flex"], results["reference"], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


# (H, W, dk_h): AA-ResNet-50's attention maps at 224 px (layer2-4: 28, 14, 7; dk_h 3, 6, 13 at kappa 0.2,
# 20 with min_dk_per_head=20) and RetinaNet's stride-16 / stride-32 maps at 800x1333 within flash's limit.
IMAGENET_AND_DETECTION_MAPS = [
    (28, 28, 3),
    (28, 28, 20),
    (14, 14, 6),
    (14, 14, 20),
    (7, 7, 13),
    (7, 7, 20),
    (50, 84, 13),
    (25, 42, 20),
]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("height,width,dk_h", IMAGENET_AND_DETECTION_MAPS)
def test_fused_path_never_lands_on_the_math_backend(dtype, height, width, dk_h):
    """With the math backend excluded, SDPA raises instead of falling back: the fused path (forward and
    backward) must run on flash, memory-efficient or cuDNN attention at every size it meets."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator(device="cuda").manual_seed(15)
    positions = height * width
    q, k = (torch.randn(4, 8, positions, dk_h, device="cuda", dtype=dtype, generator=g) for _ in range(2))
    v = torch.randn(4, 8, positions, 8, device="cuda", dtype=dtype, generator=g)
    rel_w = torch.randn(2 * width - 1, dk_h, device="cuda", dtype=dtype, generator=g)
    rel_h = torch.randn(2 * height - 1, dk_h, device="cuda", dtype=dtype, generator=g)
    q.requires_grad_(True)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        out = attention_fused(q, k, v, torch.cat([rel_w, rel_h]), height, width)
        out.float().square().sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ["fused", "flex"])
def test_bf16_relative_logits_match_fp32_on_cuda(impl):
    """The relative tables are cast to the activations' dtype: in bf16 the attention output stays within
    bf16 rounding of the fp32 result (the tables themselves stay fp32 parameters)."""
    torch.manual_seed(16)
    layer = AAConv2d(32, 64, 3, dk=64, dv=32, num_heads=4, impl=impl, max_size=32).cuda()
    x = torch.randn(2, 32, 28, 28, device="cuda")
    expected = layer(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = layer(x)
    assert layer.attention.rel_width.dtype == torch.float32
    torch.testing.assert_close(low.float(), expected, rtol=3e-2, atol=3e-2)
