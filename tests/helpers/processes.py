"""train.py / torchrun run as real processes, with the engine tests' toy task (tests/engine/engine_toy.py)
importable, and the weights they save read back."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from helpers.config import REPO

ENGINE_TESTS = REPO / "tests" / "engine"
TOY = ["task._target_=engine_toy.ToyTask", "data.batch_size=8", "schedule.warmup_epochs=0"]


def entry_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for train.py / torchrun with the toy task importable."""
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ENGINE_TESTS), str(REPO)]),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    full_env.pop("WANDB_API_KEY", None)
    return full_env


def run_entry(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 240,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """Runs `python <args>` (train.py, -m torch.distributed.run ...) with the toy task importable."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=entry_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def start_entry(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts `python <args>` as run_entry runs it, without waiting: several run side by side."""
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=entry_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_entry(process: subprocess.Popen, timeout: float = 240) -> subprocess.CompletedProcess:
    """Waits for a process start_entry started: its CompletedProcess, as run_entry returns it."""
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]
