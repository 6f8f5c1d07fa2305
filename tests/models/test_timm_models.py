"""Every registered model through timm's own registry and tooling."""

import subprocess
import sys
import warnings

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg, model_entrypoint

from aaconv.errors import CheckpointError, ConfigError
from aaconv.layers import VARIANTS, parse_variant
from aaconv.models import MODELS, backbones, create_model
from aaconv.models.timm_models import register_timm_models, timm_models

TIMM_MODELS = timm_models()
# The large ResNets take most of the build time; they still run in CI.
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n.endswith(("101", "152")) else n for n in TIMM_MODELS]


def test_every_model_and_variant_is_registered():
    assert sorted(timm.list_models("aa_*")) == sorted(n for n in TIMM_MODELS if n.startswith("aa_"))
    registered = {name for name, entry in MODELS.items() if entry.timm_cfg is not None}
    assert {model for model, _ in TIMM_MODELS.values()} == registered == set(backbones())
    assert len(TIMM_MODELS) == sum(1 for m in registered for v in VARIANTS if MODELS[m].excluded(v) is None)
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
    assert model.pretrained_cfg["architecture"] == name


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


def test_import_aaconv_registers_when_timm_is_imported_later():
    code = (
        "import sys, aaconv; assert 'timm' not in sys.modules; import timm; "
        "print(timm.create_model('aa_resnet18', num_classes=3).fc.out_features)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"
