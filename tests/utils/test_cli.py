"""The argparse types of scripts/ and the scripts' bad arguments: argparse's one usage line, status 2."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

from aaconv.utils import cli
from helpers.config import REPO


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("64", 64)])
def test_positive_int_accepts(text: str, value: int) -> None:
    assert cli.positive_int(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "2.5", "abc", ""])
def test_positive_int_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer > 0"):
        cli.positive_int(text)


@pytest.mark.parametrize("text", ["64x", "axb", "8", "0x8", "8x8x8"])
def test_dims_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected AxB with two integers > 0"):
        cli.dims(text)


def test_dims_and_device_accept() -> None:
    assert cli.dims("100X168") == "100x168"
    assert cli.device("cpu") == "cpu"
    with pytest.raises(argparse.ArgumentTypeError, match="'tpu' is not a device"):
        cli.device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="no CUDA device is visible; use --device cpu"):
        cli.device("cuda")


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ([sys.executable, "scripts/bench_layers.py", "--aw-stages", "64x"], "--aw-stages: expected AxB"),
        ([sys.executable, "scripts/bench_layers.py", "--sizes", "8"], "--sizes: expected AxB"),
        ([sys.executable, "scripts/count_params.py", "--grid", "--models", "resnet51"], "invalid choice: 'resnet51'"),
        ([sys.executable, "scripts/count_params.py", "--grid", "--variants", "xx"], "invalid choice: 'xx'"),
        (["bash", "scripts/mini_table.sh", "--help"], "usage: scripts/mini_table.sh [SWEEP_DIR]"),
        (["bash", "scripts/mini_table.sh", "trainer.epochs=3"], "usage: scripts/mini_table.sh [SWEEP_DIR]"),
    ],
)
def test_scripts_refuse_bad_arguments_before_any_work(command: list[str], message: str) -> None:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
