"""create_attention: variant parsing, the builders' contract, AA depth rounding."""
import pytest
import torch
from torch import nn

from aaconv.layers import VARIANTS, AAConv2d, AWConv2d, SqueezeExcite, create_attention
from aaconv.layers.factory import attention_depths, normalize_variant


@pytest.mark.parametrize(
    "spelling,canonical", [("se+aw", "aw+se"), ("AA + SE", "aa+se"), ("aa+aw", "aw+aa"), ("none", "none")]
)
def test_parts_in_any_order(spelling, canonical):
    assert normalize_variant(spelling) == canonical


@pytest.mark.parametrize("bad", ["cbam", "aa+bam", "se+se", "none+se", "aw+aa+se", ""])
def test_unknown_variants_list_the_valid_ones(bad):
    with pytest.raises(ValueError) as info:
        create_attention(bad)
    assert all(v in str(info.value) for v in VARIANTS)


@pytest.mark.parametrize("variant", ["none", "se"])
def test_plain_conv_is_torchvision_conv3x3(variant):
    conv = create_attention(variant).conv(64, 128, 3, 2)
    assert type(conv) is nn.Conv2d
    assert (conv.kernel_size, conv.stride, conv.padding, conv.groups) == ((3, 3), (2, 2), (1, 1), 1)
    assert conv.bias is None
    assert list(conv.state_dict()) == ["weight"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("stride", [1, 2])
def test_every_variant_builds_and_keeps_the_conv_output_shape(variant, stride):
    builders = create_attention(variant, aa={"max_size": 16})
    conv = builders.conv(16, 32, 3, stride)
    x = torch.randn(2, 16, 7, 6)
    out = conv(x)
    assert out.shape == nn.Conv2d(16, 32, 3, stride, padding=1)(x).shape
    assert (builders.post is not None) == variant.endswith("se")
    if builders.post is not None:
        post = builders.post(32)
        assert isinstance(post, SqueezeExcite) and post(out).shape == out.shape


def test_variant_types_and_options():
    aa = create_attention("aa", aa={"num_heads": 4, "relative": False}).conv(16, 40, 3)
    assert isinstance(aa, AAConv2d) and aa.attention.num_heads == 4 and aa.attention.rel_width is None
    aw_aa = create_attention("aa+aw", aw={"num_maps": 2}).conv(16, 40, 3)
    assert isinstance(aw_aa, AAConv2d) and isinstance(aw_aa.conv, AWConv2d) and aw_aa.conv.num_maps == 2
    aw = create_attention("aw+se", aw={"gate": "none"}, se={"reduction": 4})
    assert isinstance(aw.conv(16, 32, 3), AWConv2d) and aw.post(32).fc1.out_channels == 8


@pytest.mark.parametrize(
    "out,kappa,upsilon,heads,expected",
    [
        (128, 0.2, 0.1, 8, (24, 16)),  # 25.6 -> 24, 12.8 -> 16
        (256, 0.2, 0.1, 8, (48, 24)),  # 51.2 -> 48, 25.6 -> 24
        (512, 0.2, 0.1, 8, (104, 48)),  # 102.4 -> 104, 51.2 -> 48
        (16, 0.2, 0.1, 8, (8, 8)),  # at least one dim per head
        (64, 1.0, 1.0, 8, (64, 64)),  # fully attentional
        (60, 1.0, 1.0, 8, (64, 56)),  # dv capped so the conv branch keeps 4 channels
    ],
)
def test_attention_depths(out, kappa, upsilon, heads, expected):
    assert attention_depths(out, kappa, upsilon, heads) == expected


def test_fully_attentional_through_the_factory():
    conv = create_attention("aa", aa={"kappa": 1, "upsilon": 1}).conv(32, 64, 3, 2)
    assert conv.conv is None
    assert conv(torch.randn(1, 32, 6, 6)).shape == (1, 64, 3, 3)


def test_groups():
    depthwise = create_attention("aw").conv(16, 16, 3, 2, groups=16)
    assert depthwise(torch.randn(2, 16, 6, 6)).shape == (2, 16, 3, 3)
    assert create_attention("none").conv(16, 16, 3, groups=16).groups == 16
    with pytest.raises(ValueError, match="depthwise"):
        create_attention("aa").conv(16, 16, 3, groups=16)
    with pytest.raises(ValueError, match="num_heads"):
        create_attention("aa").conv(16, 4, 3)
