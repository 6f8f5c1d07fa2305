"""Re-evaluation of a saved checkpoint, rebuilt from the config stored inside it."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aaconv.engine.atomic import write_json_atomic
from aaconv.engine.checkpoint import load_checkpoint, load_model_state
from aaconv.engine.runtime import select_device
from aaconv.engine.loaders import build_eval_loader
from aaconv.engine.trainer import run_facts
from aaconv.tasks import build_task

log = logging.getLogger("aaconv")


def run_config(state: dict[str, Any], cfg: DictConfig) -> DictConfig:
    """The training run's config with eval.yaml's data overrides applied."""
    run_cfg = OmegaConf.create(state["config"])
    for key, value in (("root", cfg.data_root), ("batch_size", cfg.batch_size), ("workers", cfg.workers)):
        if value is not None:
            run_cfg.data[key] = value
    return run_cfg


def evaluate_checkpoint(cfg: DictConfig, output_dir: str | os.PathLike) -> dict[str, Any]:
    """Evaluates `cfg.checkpoint` on its run's validation split; writes and returns results.json."""
    state = load_checkpoint(cfg.checkpoint)
    run_cfg = run_config(state, cfg)
    device = select_device(cfg.device)
    task = build_task(run_cfg)
    model = task.build_model()
    load_model_state(model, state["model"], source=f"checkpoint {cfg.checkpoint}")
    model.to(device)
    _, val_set = task.build_datasets()
    loader = build_eval_loader(val_set, batch_size=int(run_cfg.data.batch_size), data=run_cfg.data,
                               collate_fn=task.collate_fn, rank=0, world_size=1)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    task.output_dir = output
    metrics = task.evaluate(model, loader, device)
    results = {**metrics, **run_facts(run_cfg, model), "epochs": state["epoch"], "checkpoint": str(cfg.checkpoint)}
    write_json_atomic(results, output / "results.json")
    log.info("results: %s", json.dumps(results))
    log.info("results written to %s", (output / "results.json").resolve())
    return results
