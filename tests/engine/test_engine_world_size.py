"""Resuming on another number of processes (an elastic restart with fewer or more nodes): the global batch and
the scaled learning rate follow the new world size, and the resume names the change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from aaconv.engine.optim import scaled_lr
from aaconv.engine.trainer import Trainer
from aaconv.tasks import build_task


def test_a_checkpoint_of_two_processes_resumed_by_one_rebuilds_the_schedule_for_its_global_batch(
    toy_config, tmp_path: Path, caplog
):
    cfg = toy_config("trainer.epochs=1")
    Trainer(cfg, build_task(cfg), tmp_path).fit()
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    state["world_size"] = 2  # as a 2-process run writes it (2 x data.batch_size per update)
    torch.save(state, tmp_path / "last.pt")

    resumed_cfg = toy_config("trainer.epochs=2")
    with caplog.at_level("WARNING", logger="aaconv"):
        trainer = Trainer(resumed_cfg, build_task(resumed_cfg), tmp_path)
        trainer.fit()
    notes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resume: ")]
    assert len(notes) == 1 and f"world_size=2 -> 1 (global batch {trainer.global_batch})" in notes[0], notes
    assert any("random streams differ" in r.getMessage() for r in caplog.records)

    # epoch 2 runs on the schedule of this run's global batch (1 process), at the checkpoint's step
    reference = torch.optim.SGD([torch.zeros(1)], lr=scaled_lr(float(cfg.optim.lr), trainer.global_batch, 256))
    schedule = instantiate(resumed_cfg.schedule, reference, epochs=2, steps_per_epoch=trainer.steps_per_epoch)
    record = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    schedule.step_update(record["step"])
    assert record["epoch"] == 2 and record["lr"] == pytest.approx(reference.param_groups[0]["lr"])
