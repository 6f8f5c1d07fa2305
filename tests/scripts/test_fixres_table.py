"""scripts/fixres_table.py: one row per test size, the training size marked, eval.py's numbers at each size."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from aaconv.engine.checkpoint import load_checkpoint, save_checkpoint
from aaconv.runs import evaluate
from aaconv.tasks import build_task
from helpers.config import REPO, TINY_OVERRIDES, compose_config

SPEC = importlib.util.spec_from_file_location("fixres_table", REPO / "scripts" / "fixres_table.py")
fixres_table = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(fixres_table)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> Path:
    """An AA ResNet-18 checkpoint of the tiny shapes config (32 px), as train.py writes one."""
    torch.manual_seed(0)
    cfg = compose_config(f"data.root={data_cache}", *TINY_OVERRIDES, "attention=aa")
    model = build_task(cfg).build_model()
    state = {"model": model.state_dict(), "epoch": 1, "config": OmegaConf.to_container(cfg, resolve=True)}
    return save_checkpoint(state, tmp_path_factory.mktemp("run") / "last.pt")


def eval_py_results(checkpoint: Path, size: int, output_dir: Path) -> dict:
    """What eval.py computes with eval_image_size=<size> (configs/eval.yaml's keys)."""
    cfg = OmegaConf.create(
        {"checkpoint": str(checkpoint), "data_root": None, "batch_size": None, "workers": None, "device": "cpu"}
    )
    cfg.eval_image_size, cfg.crop_pct, cfg.weights = size, None, "auto"
    return evaluate(cfg, load_checkpoint(checkpoint), torch.device("cpu"), output_dir)


def test_rows_per_size_marked_and_equal_to_eval_py(checkpoint: Path, tmp_path: Path, capsys) -> None:
    fixres_table.main([str(checkpoint), "--sizes", "24", "32", "48", "--device", "cpu", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "crop_pct: the run's" and lines[-1] == "* the training size"
    rows = lines[2:-1]
    assert [row.split()[0] for row in rows] == ["24", "32*", "48"]
    for row, size in zip(rows, (24, 32, 48), strict=True):
        expected = eval_py_results(checkpoint, size, tmp_path / "eval" / str(size))
        assert row.split()[1:] == [f"{expected['top1']:.2f}", f"{expected['top5']:.2f}"]
        assert (tmp_path / f"{size}px" / "results.json").is_file()


def test_crop_pct_and_sizes_are_checked(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        fixres_table.parse_args([str(checkpoint), "--sizes", "0"])
    with pytest.raises(SystemExit):
        fixres_table.parse_args([str(checkpoint), "--sizes", "32", "--crop-pct", "1.5"])
    rows = fixres_table.fixres_rows(checkpoint, [32], 0.5, "cpu", tmp_path)
    assert len(rows) == 1 and rows[0]["train"]
