"""The best checkpoints on the toy task with forced accuracies: trainer.best_metric (EMA by default when EMA is
on), results.json's reported weights, trainer.keep_best's best-<epoch>.pt files, and both across a resume."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from aaconv.engine.best import BestCheckpoints, best_metric_name
from aaconv.engine.checkpoint import load_checkpoint
from aaconv.engine.trainer import Trainer
from aaconv.errors import ConfigError
from aaconv.tasks import build_task

EMA = ("trainer.ema.enabled=true", "trainer.ema.decay=0.9")


def fit(cfg, run_dir: Path) -> dict:
    return Trainer(cfg, build_task(cfg), run_dir).fit()


def accuracies(*values: float) -> str:
    """The override forcing the toy task's n-th evaluation to report values[n - 1] (model, EMA, model, ...)."""
    return f"+task.accuracies=[{','.join(str(v) for v in values)}]"


def kept_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob("best-*.pt"))


def test_the_ema_metric_picks_best_pt_and_results_report_the_ema_weights(toy_config, tmp_path: Path):
    # (model, EMA) per epoch: the model is best at epoch 3, the EMA at epoch 2
    results = fit(toy_config(*EMA, "trainer.epochs=3", accuracies(50, 40, 60, 70, 70, 65)), tmp_path)
    best = load_checkpoint(tmp_path / "best.pt")
    assert (best["epoch"], best["best_metric_name"], best["best_metric"]) == (2, "ema_accuracy", 70)
    assert (results["weights"], results["accuracy"], results["model_accuracy"]) == ("ema", 65, 70)
    assert (results["best_metric_name"], results["best_ema_accuracy"]) == ("ema_accuracy", 70)
    assert "ema_accuracy" not in results  # one name per number: the EMA's is `accuracy`
    last_epoch = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert (last_epoch["accuracy"], last_epoch["ema_accuracy"]) == (70, 65)  # the evaluation's own keys


def test_the_ema_evaluation_writes_the_task_files(toy_config, tmp_path: Path):
    """Detection's predictions.json is of the reported weights: the EMA's evaluation gets the output folder."""
    cfg = toy_config(*EMA)
    task = build_task(cfg)
    calls = []
    evaluate = task.evaluate

    def recording(model, loader, device, output_dir=None):
        calls.append((model, output_dir))
        return evaluate(model, loader, device, output_dir)

    task.evaluate = recording
    trainer = Trainer(cfg, task, tmp_path)
    trainer.fit()
    assert calls == [(trainer.eval_model, None), (trainer.ema.module, tmp_path)]


def test_without_ema_results_report_the_model_as_before(toy_config, tmp_path: Path):
    results = fit(toy_config("trainer.epochs=2", accuracies(60, 50)), tmp_path)
    assert (results["weights"], results["accuracy"], results["best_accuracy"]) == ("model", 50, 60)
    assert "model_accuracy" not in results and load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def test_an_explicit_best_metric_picks_by_that_metric(toy_config, tmp_path: Path):
    fit(
        toy_config(*EMA, "trainer.epochs=3", "trainer.best_metric=accuracy", accuracies(50, 40, 60, 70, 70, 65)),
        tmp_path,
    )
    best = load_checkpoint(tmp_path / "best.pt")
    assert (best["epoch"], best["best_metric_name"], best["best_metric"]) == (3, "accuracy", 70)


def test_a_best_metric_the_evaluation_lacks_is_one_line_and_the_epoch_is_kept(toy_config, tmp_path: Path):
    with pytest.raises(ConfigError) as error:
        fit(toy_config(*EMA, "trainer.best_metric=top1"), tmp_path)
    assert str(error.value).startswith(
        "trainer.best_metric=top1 is not a metric of this run's evaluation, which has accuracy, ema_accuracy, "
    )
    assert "\n" not in str(error.value)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1 and not (tmp_path / "best.pt").exists()
    with pytest.raises(ConfigError, match="trainer.best_metric=ema_accuracy is an EMA metric but trainer.ema.enabled"):
        fit(toy_config("trainer.best_metric=ema_accuracy"), tmp_path / "no_ema")


