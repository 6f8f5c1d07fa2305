"""The argparse types of scripts/ and the scripts' bad arguments: argparse's one usage line, status 2."""

from __future__ import annotations

import argparse
import runpy
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
    ("script", "args", "message"),
    [
        ("bench_layers.py", ["--aw-stages", "64x"], "--aw-stages: expected AxB"),
        ("bench_layers.py", ["--sizes", "8"], "--sizes: expected AxB"),
        ("count_params.py", ["--grid", "--models", "resnet51"], "invalid choice: 'resnet51'"),
        ("count_params.py", ["--grid", "--variants", "xx"], "invalid choice: 'xx'"),
    ],
)
def test_python_scripts_refuse_bad_arguments_before_any_work(
    script: str, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Run as ``python scripts/<script>`` would (``__main__``, its folder first on sys.path), in this process: the
    argument check comes first. The scripts' sibling modules it newly imports are dropped afterwards."""
    scripts = REPO / "scripts"
    monkeypatch.setattr(sys, "argv", [str(scripts / script), *args])
    monkeypatch.syspath_prepend(str(scripts))
    siblings = {path.stem for path in scripts.glob("*.py")} - set(sys.modules)
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(scripts / script), run_name="__main__")
    finally:
        for name in siblings & set(sys.modules):
            del sys.modules[name]
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and message in err and out == "", err


@pytest.mark.parametrize("args", [["--help"], ["trainer.epochs=3"]])
def test_mini_table_refuses_bad_arguments_before_any_work(args: list[str]) -> None:
    command = ["bash", "scripts/mini_table.sh", *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "usage: scripts/mini_table.sh [SWEEP_DIR]" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
