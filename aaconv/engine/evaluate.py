"""Re-evaluation of a saved checkpoint, and what results.json says about a run besides its metrics."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig

from aaconv.engine.loaders import build_eval_loader
from aaconv.engine.stored_config import check_stored_config
from aaconv.errors import ConfigError
from aaconv.utils import distributed as dist
from aaconv.utils.atomic import write_json_atomic

if TYPE_CHECKING:  # the engine receives a task; it never imports one
    from aaconv.tasks.base import Task

log = logging.getLogger("aaconv")


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def reported_metrics(metrics: Mapping[str, Any], ema: bool) -> dict[str, Any]:
    """results.json's metrics from the trainer's evaluation `metrics` (metrics.jsonl's keys): with `ema`, the EMA
    weights' under the task's names (top1, AP, ...) and the model's as model_<name>; `weights` says which
    weights the plain names are of (what eval.py's weights=auto evaluates in the run's checkpoints)."""
    if not ema:
        return {**metrics, "weights": "model"}
    reported = {k.removeprefix("ema_"): v for k, v in metrics.items() if k.startswith("ema_")}
    raw = {f"model_{k}": v for k, v in metrics.items() if not k.startswith("ema_")}
    return {**reported, **raw, "weights": "ema"}


def run_facts(cfg: DictConfig | dict, model: torch.nn.Module) -> dict[str, Any]:
    """What results.json says about the run besides its metrics."""
    return {
        "model": cfg["backbone"]["name"],
        "attention": cfg["attention"]["variant"],
        "task": cfg["task"]["_target_"].rsplit(".", 1)[-1],
        "data": cfg["data"]["name"],
        "params": count_parameters(model),
    }


EVAL_SIZE_KEYS = ("eval_image_size", "crop_pct")  # classification's eval transform: data.* keys eval.py sets


def run_config(
    state: Mapping[str, Any],
    checkpoint: str | os.PathLike,
    data_overrides: Mapping[str, Any],
    targets: Mapping[str, set[str]],
) -> DictConfig:
    """The training run's config in checkpoint `state`, checked to be plain data that names only `targets` (see
    aaconv.engine.stored_config), with `data_overrides` applied to its `data` group (a None value keeps the run's;
    the evaluation size and crop `eval_image_size`, `crop_pct` of a config written without them stay as the run had
    them), and no pretrained backbone weights to fetch: the checkpoint holds the trained ones."""
    run_cfg = check_stored_config(state.get("config"), f"checkpoint {checkpoint}", targets)
    run_cfg.backbone.weights = None
    run_cfg.task.pop("weights", None)  # where detection runs kept it before backbone.weights
    overrides = {key: value for key, value in data_overrides.items() if value is not None}
    if "detection" in run_cfg.data and any(key in overrides for key in EVAL_SIZE_KEYS):
        raise ConfigError(
            "eval_image_size / crop_pct set classification's evaluation size and crop; a detection run resizes "
            "with its detector's data.detection.min_size / max_size: leave them null"
        )
    for key, value in overrides.items():
        run_cfg.data[key] = value
    return run_cfg


def evaluate_checkpoint(
    task: Task,
    model: torch.nn.Module,
    run_cfg: DictConfig,
    device: torch.device,
    output_dir: str | os.PathLike,
    facts: Mapping[str, Any],
) -> dict[str, Any]:
    """Evaluates `model` (a checkpoint's, rebuilt by aaconv.runs.rebuild_run) with `task` on its validation split;
    writes and returns results.json in `output_dir`: the metrics, the run's facts and `facts` (which weights,
    the epochs trained, the checkpoint's path).

    Under torchrun / Slurm (a process group set up by the caller), each process evaluates its shard of
    the split (every image on exactly one rank), and rank 0 alone writes the files."""
    model.to(device)
    _, val_set = task.build_datasets()
    loader = build_eval_loader(
        val_set,
        batch_size=int(run_cfg.data.batch_size),
        data=run_cfg.data,
        collate_fn=task.collate_fn,
        rank=dist.rank(),
        world_size=dist.world_size(),
    )
    output = Path(output_dir)
    if dist.is_main_process():
        output.mkdir(parents=True, exist_ok=True)
    metrics = task.evaluate(model, loader, device, output_dir=output)
    results = {**metrics, **run_facts(run_cfg, model), **facts, "world_size": dist.world_size()}
    if dist.is_main_process():
        write_json_atomic(results, output / "results.json")
        log.info("results: %s", json.dumps(results))
        log.info("results written to %s", (output / "results.json").resolve())
    return results
