"""The training loop: builds the task's model and data, trains, evaluates and checkpoints every epoch."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from aaconv.engine.checkpoint import save_checkpoint
from aaconv.engine.metrics_log import MetricsLog
from aaconv.engine.runtime import seed_everything, select_device
from aaconv.tasks import build_task

log = logging.getLogger("aaconv")


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_loader(dataset: torch.utils.data.Dataset, task: Any, data: DictConfig, train: bool, seed: int) -> DataLoader:
    """Shuffled, drop-last loader for training; ordered, complete loader for evaluation."""
    workers = int(data.workers)
    return DataLoader(
        dataset,
        batch_size=int(data.batch_size),
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        collate_fn=task.collate_fn,
        generator=torch.Generator().manual_seed(seed) if train else None,
    )


class Trainer:
    """Trains `cfg.task` for `cfg.trainer.epochs`, writing into `run_dir`:

    last.pt (each epoch), metrics.jsonl (one line per epoch), results.json (at the end).
    """

    def __init__(self, cfg: DictConfig, run_dir: str | os.PathLike):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = select_device(cfg.trainer.device)
        seed_everything(cfg.seed)
        self.task = build_task(cfg)
        self.model = self.task.build_model().to(self.device)
        train_set, val_set = self.task.build_datasets()
        self.train_loader = build_loader(train_set, self.task, cfg.data, train=True, seed=cfg.seed)
        self.val_loader = build_loader(val_set, self.task, cfg.data, train=False, seed=cfg.seed)
        self.epochs = int(cfg.trainer.epochs)
        global_batch = int(cfg.data.batch_size)
        self.optimizer = instantiate(cfg.optim, self.model, global_batch)
        self.scheduler = instantiate(cfg.schedule, self.optimizer, epochs=self.epochs, steps_per_epoch=len(self.train_loader))
        self.metrics_log = MetricsLog(self.run_dir)
        self.global_step = 0
        self.epoch = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def train_one_epoch(self) -> dict[str, float]:
        self.model.train()
        loss_sum, images, start = 0.0, 0, time.perf_counter()
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.epochs}", disable=not self.cfg.logger.progress_bar)
        for batch in bar:
            loss, batch_images = self.task.training_loss(self.model, batch, self.device)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.global_step += 1
            self.scheduler.step_update(self.global_step)
            loss_sum += loss.item() * batch_images
            images += batch_images
            bar.set_postfix(loss=f"{loss.item():.3f}")
        seconds = time.perf_counter() - start
        return {"train_loss": loss_sum / images, "train_images_per_s": images / seconds, "epoch_time_s": seconds}

    def fit(self) -> dict[str, Any]:
        """Trains every epoch, evaluating and checkpointing after each; returns (and writes) results.json."""
        log.info("model %s (%s attention): %.2fM parameters on %s", self.cfg.backbone.name,
                 self.cfg.attention.variant, count_parameters(self.model) / 1e6, self.device)
        train_stats: dict[str, float] = {}
        metrics: dict[str, float] = {}
        start = time.perf_counter()
        for epoch in range(self.epoch, self.epochs):
            self.epoch = epoch
            train_stats = self.train_one_epoch()
            metrics = self.task.evaluate(self.model, self.val_loader, self.device)
            lr = self.optimizer.param_groups[0]["lr"]
            self.metrics_log.write({"epoch": epoch + 1, "step": self.global_step, "lr": lr, **train_stats, **metrics})
            self.epoch = epoch + 1
            save_checkpoint(self.state_dict(), self.run_dir / "last.pt")
        results = {
            **metrics,
            **run_facts(self.cfg, self.model),
            "epochs": self.epochs,
            "train_images_per_s": train_stats.get("train_images_per_s"),
            "train_time_s": time.perf_counter() - start,
            "device": str(self.device),
            "checkpoint": str(self.run_dir / "last.pt"),
        }
        write_json_atomic(results, self.run_dir / "results.json")
        log.info("results: %s", json.dumps(results))
        log.info("run directory: %s", self.run_dir.resolve())
        return results


def run_facts(cfg: DictConfig | dict, model: torch.nn.Module) -> dict[str, Any]:
    """What results.json says about the run besides its metrics."""
    return {
        "model": cfg["backbone"]["name"],
        "attention": cfg["attention"]["variant"],
        "task": cfg["task"]["_target_"].rsplit(".", 1)[-1],
        "data": cfg["data"]["name"],
        "params": count_parameters(model),
    }
