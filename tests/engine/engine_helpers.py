"""Engine test helpers: the toy task config fixture (import it into a test module) and a way to run
train.py / torchrun as real processes. Not a conftest.py: the lead's tests import `conftest` by name."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
import sys
from pathlib import Path

import pytest
import torch

ENGINE_TESTS = Path(__file__).resolve().parent
REPO = ENGINE_TESTS.parents[1]
TOY = ["task._target_=engine_toy.ToyTask", "data.batch_size=8", "schedule.warmup_epochs=0"]


@pytest.fixture
def toy_config(tiny_config):
    """toy_config(*overrides) -> the tiny config with the toy MLP task (engine_toy.ToyTask)."""

    def make(*overrides: str):
        return tiny_config(*TOY, *overrides)

    return make


def entry_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for train.py / torchrun with the toy task importable."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ENGINE_TESTS), str(REPO)]), "OMP_NUM_THREADS": "1",
                **(env or {})}
    full_env.pop("WANDB_API_KEY", None)
    return full_env


def run_entry(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 240,
              preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    """Runs `python <args>` (train.py, -m torch.distributed.run ...) with the toy task importable."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=entry_env(env), capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec_fn)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]
