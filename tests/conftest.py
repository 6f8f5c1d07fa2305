"""Shared fixtures: a tiny built-in shapes set and composed Hydra configs that train in seconds
(the code behind them is in tests/helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig

from helpers.config import TINY_OVERRIDES, compose_config
from helpers.processes import TOY


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole session, so each tiny dataset is generated once."""
    return tmp_path_factory.mktemp("aaconv-cache")


@pytest.fixture
def tiny_config(data_cache: Path):
    """tiny_config(*overrides) -> a shapes config that trains one short epoch on the CPU."""

    def make(*overrides: str) -> DictConfig:
        return compose_config(f"data.root={data_cache}", *TINY_OVERRIDES, *overrides)

    return make


@pytest.fixture
def toy_config(tiny_config):
    """toy_config(*overrides) -> the tiny config with the toy MLP task (tests/engine/engine_toy.py)."""

    def make(*overrides: str) -> DictConfig:
        return tiny_config(*TOY, *overrides)

    return make
