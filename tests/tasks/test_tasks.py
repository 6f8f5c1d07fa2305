"""Building tasks: from the project's config tree (instantiate) and from a saved config (data, never instantiated)."""

import sys

import pytest
import torch
from omegaconf import OmegaConf

from aaconv.errors import CheckpointError, ConfigError
from aaconv.tasks import Task, build_task, task_from_saved_config


@pytest.mark.parametrize("overrides", [("attention=aa",), ("task=retinanet", "data=shapes_det")])
def test_saved_config_builds_the_same_task(tiny_config, overrides):
    cfg = tiny_config(*overrides)
    saved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # what a checkpoint holds
    built, restored = build_task(cfg), task_from_saved_config(saved)
    assert isinstance(restored, Task) and type(restored) is type(built)
    assert vars(restored).keys() == vars(built).keys()
    torch.manual_seed(0)
    expected = built.build_model().state_dict()
    torch.manual_seed(0)
    got = restored.build_model().state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(v, got[k]) for k, v in expected.items())


def test_saved_config_naming_another_target_is_refused_unimported(tiny_config, tmp_path, monkeypatch):
    (tmp_path / "aaconv_probe_module.py").write_text("class Anything:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # importable, so only the refusal keeps it out of sys.modules
    saved = OmegaConf.to_container(tiny_config(), resolve=True)
    saved["task"] = {"_target_": "aaconv_probe_module.Anything"}
    with pytest.raises(CheckpointError, match="'aaconv_probe_module.Anything', which is not one of aaconv's tasks"):
        task_from_saved_config(OmegaConf.create(saved))
    assert "aaconv_probe_module" not in sys.modules


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("data.decode=gpu", "+data.transform.train.re_prob=0.25"), r"data.decode=gpu applies .* not data.transform"),
        (("data.decode=gpu", "data.skip_unreadable=true"), r"data.decode=gpu cannot leave undecodable images out"),
    ],
)
def test_a_tasks_config_error_is_raised_as_itself(tiny_config, overrides, message):
    """build_task passes the task's own ConfigError through (one line for the user), not Hydra's wrapper."""
    with pytest.raises(ConfigError, match=message):
        build_task(tiny_config(*overrides))
