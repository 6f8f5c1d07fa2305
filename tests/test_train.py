"""train.py and eval.py as a user runs them: a real short training run, exact re-evaluation, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers.config import REPO

# The quick-start data and recipe, cut to 5 epochs: well past chance (1/6) in about a minute of CPU at any thread
# count (4 epochs gave 47% on one thread: float rounding sends a from-scratch run on another path; 5 gave 69% / 92%
# on one / two threads).
LEARNABLE = ["data.workers=0", "trainer.epochs=5", "logger.progress_bar=false"]


def start(script: str, *overrides: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(REPO / script), *overrides],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=900)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run(script: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return finish(start(script, *overrides, cwd=cwd))


@pytest.mark.slow
def test_short_training_learns_and_eval_reproduces_it_exactly(tmp_path: Path, data_cache: Path) -> None:
    run_dir = tmp_path / "run"
    trained = run("train.py", f"hydra.run.dir={run_dir}", f"data.root={data_cache}", *LEARNABLE, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["top1"] >= 50.0, results  # chance is 16.7
    assert results["val_images"] == 6 * 150
    assert results["model"] == "resnet18" and results["params"] == 11_179_590 and results["epochs"] == 5
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5]
    assert epochs[-1]["top1"] == results["top1"]
    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert state["epoch"] == 5 and state["config"]["backbone"]["name"] == "resnet18"
    assert str(run_dir.resolve()) in trained.stdout + trained.stderr

    eval_dir = tmp_path / "eval"
    evaluated = run("eval.py", f"checkpoint={run_dir / 'last.pt'}", f"hydra.run.dir={eval_dir}", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    again = json.loads((eval_dir / "results.json").read_text())
    assert again["top1"] == results["top1"] and again["top5"] == results["top5"]
    assert again["val_images"] == results["val_images"] and again["params"] == results["params"]


def write_tree_with_a_broken_file(root: Path) -> Path:
    """A 2-class ImageFolder whose train/b holds a file that is not an image; returns that file."""
    for split in ("train", "val"):
        for label, color in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
            (root / split / label).mkdir(parents=True)
            for i in range(3 if label == "a" else 4):  # with the broken file 8 samples: 4 full batches
                Image.new("RGB", (16, 16), color).save(root / split / label / f"{i}.png")
    bad = root / "train" / "b" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    return bad


@pytest.fixture(scope="module")
def refused_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("refused")


@pytest.fixture(scope="module")
def refused(refused_dir: Path, data_cache: Path) -> dict[str, subprocess.CompletedProcess]:
    """train.py commands that must stop with one line, each in refused_dir/<case>, started side by side: each is
    mostly the interpreter's imports, which two cores do two at a time."""
    tmp = refused_dir
    write_tree_with_a_broken_file(tmp / "images")
    # an empty torch.hub cache and a proxy that refuses every connection: the download fails at once
    offline = {"TORCH_HOME": str(tmp / "torch"), "HTTPS_PROXY": "http://127.0.0.1:9"}
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "typo": (["trainer.epoch=3"], {}),
        "unknown_option": (["attention=nonee"], {}),
        "missing_root": (["data=imagenet"], {}),
        "wrong_root": (["~experiment", "data=imagenet", f"data.root={tmp / 'imagenet'}"], {}),
        "offline_pretrained": (["backbone.weights=torchvision:resnet18", f"data.root={data_cache}"], offline),
        "wrn": (
            ["backbone=wrn28_10", "trainer.max_steps=1", "trainer.max_eval_batches=1", f"data.root={tmp / 'data'}"],
            {},
        ),  # fmt: skip
        "bad_value": (["data.batch_size=3.5"], {}),
        "bad_image": (
            [
                "~experiment",
                "data=imagenet",
                f"data.root={tmp / 'images'}",
                "data.num_classes=2",
                "data.workers=2",
                "data.batch_size=2",
                "data.image_size=16",
                "trainer.epochs=1",
                "logger.progress_bar=false",
            ],
            {},
        ),  # fmt: skip
    }
    processes = {}
    for name, (overrides, env) in cases.items():
        (tmp / name).mkdir()
        processes[name] = start("train.py", *overrides, f"hydra.run.dir={tmp / name / 'run'}", cwd=tmp / name, env=env)
    return {name: finish(process) for name, process in processes.items()}


def test_typo_in_an_override_gets_hydras_message(refused) -> None:
    result = refused["typo"]
    assert result.returncode != 0
    assert "Key 'epoch' is not in struct" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_group_option_lists_the_choices(refused) -> None:
    result = refused["unknown_option"]
    assert result.returncode != 0
    assert "Could not find 'attention/nonee'" in result.stderr
    assert "Available options" in result.stderr and "none" in result.stderr


def test_missing_data_root_is_one_line(refused) -> None:
    result = refused["missing_root"]
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: required config value(s) not set: data.root; add data.root=... to the command"
    )


def test_wrong_data_root_says_what_layout_is_expected(refused, refused_dir: Path) -> None:
    result = refused["wrong_root"]
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: data root {refused_dir / 'imagenet'} does not exist")
    assert "<root>/train/<class>/<image>" in last
    assert "Traceback" not in result.stderr


def test_offline_pretrained_name_is_one_line(refused, refused_dir: Path) -> None:
    result = refused["offline_pretrained"]
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot download torchvision:resnet18"), result.stderr
    assert str(refused_dir / "torch/hub/checkpoints/resnet18-f37072fd.pth") in lines[0]


def test_wrn_under_the_quick_start_is_one_line_naming_the_setting(refused) -> None:
    """The quick start pins backbone.zero_init_residual=true for every backbone; WRN has no last BN to zero."""
    result = refused["wrn"]
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: backbone.zero_init_residual=true zeroes"), result.stderr
    assert lines[0].endswith("add backbone.zero_init_residual=false (experiment=quickstart, the default, sets it true)")


def test_bad_config_value_is_one_line_quoting_it(refused) -> None:
    result = refused["bad_value"]
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: data.batch_size=3.5 is not valid: it must be a positive integer"
    ]


def test_bad_image_read_by_a_loader_worker_is_one_line(refused, refused_dir: Path) -> None:
    result = refused["bad_image"]
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    bad = refused_dir / "images" / "train" / "b" / "broken.jpg"
    assert errors[-1].startswith(f"error: cannot decode image {bad} (") and "Traceback" not in result.stderr
