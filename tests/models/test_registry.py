"""The model registry: every registered network x every variant builds what the variant names."""

import pytest
import torch

from aaconv.errors import ConfigError
from aaconv.layers import VARIANTS, parse_variant
from aaconv.models import MODELS, backbones, create_model, get_entry
from aaconv.models.backbone import Backbone


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(name: str, variant: str) -> torch.nn.Module:
    with torch.device("meta"):  # structure and counts only: no memory, no init cost
        return create_model(name, variant, num_classes=10)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_network_builds_every_variant_with_its_parts_present(name):
    plain = _count(_build(name, "none"))
    for variant in VARIANTS:
        model = _build(name, variant)
        built = {type(m) for m in model.modules()}
        for part in parse_variant(variant):
            assert set(part.modules) & built, f"{name} with {variant}: no {part.name} module"
        if variant != "none":
            assert _count(model) != plain, f"{name} with {variant} has the plain network's parameters"


def test_backbones_are_the_networks_that_follow_the_protocol():
    assert set(backbones()) == {
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "mnasnet_a1",
        "mnasnet_b1",
    }
    for name in backbones():
        assert isinstance(_build(name, "none"), Backbone)
    assert not get_entry("wrn28_10").is_backbone


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown model 'resnet19'; available: .*resnet18"):
        create_model("resnet19")


def test_a_part_with_no_conv_to_take_is_one_line():
    with pytest.raises(ValueError, match="attention part aa found no conv to take in resnet50"):
        create_model("resnet50", {"variant": "aa", "aa": {"replaces": ["expansion"]}})
