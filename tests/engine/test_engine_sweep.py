"""Real Hydra multiruns through the submitit_local launcher: two jobs, one per logger backend; a job preempted
mid-epoch, requeued by submitit and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers.config import REPO
from helpers.processes import TOY, load_weights, run_entry

pytestmark = pytest.mark.slow


def test_submitit_local_sweep_runs_two_jobs_with_tensorboard_and_offline_wandb(tmp_path: Path, data_cache: Path):
    sweep = tmp_path / "sweep"
    proc = run_entry(
        [
            "train.py",
            "-m",
            "hydra/launcher=submitit_local",
            "logger=tensorboard,wandb",
            *TOY,
            f"data.root={data_cache}",
            "data.workers=0",
            "trainer.epochs=1",
            "logger.progress_bar=false",
            f"hydra.sweep.dir={sweep}",
            "hydra.launcher.timeout_min=10",
        ],
        cwd=REPO,
        env={"WANDB_SILENT": "true"},
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    job_dirs = sorted(p.parent for p in sweep.glob("*/results.json"))
    assert [d.name.split("_")[0] for d in job_dirs] == ["0", "1"]
    assert "logger=tensorboard" in job_dirs[0].name and "data.root" not in job_dirs[0].name
    for job_dir in job_dirs:
        assert json.loads((job_dir / "results.json").read_text())["val_images"] == 45
        assert (job_dir / "metrics.jsonl").is_file() and (job_dir / "config.yaml").is_file()
    assert list((job_dirs[0] / "tensorboard").glob("events.out.tfevents.*"))
    offline_runs = list((job_dirs[1] / "wandb").glob("offline-run-*"))
    assert offline_runs and list(offline_runs[0].glob("*.wandb"))
    assert len([p for p in sweep.glob(".submitit/*") if p.name.isdigit()]) == 2  # two submitit jobs


NOT_COMPARED = {"train_images_per_s", "train_time_s", "peak_memory_mb", "checkpoint"}  # timings, the run's own path


def test_preempted_submitit_job_is_requeued_and_resumes_to_the_uninterrupted_result(tmp_path: Path):
    # two jobs, the same training: job 1 sends itself SIGUSR2 (what submitit asks Slurm to send before the time
    # limit) at its 11th batch (epoch 2, batch 3), job 0 runs through. timeout_min=60: this early in the job,
    # submitit takes the signal for a preemption, not a timeout (which would count against max_num_timeout)
    sweep = tmp_path / "sweep"
    proc = run_entry(
        ["train.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=60", f"hydra.sweep.dir={sweep}"]
        + [*TOY, "data.workers=0", "logger.progress_bar=false", "trainer.deterministic=true", "trainer.epochs=2"]
        + ["+task.dropout=0.2", "+task.signal_at=0,11", "+task.signal_name=SIGUSR2"],  # dropout: the model RNG
        cwd=REPO,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference, preempted = sorted(p.parent for p in sweep.glob("*/results.json"))
    assert "signal_at=11" in preempted.name
    logs = {p.read_text().count("Starting with"): p.read_text() for p in sweep.glob(".submitit/*/*_0_log.out")}
    assert sorted(logs) == [1, 2], logs  # each start of a job appends to its submitit log
    text = logs[2]
    assert "received SIGUSR2: checkpointing" in text and "this job is preempted" in text, text[-3000:]
    assert "at epoch 1, batch 3" in text.split("Requeued job")[0]
    assert "resumed from" in text.split("Requeued job")[-1]

    results = json.loads((preempted / "results.json").read_text())
    expected = json.loads((reference / "results.json").read_text())
    assert {k: v for k, v in results.items() if k not in NOT_COMPARED} == {
        k: v for k, v in expected.items() if k not in NOT_COMPARED
    }
    final, expected_weights = load_weights(preempted / "last.pt"), load_weights(reference / "last.pt")
    assert final.keys() == expected_weights.keys()
    for key in expected_weights:
        assert torch.equal(final[key], expected_weights[key]), key
    epochs = [json.loads(line)["epoch"] for line in (preempted / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
