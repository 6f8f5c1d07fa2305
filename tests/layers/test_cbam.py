"""CBAM against a hand-written reference of Woo et al. 2018 (arXiv 1807.06521), and through the part registry."""

import pytest
import torch
import torch.nn.functional as F

from aaconv.layers import VARIANTS, create_attention
from aaconv.layers.cbam import CBAM


def reference_cbam(x: torch.Tensor, cbam: CBAM) -> torch.Tensor:
    """F' = M_c(F) F, F'' = M_s(F') F' with the module's weights, written out with functional ops."""
    w1, b1 = cbam.fc1.weight.flatten(1), cbam.fc1.bias
    w2, b2 = cbam.fc2.weight.flatten(1), cbam.fc2.bias

    def mlp(v):  # (B, C) -> (B, C)
        return F.linear(F.relu(F.linear(v, w1, b1)), w2, b2)

    channel = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.flatten(2).max(2).values))
    x = x * channel[:, :, None, None]
    maps = torch.stack([x.mean(1), x.max(1).values], dim=1)
    bn = cbam.spatial_bn
    logits = F.conv2d(maps, cbam.spatial_conv.weight, padding=cbam.spatial_conv.padding)
    logits = (logits - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
    logits = logits * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    return x * torch.sigmoid(logits)


def test_matches_the_reference_and_gates_lie_in_zero_one():
    torch.manual_seed(0)
    cbam = CBAM(32, reduction=4).eval()
    torch.nn.init.normal_(cbam.spatial_bn.running_mean)
    cbam.spatial_bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 32, 9, 7)
    torch.testing.assert_close(cbam(x), reference_cbam(x, cbam), rtol=1e-5, atol=1e-6)
    gates = cbam.channel_gate(x), cbam.spatial_gate(x)
    assert gates[0].shape == (3, 32, 1, 1) and gates[1].shape == (3, 1, 9, 7)
    assert all(((g > 0) & (g < 1)).all() for g in gates)


def test_hidden_width_and_parameters():
    cbam = CBAM(256)  # the paper's r = 16: 256 -> 16 -> 256, plus a 2 -> 1 7x7 conv and its BN
    assert cbam.fc1.out_channels == 16
    assert sum(p.numel() for p in cbam.parameters()) == (256 * 16 + 16) + (16 * 256 + 256) + 2 * 49 + 2
    assert CBAM(256, rd_channels=10).fc1.out_channels == 10


@pytest.mark.parametrize("variant", [v for v in VARIANTS if "cbam" in v.split("+")])
def test_cbam_variants_build_cbam_after_the_block(variant):
    attention = create_attention(variant, cbam={"reduction": 8})
    module = attention.post()(64, hidden=5)
    assert isinstance(module, CBAM) and module.fc1.out_channels == 5
    assert isinstance(attention.post()(64), CBAM) and attention.post()(64).fc1.out_channels == 8


@pytest.mark.parametrize(
    ("options", "message"),
    [({"reduction": 0}, "reduction=0.0 is not valid"), ({"spatial_kernel": 4}, "an odd positive integer")],
)
def test_bad_options_are_one_line(options, message):
    with pytest.raises(ValueError, match=message):
        create_attention({"variant": "cbam", "cbam": options})
