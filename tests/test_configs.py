"""Every option of every config group composes with the defaults, and interpolations resolve."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers.config import CONFIGS

GROUP_OPTIONS = sorted(
    (str(path.parent.relative_to(CONFIGS)), path.stem)
    for path in CONFIGS.rglob("*.yaml")
    if path.parent != CONFIGS
)


def test_the_tree_has_every_group() -> None:
    groups = {group.split("/")[0] for group, _ in GROUP_OPTIONS}
    expected = {"backbone", "attention", "task", "data", "optim", "schedule", "trainer", "logger", "experiment"}
    assert expected <= groups


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_option_composes_with_defaults(group: str, option: str) -> None:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={option}"], return_hydra_config=group.startswith("hydra"))
    container = OmegaConf.to_container(cfg, resolve=not group.startswith("hydra"), throw_on_missing=False)
    assert container["backbone"]["name"] and container["attention"]["variant"]
    if group not in ("experiment", "hydra/launcher"):  # those two write into other groups' keys
        assert cfg[group] is not None


@pytest.mark.parametrize("config_name", ["train", "eval"])
def test_entry_point_configs_compose(config_name: str) -> None:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name)
    assert OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
