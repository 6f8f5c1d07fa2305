"""eval.py's failure modes: missing, foreign and mismatched checkpoints give errors that name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from aaconv.engine.checkpoint import load_checkpoint, save_checkpoint
from aaconv.engine.evaluate import evaluate_checkpoint, run_config
from aaconv.errors import CheckpointError
from aaconv.models import create_model
from aaconv.tasks import build_task


def eval_config(checkpoint: Path):
    return OmegaConf.create({"checkpoint": str(checkpoint), "data_root": None, "batch_size": None,
                             "workers": None, "device": "cpu"})


def evaluate(cfg, output_dir: Path) -> dict:
    """What eval.py does with its config."""
    state = load_checkpoint(cfg.checkpoint)
    run_cfg = run_config(state, cfg)
    return evaluate_checkpoint(build_task(run_cfg), state, run_cfg, torch.device("cpu"), output_dir, cfg.checkpoint)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist; pass the last.pt"):
        evaluate(eval_config(tmp_path / "last.pt"), tmp_path)


def test_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        evaluate(eval_config(path), tmp_path)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    torch.save({"model": {}, "payload": Path("/etc/passwd")}, path)  # a non-tensor object needs unpickling
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        evaluate(eval_config(path), tmp_path)


def test_checkpoint_of_another_model_lists_the_keys(tmp_path: Path, tiny_config) -> None:
    cfg = tiny_config("backbone=resnet18")
    other = create_model("resnet34", num_classes=6)
    path = save_checkpoint({"model": other.state_dict(), "epoch": 1,
                            "config": OmegaConf.to_container(cfg, resolve=True)}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"does not fit this model.*unexpected \d+ \['layer1.2"):
        evaluate(eval_config(path), tmp_path)


def test_checkpoint_never_fetches_pretrained_weights_and_reads_older_detection_configs(tmp_path: Path, tiny_config):
    cfg = tiny_config("task=retinanet", "data=shapes_det", "data.detection.fpn_channels=32")
    config = OmegaConf.to_container(cfg, resolve=True)
    config["backbone"]["weights"] = "torchvision:no_such_model"  # would fail if it were read
    config["task"]["weights"] = None  # detection configs kept it here before backbone.weights
    model = build_task(cfg).build_model()
    path = save_checkpoint({"model": model.state_dict(), "epoch": 1, "config": config}, tmp_path / "last.pt")
    results = evaluate(eval_config(path), tmp_path / "eval")
    assert results["val_images"] == 16 and -1 <= results["AP"] <= 1
