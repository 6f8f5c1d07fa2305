"""A real two-job Hydra multirun through the submitit_local launcher, one job per logger backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.config import REPO
from helpers.processes import TOY, run_entry

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
