"""Every registered model through timm's own registry and tooling."""

import copy
import subprocess
import sys
import warnings

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg, model_entrypoint
from timm.models._features import FeatureGetterNet
from torch import nn

from aaconv.errors import CheckpointError, ConfigError
from aaconv.layers import VARIANTS, parse_variant
from aaconv.models import MODELS, backbones, create_model
from aaconv.models import timm_models as timm_models_module
from aaconv.models.timm_models import register_timm_models, timm_models

TIMM_MODELS = timm_models()
# The large ResNets take most of the build time; they still run in CI.
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n.endswith(("101", "152")) else n for n in TIMM_MODELS]


def test_every_model_and_variant_is_registered():
    assert sorted(timm.list_models("aa_*")) == sorted(n for n in TIMM_MODELS if n.startswith("aa_"))
    registered = {name for name, entry in MODELS.items() if entry.timm_cfg is not None}
    assert {model for model, _ in TIMM_MODELS.values()} == registered == set(backbones())
    assert len(TIMM_MODELS) == len(registered) * len(VARIANTS)
    for name in TIMM_MODELS:  # our entry point, not a timm model of the same name
        assert model_entrypoint(name).__module__ == "aaconv.models.timm_models"
        cfg = get_pretrained_cfg(name)
        assert cfg.architecture == name and not cfg.has_weights


@pytest.mark.parametrize("name", NAMES)
def test_timm_builds_every_registered_model(name):
    model_name, variant = TIMM_MODELS[name]
    model = timm.create_model(name, num_classes=10)
    assert isinstance(model, MODELS[model_name].cls)
    layers = {type(m) for m in model.modules()}
    for part in parse_variant(variant):
        assert set(part.modules) & layers, part.name
    assert model.pretrained_cfg["architecture"] == name and model.default_cfg is model.pretrained_cfg
    # timm's model attributes, and its classifier API as timm's tests use it (no forward: the network tests do)
    assert (model.num_classes, model.in_chans) == (10, 3)
    assert model.head_hidden_size == model.num_features == model.get_classifier().in_features
    assert model.get_classifier() is model.get_submodule(model.pretrained_cfg["classifier"])
    assert model.get_submodule(model.pretrained_cfg["first_conv"]).in_channels == 3
    model.reset_classifier(0)
    assert model.num_classes == 0 and isinstance(model.get_classifier(), torch.nn.Identity)
    model.reset_classifier(4)
    assert model.get_classifier().out_features == 4 and model.global_pool.pool_type == "avg"


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("aa_resnet18", {}), ("aw_se_mnasnet_a1", {"width_mult": 0.5}), ("plain_mnasnet_b1", {"width_mult": 0.5})],
)
def test_timm_model_equals_create_model(name, kwargs):
    model_name, variant = TIMM_MODELS[name]
    torch.manual_seed(0)
    ours = create_model(model_name, variant, num_classes=10, **kwargs).eval()
    torch.manual_seed(0)
    theirs = timm.create_model(name, num_classes=10, **kwargs).eval()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize(("name", "kwargs"), [("aa_resnet18", {}), ("aw_mnasnet_a1", {"width_mult": 0.5})])
