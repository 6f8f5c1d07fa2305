"""The attention layers under torch.jit.script give the eager layers' outputs, in float64: TorchScript compiles the same
code (AA's reference formulation, AW's grouped one), no twin."""

import pytest
import torch

from aaconv.layers import AAConv2d, AWConv2d

f64 = torch.float64


def _scripted_matches(layer, x):
    layer = layer.to(f64).eval()
    with torch.no_grad():
        expected = layer(x)
        got = torch.jit.script(layer)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"stride": 2, "memory_pool": True},
        {"stride": 2, "stride_mode": "qkv", "relative": False},
        {"sine": True, "coordconv": True},
        {"dv": 16},  # fully attentional: no conv branch
    ],
    ids=["plain", "stride-memory-pool", "qkv-stride-no-relative", "sine-coordconv", "no-conv-branch"],
)
def test_aa_scripted_equals_eager(options):
    torch.manual_seed(0)
    options = {"dk": 8, "dv": 8, "num_heads": 2, "max_size": 12, **options}
    stride = options.pop("stride", 1)
    layer = AAConv2d(6, 16, 3, stride, **options)
    _scripted_matches(layer, torch.randn(2, 6, 11, 9, dtype=f64))


@pytest.mark.parametrize(("groups", "impl"), [(1, "grouped"), (1, "unfold"), (2, "grouped")])
def test_aw_scripted_equals_eager(groups, impl):
    torch.manual_seed(0)
    layer = AWConv2d(8, 12, 3, 2, reduction=4, num_maps=2, groups=groups, impl=impl)
    _scripted_matches(layer, torch.randn(3, 8, 10, 7, dtype=f64))


def test_scripted_aa_equals_eager_beyond_its_tables():
    torch.manual_seed(0)
    layer = AAConv2d(4, 8, 3, dk=4, dv=4, num_heads=2, max_size=3)
    _scripted_matches(layer, torch.randn(2, 4, 7, 5, dtype=f64))  # offsets up to 6 and 4 read clipped tables
