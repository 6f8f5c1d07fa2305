"""Smoke runs on the toy task: trainer.max_steps / max_eval_batches, their resume, and the first log lines."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import torch

from aaconv.engine.checkpoint import load_checkpoint
from aaconv.engine.trainer import Trainer
from aaconv.tasks import build_task

SMOKE = ("trainer.epochs=2", "+task.train_size=64", "trainer.deterministic=true")  # 8 steps per epoch


def fit(cfg, run_dir: Path) -> tuple[Trainer, dict]:
    trainer = Trainer(cfg, build_task(cfg), run_dir)
    return trainer, trainer.fit()


def records(run_dir: Path) -> list[tuple[float, int]]:
    """(epoch, step) of each metrics.jsonl line."""
    return [(r["epoch"], r["step"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.parametrize("aug_repeats", [0, 3])
def test_max_steps_trains_that_many_steps_and_resumes_to_a_larger_limit_exactly(
    toy_config, tmp_path: Path, aug_repeats: int
):
    smoke = (*SMOKE, f"data.aug_repeats={aug_repeats}")  # 3: each vector 3 times an epoch, 8 steps still
    three, results = fit(toy_config(*smoke, "trainer.max_steps=3"), tmp_path / "run")
    assert three.global_step == results["steps"] == 3
    state = load_checkpoint(tmp_path / "run/last.pt")
    assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (0, 3, 3)
    assert records(tmp_path / "run") == [(0.375, 3)]  # 3 of 8 updates of epoch 1

    again, _ = fit(toy_config(*smoke, "trainer.max_steps=3"), tmp_path / "run")  # the same command: nothing to train
    assert again.global_step == 3 and records(tmp_path / "run") == [(0.375, 3)]
    assert all(torch.equal(v, three.model.state_dict()[k]) for k, v in again.model.state_dict().items())

    # raised to 10 (one epoch and 2 steps): continues mid-epoch and ends where an uninterrupted run does
    resumed, _ = fit(toy_config(*smoke, "trainer.max_steps=10"), tmp_path / "run")
    straight, _ = fit(toy_config(*smoke, "trainer.max_steps=10"), tmp_path / "straight")
    assert resumed.global_step == straight.global_step == 10 and (resumed.epoch, resumed.batch_in_epoch) == (1, 2)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert records(tmp_path / "run") == [(0.375, 3), (1, 8), (1.25, 10)]
    most_copies = Counter(i for i, _ in resumed.train_sampler).most_common(1)[0][1]
    assert most_copies == max(aug_repeats, 1)


def test_max_eval_batches_limits_validation(toy_config, tmp_path: Path):
    _, results = fit(toy_config("trainer.max_eval_batches=2"), tmp_path)  # batches of 8 out of 45 vectors
    assert results["val_images"] == results["val_unique"] == 16


def test_results_say_what_was_trained_and_evaluated(toy_config, tmp_path: Path):
    _, smoke = fit(toy_config(*SMOKE, "trainer.max_steps=3", "trainer.max_eval_batches=2"), tmp_path)
    assert (smoke["epochs"], smoke["epochs_trained"], smoke["stopped_by"]) == (2, 0.375, "max_steps")
    assert (smoke["eval_images"], smoke["eval_partial"]) == (16, True)  # 2 batches of 8 out of 45 vectors

    _, full = fit(toy_config(*SMOKE), tmp_path)  # the rest of the run, evaluated on the whole split
    assert (full["epochs"], full["epochs_trained"], full["stopped_by"]) == (2, 2, "epochs")
    assert (full["eval_images"], full["eval_partial"]) == (45, False)


def test_first_line_shows_the_scaled_lr_and_timm_cosine_warning_is_silent(toy_config, tmp_path: Path, caplog):
    # one step per epoch: timm's CosineLRScheduler warns that annealing over one step has no effect
    cfg = toy_config("trainer.epochs=1", "+task.train_size=8", "optim.lr=0.4", "schedule.warmup_epochs=1")
    with caplog.at_level(logging.INFO):
        fit(cfg, tmp_path)
    assert "global batch 8, lr 0.0125 (scaled)" in caplog.text  # 0.4 x 8 / 256, not the warm-up start 1e-06
    assert "no effect" not in caplog.text


def test_progress_bar_stays_out_of_a_redirected_log(toy_config, tmp_path: Path, capsys):
    fit(toy_config("logger.progress_bar=true"), tmp_path)  # pytest captures stderr: not a terminal
    assert "epoch 1/" not in capsys.readouterr().err