def test_timm_features_only_returns_every_stage(name, kwargs):
    model_name, variant = TIMM_MODELS[name]
    torch.manual_seed(0)
    ours = create_model(model_name, variant, **kwargs).eval()
    torch.manual_seed(0)
    features = timm.create_model(name, features_only=True, **kwargs).eval()
    assert features.feature_info.channels() == [info["num_chs"] for info in ours.feature_info]
    assert features.feature_info.reduction() == [info["reduction"] for info in ours.feature_info]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ours.forward_stages(x, range(len(ours.feature_info)))
        got = features(x)
    assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_registering_twice_changes_nothing():
    before = {name: model_entrypoint(name) for name in TIMM_MODELS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # timm warns when a name is overwritten
        assert register_timm_models() == list(TIMM_MODELS)
        assert register_timm_models() == list(TIMM_MODELS)
    assert {name: model_entrypoint(name) for name in TIMM_MODELS} == before


def test_no_published_weights_is_a_clear_error():
    with pytest.raises(CheckpointError, match="no pretrained weights are published for aa_resnet18"):
        timm.create_model("aa_resnet18", pretrained=True)
    with pytest.raises(ConfigError, match="unknown model 'resnet19'"):
        create_model("resnet19")


@pytest.mark.parametrize("order", ["import aaconv, timm", "import timm, aaconv"])
def test_import_aaconv_registers_whatever_the_import_order(order):
    code = (
        f"import sys; {order}; assert not any(type(f).__module__.startswith('aaconv') for f in sys.meta_path); "
        "print(timm.create_model('aa_resnet18', num_classes=3).fc.out_features)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


def test_a_name_timm_already_has_is_an_error_naming_both(monkeypatch):
    def aa_resnet18(pretrained: bool = False, **kwargs):  # another package's model of the same name
        raise AssertionError("not called")

    ours = timm_models_module.model_entrypoint
    monkeypatch.setattr(
        timm_models_module, "model_entrypoint", lambda n: aa_resnet18 if n == "aa_resnet18" else ours(n)
    )
    with pytest.raises(ConfigError) as error:
        register_timm_models()
    message = str(error.value)
    assert message.startswith("timm already has a model 'aa_resnet18' (")
    assert f"{__name__}.test_a_name_timm_already_has_is_an_error_naming_both.<locals>.aa_resnet18" in message
    assert "aaconv's resnet18 with attention 'aa'" in message and "\n" not in message


# The timm API in use on the two network classes: small models, 32 px inputs.
SMALL = [("aw_aa_resnet18", {}), ("aa_se_mnasnet_a1", {"width_mult": 0.5})]


@pytest.mark.parametrize(("name", "kwargs"), SMALL)
def test_head_api_follows_timm(name, kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5, **kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features
        pooled = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(pooled, features.mean((2, 3)))
        assert torch.equal(model(x), model.get_classifier()(pooled))
        model.reset_classifier(0, "max")
        torch.testing.assert_close(model(x), features.amax((2, 3)))
        model.reset_classifier(0, "")
        assert torch.equal(model(x), features)
    headless = timm.create_model(name, num_classes=0, global_pool="", **kwargs).eval()
    headless.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(headless(x), features)
    model.to(device="meta", dtype=torch.float64).train()
    model.reset_classifier(3, "avg")
    head = model.get_classifier()
    assert head.weight.device.type == "meta" and head.weight.dtype == torch.float64 and head.training


def _stage_outputs(model, x):
    """The outputs of the modules that feature_info names, read by forward hooks (independent of the model's code)."""
    outputs, handles = {}, []
    for info in model.feature_info:
        module = model.get_submodule(info["module"])
        handles.append(module.register_forward_hook(lambda m, i, o, key=info["module"]: outputs.setdefault(key, o)))
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return [outputs[info["module"]].clone() for info in model.feature_info]


@pytest.mark.parametrize(("name", "kwargs"), SMALL)
def test_forward_intermediates_and_pruning_follow_timm(name, kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    x = torch.randn(1, 3, 32, 32)
    stages = _stage_outputs(model, x)
    last = len(stages) - 1
    with torch.no_grad():
        final, every = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert len(every) == len(stages) and all(torch.equal(a, b) for a, b in zip(every, stages, strict=True))
        taken = model.forward_intermediates(x, indices=[1, -1], intermediates_only=True)
        assert torch.equal(taken[0], stages[1]) and torch.equal(taken[1], stages[last])
        assert torch.equal(model.forward_intermediates(x, indices=2, stop_early=True)[1][0], stages[last - 1])
        getter = FeatureGetterNet(
            copy.deepcopy(model), out_indices=(1, 2)
        ).eval()  # features_only, feature_cls="getter"
        got = getter(x)
    assert len(got) == 2 and torch.equal(got[0], stages[1]) and torch.equal(got[1], stages[2])
    assert getter.feature_info.channels() == [stages[1].shape[1], stages[2].shape[1]]
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert model.num_classes == 0 and not any(p.requires_grad is False for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)[1], stages[1])


@pytest.mark.parametrize(("name", "kwargs"), SMALL)
def test_factory_keywords_follow_timm(name, kwargs):
    meta = timm.create_model(name, device="meta", dtype=torch.bfloat16, **kwargs)
    tensors = [*meta.parameters(), *meta.buffers()]
    assert all(t.device.type == "meta" for t in tensors)
    assert all(t.dtype == torch.bfloat16 for t in meta.parameters())
    model = timm.create_model(name, in_chans=1, drop_rate=0.3, num_classes=7, **kwargs)
    first_conv = model.get_submodule(model.pretrained_cfg["first_conv"])
    assert (model.in_chans, first_conv.in_channels, model.drop_rate) == (1, 1, 0.3)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3]
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    overlay = timm.create_model(name, pretrained_cfg_overlay={"mean": (0.5,) * 3}, device="meta", **kwargs)
    assert overlay.pretrained_cfg["mean"] == (0.5,) * 3
    assert timm.create_model(name, drop_path_rate=0.0, device="meta", **kwargs).num_classes == 1000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"features_only": True, "out_indices": (0, 5)},
            r"out_indices: stage indices must be among 0\.\.4 .*got \[0, 5\]",
        ),
        ({"features_only": True, "out_indices": 6}, r"out_indices: the number of last stages to take must be 1\.\.5"),
        ({"features_only": True, "feature_cls": "graph"}, "feature_cls must be one of list, dict, hook, fx, getter"),
        ({"drop_path_rate": 1.0}, r"backbone.drop_path_rate must be in \[0, 1\), got 1.0"),
        ({"global_pool": "gem"}, "global_pool must be one of 'avg', 'max', '', got 'gem'"),
        ({"global_pool": ""}, 'global_pool="" \\(no pooling\\) needs num_classes=0'),
        ({"pretrained": True, "in_chans": 1}, "no pretrained weights are published for aa_resnet18"),
    ],
)
def test_bad_timm_keywords_are_one_line_errors(kwargs, message):
    with pytest.raises((ConfigError, CheckpointError), match=message) as error:
        timm.create_model("aa_resnet18", device="meta", **kwargs)
    assert "\n" not in str(error.value)
    with pytest.raises(TypeError):  # timm's contract: an unknown keyword is refused
        timm.create_model("aa_resnet18", device="meta", not_a_model_arg=1)
