"""The Backbone protocol: feature_info describes what forward_stages returns and which module computes it."""

import pytest
import torch

from aaconv.models import Backbone, create_model
from aaconv.models.detection import default_stages

BACKBONES = [("resnet18", "aa", {}), ("mnasnet_a1", "aw", {"width_mult": 0.5})]


@pytest.mark.parametrize(("name", "attention", "kwargs"), BACKBONES)
def test_feature_info_describes_forward_stages(name, attention, kwargs):
    model = create_model(name, attention, headless=True, **kwargs).eval()
    assert isinstance(model, Backbone)
    hooked = {}
    for info in model.feature_info:
        module = model.get_submodule(info["module"])
        module.register_forward_hook(lambda m, args, out, key=info["module"]: hooked.setdefault(key, out.clone()))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outputs = model.forward_stages(x, range(len(model.feature_info)))
    assert len(outputs) == len(model.feature_info)
    for info, out in zip(model.feature_info, outputs, strict=True):
        assert out.shape == (2, info["num_chs"], 64 // info["reduction"], 64 // info["reduction"])
        assert torch.equal(out, hooked[info["module"]]), info["module"]


@pytest.mark.parametrize(("name", "attention", "kwargs"), BACKBONES)
def test_forward_stages_returns_requested_stages_in_order(name, attention, kwargs):
    model = create_model(name, attention, headless=True, **kwargs).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        every = model.forward_stages(x, range(len(model.feature_info)))
        some = model.forward_stages(x, [1, 3])
        last = model(x)
    assert torch.equal(some[0], every[1]) and torch.equal(some[1], every[3])
    assert torch.equal(last, every[-1])  # headless forward: the last stage


def test_default_stages_pick_the_last_stage_of_each_stride():
    assert default_stages(create_model("resnet18", headless=True), (4, 8, 16, 32)) == [1, 2, 3, 4]
    assert default_stages(create_model("mnasnet_a1", headless=True, width_mult=0.5), (8, 16, 32)) == [2, 4, 6]
