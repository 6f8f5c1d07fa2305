"""Where metrics go: the console and `metrics.jsonl` always; TensorBoard or Weights & Biases on request, with
pictures of the attention maps at each evaluation when `logger.attention_images` > 0 (aaconv.engine.attention_maps).

Only rank 0 builds loggers (`build_logger` returns one that drops everything on other ranks). The trainer writes
each epoch's line itself (before its checkpoint: docs/reliability.md); the step scalars (`LogSteps`) and the
progress bar (`ProgressBar`) are trainer callbacks (aaconv.engine.callbacks).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from aaconv.engine.callbacks import Callback
from aaconv.errors import AAConvError

if TYPE_CHECKING:
    from aaconv.engine.trainer import Trainer

log = logging.getLogger("aaconv")


def _format(record: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())


class RunLogger:
    """Per-epoch records to `<run_dir>/metrics.jsonl` (one flushed line each) and the console;
    per-step and per-epoch scalars to the optional TensorBoard / W&B backends."""

    def __init__(self, run_dir: Path | None, backends: list[Any] | None = None):
        self.path = None if run_dir is None else Path(run_dir) / "metrics.jsonl"
        self.backends = backends or []

    def log_step(self, scalars: Mapping[str, float], step: int) -> None:
        for backend in self.backends:
            backend.log(scalars, step)

    def log_epoch(self, record: Mapping[str, Any], step: int) -> None:
        if self.path is None:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(dict(record)) + "\n")
        log.info(_format(record))
        scalars = {k: float(v) for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        for backend in self.backends:
            backend.log(scalars, step)

    def log_images(self, images: Mapping[str, torch.Tensor], step: int) -> None:
        """(3, H, W) pictures with values in [0, 1], by tag, to the backends (TensorBoard, W&B)."""
        for backend in self.backends:
            backend.log_images(images, step)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


class TensorBoardBackend:
    """Event files in `<run_dir>/tensorboard` (`tensorboard --logdir outputs/`)."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_images(self, images: Mapping[str, torch.Tensor], step: int) -> None:
        for tag, image in images.items():
            self.writer.add_image(tag, image, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbBackend:
    """A W&B run in `<run_dir>/wandb`; offline (synced later with `wandb sync`) when no API key is set or
    `mode=offline`. The run id is kept in `<run_dir>/wandb_id` so a resumed run continues the same W&B run."""

    def __init__(
        self,
        run_dir: Path,
        config: Mapping[str, Any],
        *,
        project: str,
        entity: str | None,
        mode: str,
        name: str | None = None,
        tags: list[str] | None = None,
    ):
        try:
            import wandb
        except ImportError as e:
            raise AAConvError("logger=wandb needs the wandb package: pip install wandb") from e
        if mode == "auto":
            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        id_file = Path(run_dir) / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        id_file.write_text(run_id + "\n")
        self.wandb = wandb
        self.run = wandb.init(
            project=project,
            entity=entity,
            mode=mode,
            dir=str(run_dir),
            config=dict(config),
            name=name,
            tags=tags,
            id=run_id,
            resume="allow",
        )

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        self.run.log(dict(scalars), step=step)

    def log_images(self, images: Mapping[str, torch.Tensor], step: int) -> None:
        self.run.log(
            {tag: self.wandb.Image(image.permute(1, 2, 0).numpy()) for tag, image in images.items()}, step=step
        )

    def close(self) -> None:
        self.run.finish()


def build_logger(logger_cfg: Mapping[str, Any], run_dir: Path, config: Mapping[str, Any], is_main: bool) -> RunLogger:
    """The `logger` config group: name console | tensorboard | wandb (plus that backend's keys)."""
    if not is_main:
        return RunLogger(None)
    name = logger_cfg["name"]
    if name == "console":
        backends: list[Any] = []
    elif name == "tensorboard":
        backends = [TensorBoardBackend(run_dir)]
    elif name == "wandb":
        backends = [
            WandbBackend(
                run_dir,
                config,
                project=logger_cfg["project"],
                entity=logger_cfg.get("entity"),
                mode=logger_cfg.get("mode", "auto"),
                name=logger_cfg.get("run_name"),
                tags=logger_cfg.get("tags"),
            )
        ]
    else:
        raise AAConvError(f"logger={name}: choose console, tensorboard or wandb")
    return RunLogger(run_dir, backends)


class LogSteps(Callback):
    """The training loss and learning rate to the TensorBoard / W&B backends every `every` optimizer updates
    (`logger.log_every_steps`)."""

    def __init__(self, every: int):
        self.every = every

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        if trainer.global_step % self.every == 0:
            lr = trainer.optimizer.param_groups[0]["lr"]
            trainer.logger.log_step({"train/loss": loss.item(), "train/lr": lr}, trainer.global_step)


class ProgressBar(Callback):
    """A tqdm bar of each epoch's training batches (`logger.progress_bar`), showing the loss and learning rate
    every `every` updates; on rank 0 and a terminal only: redirected to a file, its redraws would flood the log."""

    def __init__(self, every: int):
        self.every = every
        self.bar: tqdm | None = None

    def on_epoch_start(self, trainer: Trainer) -> None:
        self.bar = tqdm(
            desc=f"epoch {trainer.epoch + 1}/{trainer.epochs}",
            disable=not (trainer.is_main and sys.stderr.isatty()),
            initial=trainer.batch_in_epoch,
            total=trainer.steps_per_epoch * trainer.accum_steps,  # the tail that fills no update is dropped
        )

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        if self.bar is None:
            return
        self.bar.update(trainer.accum_steps)
        if trainer.global_step % self.every == 0:
            self.bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{trainer.optimizer.param_groups[0]['lr']:.3g}")

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.on_close(trainer)  # the epoch's batches are done; its metrics line follows

    def on_close(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
