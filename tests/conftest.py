"""Shared fixtures: a tiny built-in shapes set and composed Hydra configs that train in seconds
(the code behind them is in tests/helpers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from helpers.config import TINY_OVERRIDES, compose_config
from helpers.processes import TOY


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The tests' own torch ops on one thread, as helpers.processes gives the runs it starts (OMP_NUM_THREADS=1):
    their tensors are tiny, and while the other core is busy (a run the suite started, another job on the machine)
    a second OpenMP thread stalls every op at its barriers. Tests that vary the thread count set it themselves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
