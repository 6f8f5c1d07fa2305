"""AWConv2d against per-sample brute force written from papers.md section 2 and a plain nn.Conv2d."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aaconv.layers import AWConv2d
from aaconv.layers.aw import AW_IMPLS

f64 = torch.float64
IMPLS = [impl for impl in AW_IMPLS if impl != "auto"]  # every formulation, each against the brute force
GROUPS_IMPLS = [impl for impl in IMPLS if impl not in ("unfold", "per_sample")]  # those taking groups > 1


def pointwise(conv, x):
    """A 1x1 conv with bias on a (C, k, k) map, as a matrix product."""
    return torch.einsum("oc,cij->oij", conv.weight[:, :, 0, 0], x) + conv.bias[:, None, None]


def brute_aw(layer, x):
    """Sample by sample: A from the formula, W' = K * A + K, one ordinary conv per sample."""
    conv = layer.conv
    k = conv.kernel_size[0]
    cout, cin_g = conv.weight.shape[:2]
    cin, maps, groups = x.shape[1], layer.num_maps, conv.groups
    outs = []
    for xb in x:
        h, w = xb.shape[1:]
        pooled = xb.view(cin, k, h // k, k, w // k).mean((2, 4))  # AvgPool to k x k (H, W multiples of k)
        hidden = torch.relu(pointwise(layer.fc1, pooled))
        attn = pointwise(layer.fc2, hidden)
        attn = attn.sigmoid() if layer.gate == "sigmoid" else attn
        attn = attn.view(maps, cin, k, k)
        kernel = torch.empty_like(conv.weight)
        for o in range(cout):
            channels = slice(o // (cout // groups) * cin_g, (o // (cout // groups) + 1) * cin_g)
            a = attn[o // (cout // maps), channels]
            kernel[o] = conv.weight[o] * a + conv.weight[o]
        outs.append(F.conv2d(xb[None], kernel, stride=conv.stride, padding=k // 2, groups=groups))
    return torch.cat(outs)


def brute_gradients(layer, x):
    """Input and parameter gradients of (brute_aw(x)^2).sum(), through the sample-by-sample loop."""
    out = brute_aw(layer, x)
    return out, torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("stride,maps,gate", [(1, 1, "sigmoid"), (2, 4, "none"), (1, 8, "sigmoid")])
def test_matches_per_sample_brute_force(impl, stride, maps, gate):
    torch.manual_seed(0)
    layer = AWConv2d(6, 8, 3, stride, reduction=2, num_maps=maps, gate=gate, impl=impl).double()
    x = torch.randn(3, 6, 6, 9, dtype=f64)
    torch.testing.assert_close(layer(x), brute_aw(layer, x))


@pytest.mark.parametrize("impl", GROUPS_IMPLS)
@pytest.mark.parametrize("groups", [2, 6])
def test_grouped_and_depthwise_match_brute_force(impl, groups):
    torch.manual_seed(1)
    layer = AWConv2d(6, 6 * (2 if groups == 2 else 1), 3, reduction=2, num_maps=2, groups=groups, impl=impl)
    layer = layer.double()
    x = torch.randn(2, 6, 6, 6, dtype=f64, requires_grad=True)
    expected_out, expected_grads = brute_gradients(layer, x)
    out = layer(x)
    torch.testing.assert_close(out, expected_out)
    for got, expected in zip(
        torch.autograd.grad(out.square().sum(), [x, *layer.parameters()]), expected_grads, strict=True
    ):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("impl", IMPLS)
def test_samples_are_independent(impl):
    torch.manual_seed(2)
    layer = AWConv2d(4, 8, 3, reduction=2, num_maps=2, impl=impl).double()
    x = torch.randn(2, 4, 5, 7, dtype=f64)
    together = layer(x)
    torch.testing.assert_close(together, torch.cat([layer(x[:1]), layer(x[1:])]))
    assert not torch.allclose(together[0], together[1])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("gate,factor", [("none", 1.0), ("sigmoid", 1.5)])
def test_zeroed_generator_is_plain_conv(impl, gate, factor):
    torch.manual_seed(3)
    layer = AWConv2d(4, 8, 3, 2, reduction=2, num_maps=4, gate=gate, impl=impl).double()
    nn.init.zeros_(layer.fc2.weight)
    nn.init.zeros_(layer.fc2.bias)
    plain = nn.Conv2d(4, 8, 3, 2, padding=1, bias=False).double()
    with torch.no_grad():
        plain.weight.copy_(layer.conv.weight * factor)  # A = 0 -> K; sigmoid(0) = 0.5 -> 1.5 K
    x = torch.randn(2, 4, 7, 6, dtype=f64)
    torch.testing.assert_close(layer(x), plain(x))


@pytest.mark.parametrize("impl", [*IMPLS, "auto"])
@pytest.mark.parametrize("stride,maps,size", [(2, 2, (6, 9)), (1, 4, (3, 3)), (1, 1, (12, 6)), (2, 1, (3, 3))])
def test_outputs_and_gradients_match_brute_force(impl, stride, maps, size):
    torch.manual_seed(4)
    layer = AWConv2d(6, 8, 3, stride, reduction=3, num_maps=maps, impl=impl).double()
    x = torch.randn(2, 6, *size, dtype=f64, requires_grad=True)
    expected_out, expected_grads = brute_gradients(layer, x)
    out = layer(x)
    torch.testing.assert_close(out, expected_out)
    for got, expected in zip(
        torch.autograd.grad(out.square().sum(), [x, *layer.parameters()]), expected_grads, strict=True
    ):
        torch.testing.assert_close(got, expected)
        assert got.abs().sum() > 0


@pytest.mark.parametrize("impl,groups", [*((impl, 1) for impl in IMPLS), *((impl, 2) for impl in GROUPS_IMPLS)])
def test_channels_last_matches_contiguous(impl, groups):
    """A channels_last layer and input (trainer.channels_last) give the contiguous outputs and gradients."""
    torch.manual_seed(5)
    layer = AWConv2d(6, 8, 3, 2, reduction=3, num_maps=2, groups=groups, impl=impl).double()
    x = torch.randn(2, 6, 6, 9, dtype=f64, requires_grad=True)
    expected_out, expected_grads = brute_gradients(layer, x)
    layer = layer.to(memory_format=torch.channels_last)
    assert layer.conv.weight.is_contiguous(memory_format=torch.channels_last)
    x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    out = layer(x_cl)
    torch.testing.assert_close(out, expected_out)
    for got, expected in zip(
        torch.autograd.grad(out.square().sum(), [x_cl, *layer.parameters()]), expected_grads, strict=True
    ):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_autocast_matches_float32(impl):
    """Under CPU autocast (bf16 convs) every formulation's output and the input's and kernel's gradients stay within
    bf16 rounding of fp32 (norms within 5%; the tiny generator's gradients, sums of cancelling bf16 products, are
    only checked finite), every gradient in its tensor's own dtype (per_sample's hand-written backward casts back)."""
    torch.manual_seed(6)
    layer = AWConv2d(8, 8, 3, reduction=2, num_maps=2, impl=impl)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    expected = layer(x)
    expected_grads = torch.autograd.grad(expected.sum(), [x, *layer.parameters()])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    grads = torch.autograd.grad(out.float().sum(), [x, *layer.parameters()])
    torch.testing.assert_close(out.float(), expected, rtol=5e-2, atol=5e-2)
    assert all(g.dtype == torch.float32 and g.isfinite().all() for g in grads)
    for got, want in zip(grads[:2], expected_grads[:2], strict=True):  # the input's and the kernel K's
        assert (got - want).norm() <= 5e-2 * want.norm()  # bf16 rounding, measured as a whole


def test_auto_picks_per_stage_shape():
    """C_out > M * L_out: unfold (ResNet-50's layer4 at 160 / 224 px); else per_sample up to 256 output positions
    (layer3), grouped beyond (layer1, layer2); groups > 1: grouped."""
    layer = AWConv2d(512, 512, 3, num_maps=4)
    assert [layer.resolve_impl(s) for s in [(5, 5), (7, 7), (11, 11), (12, 12), (16, 16), (17, 17), (40, 40)]] == [
        "unfold",
        "unfold",
        "unfold",
        "per_sample",
        "per_sample",
        "grouped",
        "grouped",
    ]
    assert AWConv2d(256, 256, 3, 2, num_maps=4).resolve_impl((16, 16)) == "per_sample"  # 8x8 out: 256 = 4 * 64
    assert AWConv2d(256, 256, 3, 2, num_maps=4).resolve_impl((14, 14)) == "unfold"  # 7x7 out
    assert AWConv2d(256, 256, 3, num_maps=4).resolve_impl((10, 10)) == "per_sample"
    assert AWConv2d(128, 128, 3, num_maps=4).resolve_impl((20, 20)) == "grouped"
    assert AWConv2d(8, 8, 3, num_maps=2, groups=8).resolve_impl((2, 2)) == "grouped"
    layer.impl = "grouped"
    assert layer.resolve_impl((5, 5)) == "grouped"


def test_parameter_count_matches_formula():
    cin, cout, k, r, maps = 32, 64, 3, 16, 4
    layer = AWConv2d(cin, cout, k, reduction=r, num_maps=maps)
    hidden = cin // r
    expected = cout * cin * k * k + (cin * hidden + hidden) + (hidden * maps * cin + maps * cin)
    assert sum(p.numel() for p in layer.parameters()) == expected


def test_invalid_options():
    with pytest.raises(ValueError, match="num_maps"):
        AWConv2d(4, 6, 3, num_maps=4)
    for impl in ("unfold", "per_sample"):
        with pytest.raises(ValueError, match="groups=1"):
            AWConv2d(4, 4, 3, groups=4, impl=impl)
    with pytest.raises(ValueError, match="gate"):
        AWConv2d(4, 4, 3, gate="tanh")


def test_torch_compile_matches_eager():
    torch.manual_seed(5)
    layer = AWConv2d(4, 8, 3, reduction=2, num_maps=2)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(torch.compile(layer)(x), layer(x), rtol=1e-4, atol=1e-5)