def test_a_resume_with_another_best_metric_resets_the_best(toy_config, tmp_path: Path, caplog):
    fit(toy_config(*EMA, "trainer.epochs=2", "trainer.best_metric=accuracy", accuracies(50, 90, 60, 95)), tmp_path)
    assert load_checkpoint(tmp_path / "best.pt")["best_metric"] == 60
    with caplog.at_level(logging.WARNING, logger="aaconv"):
        results = fit(toy_config(*EMA, "trainer.epochs=3", accuracies(10, 20)), tmp_path)  # best_metric: null
    assert "trainer.best_metric is ema_accuracy, the checkpoint's was accuracy: the best is reset" in caplog.text
    best = load_checkpoint(tmp_path / "best.pt")  # the EMA's 20 at epoch 3, though epoch 2's EMA had 95
    assert (best["epoch"], best["best_metric_name"], best["best_metric"]) == (3, "ema_accuracy", 20)
    assert results["best_ema_accuracy"] == 20


KEEP = ("trainer.epochs=5", "trainer.keep_best=2")
FORCED = (50, 70, 60, 80, 55)  # epochs 2 and 4 are the two best


def test_keep_best_keeps_exactly_the_k_best_epochs(toy_config, tmp_path: Path):
    fit(toy_config(*KEEP, accuracies(*FORCED)), tmp_path)
    assert kept_files(tmp_path) == ["best-2.pt", "best-4.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["best_checkpoints"] == [
        {"file": "best-4.pt", "epoch": 4, "value": 80},
        {"file": "best-2.pt", "epoch": 2, "value": 70},
    ]
    assert [load_checkpoint(tmp_path / f"best-{e}.pt")["epoch"] for e in (2, 4)] == [2, 4]
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 4
    assert not list(tmp_path.glob(".*.tmp"))


def test_keep_best_survives_a_resume_and_drops_files_past_the_checkpoint(toy_config, tmp_path: Path):
    fit(toy_config(*KEEP, "trainer.max_steps=24", accuracies(*FORCED[:3])), tmp_path)  # 8 steps an epoch: 3 epochs
    assert kept_files(tmp_path) == ["best-2.pt", "best-3.pt"]
    (tmp_path / "best-5.pt").write_bytes((tmp_path / "best-3.pt").read_bytes())  # a crashed later segment's file
    fit(toy_config(*KEEP, accuracies(*FORCED[3:])), tmp_path)  # epochs 4 and 5, each task counting from 1
    assert kept_files(tmp_path) == ["best-2.pt", "best-4.pt"]
    assert load_checkpoint(tmp_path / "best-4.pt")["global_step"] == 32


def test_best_checkpoints_rank_by_the_mode_and_skip_nonfinite_values():
    lowest = BestCheckpoints(2, maximize=False)
    assert lowest.offer(1, 0.5) == ("best-1.pt", [])
    assert lowest.offer(2, 0.7) == ("best-2.pt", [])
    assert lowest.offer(3, 0.6) == ("best-3.pt", ["best-2.pt"])
    assert lowest.offer(4, 0.6) == (None, [])  # a tie with the worst kept is not better
    assert lowest.offer(5, math.nan) == (None, [])
    assert lowest.offer(0.375, 0.1) == ("best-0.375.pt", ["best-3.pt"])  # after a trainer.max_steps stop
    assert [e["file"] for e in lowest.entries] == ["best-0.375.pt", "best-1.pt"]
    assert BestCheckpoints(0, maximize=True).offer(1, 1.0) == (None, [])
    assert (best_metric_name(None, "top1", ema=True), best_metric_name(None, "AP", ema=False)) == ("ema_top1", "AP")
