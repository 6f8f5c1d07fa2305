"""create_attention: variant parsing, option checks, the convs and post modules it builds per site."""

import pytest
import torch
from torch import nn

from aaconv.layers import VARIANTS, AAConv2d, AWConv2d, ConvSite, create_attention, parts
from aaconv.layers.aa import AAOptions, attention_depths


@pytest.mark.parametrize(
    "spelling,canonical", [("se+aw", "aw+se"), ("AA + SE", "aa+se"), ("aa+aw", "aw+aa"), ("none", "none")]
)
def test_parts_in_any_order(spelling, canonical):
    assert create_attention(spelling).name == canonical


@pytest.mark.parametrize("bad", ["bam", "aa+bam", "se+se", "none+se", "aw+aw", ""])
def test_bad_variants_are_one_line_naming_the_parts(bad):
    with pytest.raises(ValueError) as info:
        create_attention(bad)
    assert "\n" not in str(info.value)
    assert all(name in str(info.value) for name in parts())


def test_variants_are_every_combination_of_one_part_per_slot():
    slots = {name: part.slot for name, part in parts().items()}
    for variant in VARIANTS[1:]:
        names = variant.split("+")
        assert len({slots[n] for n in names}) == len(names)
        assert create_attention(variant).name == variant
    counts = {slot: sum(s == slot for s in slots.values()) for slot in ("conv", "wrap", "post")}
    assert len(VARIANTS) == (counts["conv"] + 1) * (counts["wrap"] + 1) * (counts["post"] + 1)


@pytest.mark.parametrize(
    "config,message",
    [
        ({"variant": "aa", "aa": {"kappa": 0}}, r"attention.aa.kappa=0.0 is not valid: it must be a number > 0"),
        (
            {"variant": "aw", "aw": {"reduction": "x"}},
            r"attention.aw.reduction='x' is not valid: it must be an integer",
        ),
        ({"variant": "aw", "aw": {"num_maps": 0}}, r"attention.aw.num_maps=0 is not valid"),
        ({"variant": "se", "se": {"reduction": 0}}, r"attention.se.reduction=0.0 is not valid"),
        ({"variant": "aa", "aa": {"kapa": 0.2}}, r"attention.aa.kapa is not an option of aa; valid: .*kappa"),
        ({"variant": "aa", "aa": {"replaces": ["depthwise"]}}, r"attention.aa.replaces=.* must be a non-empty list"),
        ({"variant": "none", "sse": {}}, r"is not a key of attention; valid: variant, "),
        ({"variant": "aa", "aw": {"gate": "tanh"}}, r"attention.aw.gate='tanh' is not valid: it must be one of"),
    ],
)
def test_options_are_checked_by_their_part(config, message):
    with pytest.raises(ValueError, match=message):
        create_attention(config)


def test_null_options_take_the_defaults_and_defaults_yield_to_the_config():
    attention = create_attention(
        {"variant": "aa", "aa": {"kappa": None, "num_heads": 4}}, defaults={"aa": {"kappa": 0.5}}
    )
    assert attention.options["aa"] == AAOptions(kappa=0.5, num_heads=4)


