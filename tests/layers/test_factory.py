"""create_attention: variant parsing, the builders' contract, AA depth rounding."""

import pytest
import torch
from torch import nn

from aaconv.layers import VARIANTS, AAConv2d, AWConv2d, SqueezeExcite, create_attention
from aaconv.layers.factory import AA_DEFAULTS, attention_depths, normalize_variant


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
    "out,kappa,upsilon,heads,min_dk_per_head,expected",
    [
        (128, 0.2, 0.1, 8, 0, (24, 16)),  # 25.6 -> 24, 12.8 -> 16
        (256, 0.2, 0.1, 8, 0, (48, 24)),  # 51.2 -> 48, 25.6 -> 24
        (512, 0.2, 0.1, 8, 0, (104, 48)),  # 102.4 -> 104, 51.2 -> 48
        (16, 0.2, 0.1, 8, 0, (8, 8)),  # at least one dim per head
        (64, 1.0, 1.0, 8, 0, (64, 64)),  # fully attentional
        (60, 1.0, 1.0, 8, 0, (64, 56)),  # dv capped so the conv branch keeps 4 channels
        (128, 0.2, 0.1, 8, 20, (160, 16)),  # the paper's minimum: 20 key dims per head; dv unchanged
        (512, 0.2, 0.1, 8, 20, (160, 48)),
        (1024, 0.2, 0.1, 8, 20, (208, 104)),  # 204.8 -> 208 > 160
        (144, 0.1, 0.05, 4, 0, (16, 8)),  # MnasNet's expansion conv: 14.4 -> 16, 7.2 -> 8
    ],
)
def test_attention_depths(out, kappa, upsilon, heads, min_dk_per_head, expected):
    assert attention_depths(out, kappa, upsilon, heads, min_dk_per_head) == expected


def test_aa_defaults_and_null_options():
    """The paper's ResNet rule by default; an option given as None falls back to its default."""
    assert AA_DEFAULTS == {"kappa": 0.2, "upsilon": 0.1, "num_heads": 8, "min_dk_per_head": 20}
    conv = create_attention("aa", aa={"kappa": None, "relative": None, "max_size": 8}).conv(16, 64, 3)
    attention = conv.attention
    assert (attention.dk, attention.dv, attention.num_heads) == (160, 8, 8)
    assert attention.rel_width.shape == (15, 20)  # relative tables widen to dk_h = 20 columns
    assert not conv.coordconv and not conv.memory_pool and not conv.sine
    today = create_attention("aa", aa={"min_dk_per_head": 0, "max_size": 8}).conv(16, 64, 3)
    assert today.attention.dk == 16 and today.attention.rel_width.shape == (15, 2)


def test_new_aa_options_pass_through_the_factory():
    conv = create_attention("aa", aa={"coordconv": True, "memory_pool": True}).conv(16, 64, 3)
    assert conv.coordconv and conv.memory_pool and conv.qkv.in_channels == 18
    assert conv(torch.randn(1, 16, 7, 6)).shape == (1, 64, 7, 6)


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
