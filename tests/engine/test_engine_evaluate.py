"""Distributed evaluation: a 2-process run's results.json is what eval.py gives on its last.pt, in one
process and under torchrun (the ranks' BatchNorm statistics are averaged before evaluating and saving)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers.config import REPO, TINY_OVERRIDES
from helpers.processes import finish_entry, run_entry, start_entry

pytestmark = pytest.mark.slow

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def test_two_process_results_equal_eval_of_the_saved_checkpoint(tmp_path: Path, data_cache: Path):
    run_dir = tmp_path / "run"
    # ResNet-18 has 20 BatchNorm layers; 2 ranks x 7 steps of 16 tiny images each see different batches
    trained = run_entry(
        [
            *TORCHRUN,
            "train.py",
            f"data.root={data_cache}",
            *TINY_OVERRIDES,
            "trainer.deterministic=true",
            "schedule.warmup_epochs=0",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["world_size"] == 2 and results["val_images"] == 60

    model = torch.load(run_dir / "last.pt", weights_only=True)["model"]
    assert model["layer1.0.bn1.running_var"].std() > 0  # trained statistics, not the initial ones

    evaluations = {  # one process and two, side by side: each reads the checkpoint and writes its own folder
        name: start_entry(
            [*launcher, "eval.py", f"checkpoint={run_dir / 'last.pt'}", f"hydra.run.dir={tmp_path / name}"], cwd=REPO
        )
        for launcher, name in (([], "eval1"), (TORCHRUN, "eval2"))
    }
    for name, process in evaluations.items():
        evaluated = finish_entry(process)
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        assert (evaluated.stdout + evaluated.stderr).count("results written to") == 1  # rank 0 alone writes
        again = json.loads((tmp_path / name / "results.json").read_text())
        assert again["val_images"] == results["val_images"] and again["top1"] == results["top1"], (again, results)
        assert again["val_loss"] == pytest.approx(results["val_loss"], rel=1e-5, abs=1e-7)
        assert again["world_size"] == (2 if name == "eval2" else 1)