@pytest.mark.parametrize("variant", ["none", "se"])
def test_plain_conv_is_torchvision_conv3x3(variant):
    conv = create_attention(variant).conv()(64, 128, 3, 2)
    assert type(conv) is nn.Conv2d
    assert (conv.kernel_size, conv.stride, conv.padding, conv.groups) == ((3, 3), (2, 2), (1, 1), 1)
    assert conv.bias is None
    assert list(conv.state_dict()) == ["weight"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("stride", [1, 2])
def test_every_variant_builds_its_parts_and_keeps_the_conv_output_shape(variant, stride):
    attention = create_attention(variant, aa={"max_size": 16})
    conv = attention.conv()(16, 32, 3, stride)
    x = torch.randn(2, 16, 7, 6)
    out = conv(x)
    assert out.shape == nn.Conv2d(16, 32, 3, stride, padding=1)(x).shape
    built = {type(m) for m in conv.modules()}
    post = attention.post()
    if post is not None:
        module = post(32)
        assert module(out).shape == out.shape
        built |= {type(m) for m in module.modules()}
    for part in attention.parts:
        assert set(part.modules) & built, f"{part.name} built none of {part.modules}"
    assert attention.placed == {part.name for part in attention.parts}


def test_variant_types_and_options():
    aa = create_attention("aa", aa={"num_heads": 4, "relative": False}).conv()(16, 40, 3)
    assert isinstance(aa, AAConv2d) and aa.attention.num_heads == 4 and aa.attention.rel_width is None
    aw_aa = create_attention("aa+aw", aw={"num_maps": 2}).conv()(16, 40, 3)
    assert isinstance(aw_aa, AAConv2d) and isinstance(aw_aa.conv, AWConv2d) and aw_aa.conv.num_maps == 2
    aw = create_attention("aw+se", aw={"gate": "none"}, se={"reduction": 4})
    assert isinstance(aw.conv()(16, 32, 3), AWConv2d) and aw.post()(32).fc1.out_channels == 8
    assert aw.post()(32, hidden=5).fc1.out_channels == 5  # a backbone's hidden width (MnasNet's se_ratio)


def test_sites_decide_where_each_part_goes():
    attention = create_attention("aw+aa", aa={"basic_block_convs": [1], "memory_pool_stages": [2], "max_size": 8})
    first, second = (attention.conv(ConvSite(stage=2, size=8, index=i))(16, 32, 3) for i in (1, 2))
    assert isinstance(first, AAConv2d) and first.memory_pool and isinstance(first.conv, AWConv2d)
    assert isinstance(second, AWConv2d)  # AA takes only the block's first conv; AW takes both
    assert not attention.conv(ConvSite(stage=3, size=8))(16, 32, 3).memory_pool
    expansion = attention.conv(ConvSite(stage=2, size=8, role="expansion"))(16, 32, 1)
    assert type(expansion) is nn.Conv2d  # neither part replaces expansion convs by default
    mnasnet_aa = create_attention("aa", aa={"replaces": ["expansion"], "max_size": 8})
    assert type(mnasnet_aa.conv(ConvSite(stage=2))(16, 16, 3, groups=16)) is nn.Conv2d
    assert isinstance(mnasnet_aa.conv(ConvSite(stage=2, role="expansion"))(16, 32, 1), AAConv2d)


def test_relative_tables_cover_the_site_and_halve_where_pooled():
    attention = create_attention("aa", aa={"memory_pool_stages": [2]})
    assert attention.conv(ConvSite(stage=3, size=14))(16, 64, 3).attention.max_size == 14
    assert attention.conv(ConvSite(stage=2, size=27))(16, 64, 3).attention.max_size == 14
    explicit = create_attention("aa", aa={"max_size": 40})
    assert explicit.conv(ConvSite(stage=2, size=27))(16, 64, 3).attention.max_size == 40


def test_a_part_that_found_no_conv_is_refused():
    attention = create_attention("aa", aa={"basic_block_convs": [3]})
    attention.conv(ConvSite(stage=1, index=1))
    with pytest.raises(ValueError, match="attention part aa found no conv to take in toy"):
        attention.check_placed("toy")


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
    defaults = AAOptions()
    assert (defaults.kappa, defaults.upsilon, defaults.num_heads, defaults.min_dk_per_head) == (0.2, 0.1, 8, 20)
    conv = create_attention("aa", aa={"kappa": None, "relative": None, "max_size": 8}).conv()(16, 64, 3)
    attention = conv.attention
    assert (attention.dk, attention.dv, attention.num_heads) == (160, 8, 8)
    assert attention.rel_width.shape == (15, 20)  # relative tables widen to dk_h = 20 columns
    assert not conv.coordconv and not conv.memory_pool and not conv.sine
    today = create_attention("aa", aa={"min_dk_per_head": 0, "max_size": 8}).conv()(16, 64, 3)
    assert today.attention.dk == 16 and today.attention.rel_width.shape == (15, 2)


def test_aa_layer_options_pass_through_the_factory():
    conv = create_attention("aa", aa={"coordconv": True, "memory_pool_stages": [1]}).conv(ConvSite(stage=1))(16, 64, 3)
    assert conv.coordconv and conv.memory_pool and conv.qkv.in_channels == 18
    assert conv(torch.randn(1, 16, 7, 6)).shape == (1, 64, 7, 6)


def test_fully_attentional_through_the_factory():
    conv = create_attention("aa", aa={"kappa": 1, "upsilon": 1}).conv()(32, 64, 3, 2)
    assert conv.conv is None
    assert conv(torch.randn(1, 32, 6, 6)).shape == (1, 64, 3, 3)


def test_groups():
    depthwise = create_attention("aw").conv()(16, 16, 3, 2, groups=16)
    assert depthwise(torch.randn(2, 16, 6, 6)).shape == (2, 16, 3, 3)
    assert create_attention("none").conv()(16, 16, 3, groups=16).groups == 16
    with pytest.raises(ValueError, match="depthwise"):
        create_attention("aa").conv()(16, 16, 3, groups=16)
    with pytest.raises(ValueError, match="num_heads"):
        create_attention("aa").conv()(16, 4, 3)
