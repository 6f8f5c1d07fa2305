"""MnasNet-A1 (timm semnasnet) and -B1 (torchvision mnasnet): exact references, attention in the last 13 blocks."""

import pytest
import torch
import torchvision
from timm.models.efficientnet import _gen_mnasnet_a1

from aaconv.layers import VARIANTS, AAConv2d, AWConv2d, SqueezeExcite
from aaconv.models import create_model
from aaconv.models.mnasnet import InvertedResidual
from aaconv.models.pretrained import load_pretrained

WIDTHS = (0.5, 0.75, 1.0, 1.25, 1.4)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_reference_counts():
    assert count(create_model("mnasnet_a1")) == 3_887_038
    assert count(create_model("mnasnet_b1")) == 4_383_312


@pytest.mark.parametrize("width", WIDTHS)
def test_every_width_matches_its_reference(width):
    assert count(create_model("mnasnet_a1", width_mult=width)) == count(_gen_mnasnet_a1("semnasnet", width))
    assert count(create_model("mnasnet_b1", width_mult=width)) == count(torchvision.models.MNASNet(width))


def test_timm_a1_weights_give_identical_outputs():
    reference = _gen_mnasnet_a1("semnasnet", 1.0).eval()
    model = create_model("mnasnet_a1").eval()
    report = load_pretrained(model, reference.state_dict(), strict=True)
    assert report.loaded
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_torchvision_b1_weights_give_identical_outputs():
    reference = torchvision.models.mnasnet0_75(weights=None).eval()
    model = create_model("mnasnet_b1", width_mult=0.75).eval()
    load_pretrained(model, reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_aa_augments_the_expansion_conv_of_the_last_13_blocks():
    """Bello et al. 2019: AA in the expansion pointwise conv, kappa = 2 upsilon = 0.1, N_h = 4."""
    model = create_model("mnasnet_a1", "aa")
    blocks = [b for stage in model.blocks for b in stage]
    assert [isinstance(getattr(b, "conv_pw", None), AAConv2d) for b in blocks] == [False] * 3 + [True] * 13
    assert not any(isinstance(b.conv_dw, AAConv2d) for b in blocks)
    expand = model.blocks[3][0].conv_pw  # 40 -> 240 channels: dk = 0.1 * 240 = 24, dv = 0.05 * 240 = 12
    assert (expand.attention.dk, expand.attention.dv, expand.attention.num_heads) == (24, 12, 4)
    assert expand.conv.out_channels == 240 - 12 and expand.conv.kernel_size == (1, 1)


def test_aw_and_se_placement():
    model = create_model("mnasnet_b1", "aw+se")
    block = model.blocks[3][0]
    assert isinstance(block.conv_dw, AWConv2d) and block.conv_dw.conv.groups == block.conv_dw.conv.in_channels
    assert isinstance(block.post_attention, SqueezeExcite) and block.post_attention.fc1.out_channels == round(
        block.conv_pw.in_channels / 4
    )
    assert create_model("mnasnet_b1").blocks[3][0].post_attention is None


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", ["mnasnet_a1", "mnasnet_b1"])
def test_forward_backward_and_eval(name, variant):
    torch.manual_seed(0)
    model = create_model(name, variant, num_classes=4, width_mult=0.5, input_size=32)
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 4)


def test_zero_init_residual_makes_residual_blocks_start_as_identity() -> None:
    model = create_model("mnasnet_a1", num_classes=10, zero_init_residual=True).eval()
    residual = [m for m in model.modules() if isinstance(m, InvertedResidual) and m.residual]
    assert residual
    x = torch.randn(1, residual[0].conv_pw.in_channels, 8, 8)
    assert torch.equal(residual[0](x), x)
    plain = create_model("mnasnet_a1", num_classes=10)
    assert all(m.bn3.weight.abs().sum() > 0 for m in plain.modules() if isinstance(m, InvertedResidual))
