"""Faults provoked for real on the toy task: a diverging run, NaN gradients, a changed schedule on resume, a
refused resume, a second writer, a failed checkpoint write, a save killed midway, file modes.
docs/reliability.md lists each with what happens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from aaconv.engine.checkpoint import load_checkpoint, nonfinite_tensors
from aaconv.engine.optim import scaled_lr
from aaconv.engine.precision import NonFiniteLossError, NonFiniteWeightsError
from aaconv.engine.trainer import Trainer
from aaconv.errors import CheckpointError, RunDirError
from aaconv.tasks import build_task
from helpers.config import REPO


def fit(cfg, run_dir: Path) -> tuple[Trainer, dict]:
    trainer = Trainer(cfg, build_task(cfg), run_dir)
    return trainer, trainer.fit()


def epochs_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_diverged_run_saves_no_nonfinite_weights_and_keeps_the_last_good_checkpoint(toy_config, tmp_path: Path):
    # lr 1e4 with the loss guard's abort off: the BatchNorm statistics go NaN within a few steps
    diverge = ("optim.lr=1e4", "+task.batchnorm=true", "trainer.max_bad_steps=0")
    with pytest.raises(NonFiniteWeightsError, match=r"the run diverged: \d+ weight/buffer tensors are NaN/inf"):
        fit(toy_config(*diverge, "trainer.checkpoint_every_steps=2", "trainer.epochs=3"), tmp_path / "scratch")
    for name in ("last.pt", "best.pt"):
        assert nonfinite_tensors(load_checkpoint(tmp_path / "scratch" / name)["model"]) == [], name

    # a good first epoch, then the run extended at lr 1e4: it stops; best.pt keeps the good epoch, last.pt
    # the last finite state, and the good epoch is a real starting point at a sane lr
    good = tmp_path / "good"
    fit(toy_config("+task.batchnorm=true"), good)
    best = (good / "best.pt").read_bytes()
    with pytest.raises(NonFiniteWeightsError, match="nothing was saved"):
        fit(toy_config(*diverge, "trainer.epochs=3"), good)
    assert (good / "best.pt").read_bytes() == best
    assert nonfinite_tensors(load_checkpoint(good / "last.pt")["model"]) == []
    trainer, results = fit(
        toy_config("+task.batchnorm=true", "trainer.epochs=3", f"trainer.resume={good / 'best.pt'}"), good
    )
    assert trainer.global_step == 24 and not nonfinite_tensors(trainer.model.state_dict())
    assert epochs_logged(good) == [1, 2, 3]  # the diverged attempt's epoch lines were dropped on resume


def test_a_nan_metric_never_becomes_the_best(toy_config, tmp_path: Path):
    trainer, results = fit(toy_config("trainer.epochs=2", "+task.nan_metric_evals=[1]"), tmp_path)
    assert trainer.best_metric == results["accuracy"] == results["best_accuracy"] > 0  # epoch 2's, not NaN
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2


def test_nan_gradients_behind_a_finite_loss_never_reach_the_weights(toy_config, tmp_path: Path):
    trainer, results = fit(toy_config("+task.nan_grad_batches=[2]"), tmp_path / "one")
    assert results["nonfinite_skipped"] == 1 and trainer.global_step == 8
    assert not nonfinite_tensors(trainer.model.state_dict())

    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        fit(toy_config("+task.nan_grad_batches=[2,3,4]", "trainer.max_bad_steps=3"), tmp_path / "many")


def test_extending_a_finished_run_rebuilds_the_schedule_from_the_current_config(toy_config, tmp_path: Path, caplog):
    fit(toy_config("trainer.epochs=2"), tmp_path)
    extended = toy_config("trainer.epochs=4", "optim.lr=0.4")
    with caplog.at_level("WARNING", logger="aaconv"):
        trainer, _ = fit(extended, tmp_path)
    notes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resume: ")]
    assert len(notes) == 1 and "trainer.epochs=2 -> 4" in notes[0] and "optim.lr=" in notes[0]

    # the lr of epochs 3 and 4 is that of a fresh 4-epoch schedule at lr 0.4, not the old schedule's tail (0)
    reference = torch.optim.SGD([torch.zeros(1)], lr=scaled_lr(0.4, trainer.global_batch, 256))
    schedule = instantiate(extended.schedule, reference, epochs=4, steps_per_epoch=trainer.steps_per_epoch)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    for record in records[2:]:
        schedule.step_update(record["step"])
        assert record["lr"] == pytest.approx(reference.param_groups[0]["lr"])
    assert records[2]["lr"] > 0.1 * reference.param_groups[0]["initial_lr"]
    assert "epochs: 4" in (tmp_path / "config.yaml").read_text()


def test_a_refused_resume_leaves_the_run_files_alone(toy_config, tmp_path: Path):
    fit(toy_config(), tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in ("config.yaml", "metrics.jsonl", "best.pt", "last.pt")}
    with pytest.raises(CheckpointError, match="holds optim.opt=sgd state, which optim.opt=adamw cannot continue"):
        Trainer(toy_config("optim.opt=adamw"), build_task(toy_config()), tmp_path).fit()
    with pytest.raises(RunDirError, match="trainer.resume=never but .* already holds a run"):
        Trainer(toy_config("trainer.resume=never"), build_task(toy_config()), tmp_path).fit()
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_best_pt_is_written_before_the_last_pt_that_names_it(toy_config, tmp_path: Path):
    (tmp_path / "best.pt").mkdir(parents=True)  # writing best.pt fails for real (os.replace onto a folder)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*best.pt"):
        fit(toy_config(), tmp_path)
    assert not (tmp_path / "last.pt").exists()  # no last.pt claims a best metric that best.pt does not hold
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_save_killed_midway_leaves_a_temp_file_the_next_start_removes(toy_config, tmp_path: Path):
    script = (
        "import sys, time; from aaconv.utils.atomic import atomic_write; "
        "atomic_write(sys.argv[1], lambda f: (f.write(bytes(1 << 20)), f.flush(), print('writing', flush=True), "
        "time.sleep(60)))"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "last.pt")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    strays = list(tmp_path.glob(".last.pt.*.tmp"))
    assert len(strays) == 1 and strays[0].stat().st_size == 1 << 20
    (tmp_path / ".notes.tmp").write_text("not ours")
    fit(toy_config(), tmp_path)
    assert not list(tmp_path.glob(".last.pt.*.tmp")) and (tmp_path / ".notes.tmp").exists()


def test_run_files_follow_the_umask(toy_config, tmp_path: Path):
    previous = os.umask(0o027)
    try:
        fit(toy_config(), tmp_path)
    finally:
        os.umask(previous)
    for name in ("last.pt", "best.pt", "results.json", "config.yaml", "metrics.jsonl"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name


def test_a_run_dir_held_by_another_process_is_refused_until_that_process_dies(toy_config, tmp_path: Path):
    script = (
        "import sys, time; from aaconv.engine.run_lock import RunLock; RunLock(sys.argv[1]); "
        "print('locked', flush=True); time.sleep(60)"
    )
    tmp_path.mkdir(exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"is in use by process {holder.pid} on "):
            Trainer(toy_config(), build_task(toy_config()), tmp_path).fit()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel drops the lock, the lock file stays
        holder.wait()
    start = time.monotonic()
    fit(toy_config(), tmp_path)
    assert (tmp_path / ".lock").exists() and time.monotonic() - start < 60


def test_a_run_dir_that_cannot_be_created_is_one_error_before_training(toy_config, tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match=r"cannot create run directory .*file/run \(Not a directory\)"):
        Trainer(toy_config(), build_task(toy_config()), tmp_path / "file" / "run").fit()
