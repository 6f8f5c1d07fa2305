"""ResNet backbones: torchvision-exact without attention, every variant runs forward/backward at small size."""

import pytest
import torch
import torchvision

from aaconv.errors import ConfigError
from aaconv.layers import VARIANTS, AAConv2d, AWConv2d, parse_variant
from aaconv.models import create_model

RESNET_COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", RESNET_COUNTS)
def test_plain_resnet_matches_torchvision(name):
    model, reference = create_model(name), getattr(torchvision.models, name)(weights=None)
    assert count(model) == count(reference) == RESNET_COUNTS[name]
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]


def test_torchvision_weights_give_identical_outputs():
    reference = torchvision.models.resnet50(weights=None).eval()
    model = create_model("resnet50").eval()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_se_resnet50_matches_timm_count():
    assert count(create_model("resnet50", "se")) == 28_088_024


@pytest.mark.parametrize("variant", ["se", "cbam"])
def test_state_dicts_naming_the_post_block_module_se_load_strictly(variant):
    """timm names a block's post-block attention `se` (seresnet18's weights, and checkpoints written before the module
    was called `post_attention`): such a state dict loads strictly and computes the same outputs."""
    torch.manual_seed(0)
    model = create_model("resnet18", variant).eval()
    old = {k.replace(".post_attention.", ".se."): v for k, v in model.state_dict().items()}
    assert any(".se." in k for k in old)
    torch.manual_seed(1)
    loaded = create_model("resnet18", variant).eval()
    loaded.load_state_dict(old)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_timm_seresnet18_weights_load_and_give_timms_outputs():
    import timm

    reference = timm.create_model("seresnet18", pretrained=False).eval()
    model = create_model("resnet18", "se").eval()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet50", "resnet152"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_builds_with_paper_placement(name, variant):
    model = create_model(name, variant)
    layer1, layer3 = model.layer1[0].conv2, model.layer3[-1].conv2
    assert type(layer1) is torch.nn.Conv2d  # not augmented: the AA paper starts at layer2
    found = parse_variant(variant)
    outer = [part for part in found if part.slot == "wrap"] or [part for part in found if part.slot == "conv"]
    assert type(layer3) in (outer[0].modules if outer else (torch.nn.Conv2d,))
    post = [part for part in found if part.slot == "post"]
    se = model.layer1[0].post_attention  # every block has the post-block module, layer1 included (as SE-ResNet)
    assert isinstance(se, post[0].modules) if post else se is None


@pytest.mark.parametrize(
    ("name", "variant"), [("resnet18", v) for v in VARIANTS] + [("resnet50", "aa+se"), ("resnet50", "aw+aa")]
)
def test_forward_backward_and_eval(name, variant):
    torch.manual_seed(0)
    model = create_model(name, variant, num_classes=5, input_size=32)
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 5)


def test_aa_tables_sized_per_stage_from_input_size():
    model = create_model("resnet50", "aa", input_size=224)
    sizes = [(s, getattr(model, f"layer{s}")[-1].conv2.attention.rel_width.shape[0]) for s in (2, 3, 4)]
    assert sizes == [(2, 2 * 14 - 1), (3, 2 * 14 - 1), (4, 2 * 7 - 1)]  # layer2 attends over its 28x28 map pooled
    explicit = create_model("resnet50", {"variant": "aa", "aa": {"max_size": 40}})
    assert explicit.layer4[0].conv2.attention.rel_width.shape[0] == 79


def test_paper_aa_resnet50_setting():
    """kappa 0.2, upsilon 0.1, 8 heads, >= 20 key dims per head, layer2 memory-pooled (Bello et al. 2019)."""
    model = create_model("resnet50", "aa")
    layer2, layer4 = model.layer2[1].conv2, model.layer4[1].conv2
    assert (layer2.attention.dk, layer2.attention.dv, layer2.attention.num_heads) == (160, 16, 8)  # 0.2 * 128 < 160
    assert (layer4.attention.dk, layer4.attention.dv) == (160, 48)  # 102.4 -> 104 < 160
    assert [m.memory_pool for m in model.modules() if isinstance(m, AAConv2d)] == [True] * 4 + [False] * 9
    with torch.no_grad():
        assert model.layer2(torch.randn(1, 256, 56, 56)).shape == (1, 512, 28, 28)


def test_paper_aa_resnet34_augments_the_first_conv_of_each_block():
    model = create_model("resnet34", "aa")
    blocks = [b for stage in (model.layer2, model.layer3, model.layer4) for b in stage]
    assert all(type(b.conv1) is AAConv2d and type(b.conv2) is torch.nn.Conv2d for b in blocks)
    assert (blocks[-1].conv1.attention.dk, blocks[-1].conv1.attention.dv) == (160, 128)  # 0.25 * 512 = 128
    both = create_model("resnet34", {"variant": "aw+aa", "aa": {"basic_block_convs": [1, 2]}})
    assert type(both.layer3[0].conv2) is AAConv2d
    aw_aa = create_model("resnet34", "aw+aa")  # the conv AA leaves out keeps the rest of the variant
    assert type(aw_aa.layer3[0].conv1.conv) is AWConv2d and type(aw_aa.layer3[0].conv2) is AWConv2d
    with pytest.raises(ValueError, match=r"attention part aa found no conv to take in resnet34 .*basic_block_convs"):
        create_model("resnet34", {"variant": "aa", "aa": {"basic_block_convs": [3]}})


def test_config_aa_keys_win_over_the_architecture():
    model = create_model("resnet34", {"variant": "aa", "aa": {"upsilon": 0.5, "memory_pool_stages": [], "kappa": None}})
    conv = model.layer4[0].conv1
    assert conv.attention.dv == 256 and conv.attention.dk == 160 and not model.layer2[0].conv1.memory_pool
    with pytest.raises(ConfigError, match="memory_pool_stages"):
        create_model("resnet50", {"variant": "aa", "aa": {"memory_pool_stages": [5]}})


def test_attention_stages_configurable():
    model = create_model("resnet50", "aa", attention_stages=[4])
    assert type(model.layer3[0].conv2) is torch.nn.Conv2d and type(model.layer4[0].conv2) is AAConv2d
    with pytest.raises(ConfigError, match="attention_stages"):
        create_model("resnet50", "aa", attention_stages=[5])
