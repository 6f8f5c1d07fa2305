"""The training loop: builds the task's model and data, trains (distributed, mixed precision, accumulated,
clipped, EMA), evaluates, checkpoints and resumes, and stops cleanly on preemption signals.

A run directory holds last.pt (every epoch, every `trainer.checkpoint_every_steps` updates and on preemption),
best.pt (best `trainer.best_metric`, aaconv.engine.best), with `trainer.keep_best=k` the k best as
best-<epoch>.pt, metrics.jsonl (one line per epoch), config.yaml (resolved), the caller's
`record` (train.py: Hydra's .hydra/ files, aaconv.engine.run_record) and results.json (at the end). Rerunning
the same command in the same directory continues from last.pt.

With several processes, BatchNorm running statistics are averaged over the ranks before every evaluation
and checkpoint (timm's `distribute_bn` with reduce=True): DDP synchronises gradients, not buffers, so each
rank would otherwise evaluate, and rank 0 save, a model of its own.

What runs beside the loop (step scalars, the progress bar, attention images, preemption and the user's own, the
`callbacks` config group) is a list of callbacks called at named events, after the trainer's own files
(aaconv.engine.callbacks lists the events and their order; `build_callbacks` the list's).

Constructing a Trainer only reads its config and builds the callbacks: fit() joins the process group, claims the run
directory and builds the run before training.

Reliability (docs/reliability.md): one process writes a run directory at a time (run_lock); an epoch's line
is appended to metrics.jsonl before its checkpoint, and lines past the checkpoint are dropped on resume;
best.pt is written before the last.pt that names it; NaN / inf weights are never saved; a collective that
waits longer than `trainer.dist_timeout_s` (a dead or hung process) fails the run instead of hanging it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from aaconv.engine.attention_maps import AttentionImages
from aaconv.engine.best import BestCheckpoints, best_metric_name, check_best_metric, improves
from aaconv.engine.callbacks import Callback, CallbackList, user_callbacks
from aaconv.engine.checkpoint import load_checkpoint, nonfinite_tensors, save_checkpoint
from aaconv.engine.config_checks import build_model
from aaconv.engine.distributed import destroy_distributed, init_distributed
from aaconv.engine.ema import ema_decay
from aaconv.engine.evaluate import count_parameters, reported_metrics, run_facts
from aaconv.engine.loaders import build_eval_loader, build_train_loader
from aaconv.engine.loggers import LogSteps, ProgressBar, RunLogger, build_logger
from aaconv.engine.precision import NonFiniteGuard, NonFiniteWeightsError, Precision, gradient_norm
from aaconv.engine.resume import changed_keys, check_same_optimizer, trim_epoch_records
from aaconv.engine.run_lock import RunLock, claim_run_dir
from aaconv.engine.run_record import write_record
from aaconv.engine.runtime import (
    rng_state,
    seed_everything,
    select_device,
    set_cpu_allocator,
    set_deterministic,
    set_rng_state,
)
from aaconv.engine.signals import Preemption
from aaconv.errors import AAConvError, CheckpointError, DistributedError, RunDirError, first_line
from aaconv.utils import distributed as dist
from aaconv.utils.atomic import write_json_atomic
from aaconv.utils.grad_checkpointing import enable_grad_checkpointing
from aaconv.utils.state_dict import load_model_state

if TYPE_CHECKING:  # the engine receives a task; it never imports one
    from aaconv.tasks.base import Task

log = logging.getLogger("aaconv")

# written by atomic_write (names or glob patterns)
ATOMIC_FILES = ["best.pt", "best-*.pt", "last.pt", "results.json", "metrics.jsonl", "predictions.json"]


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on `device`, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def average_batchnorm_buffers(model: nn.Module) -> None:
    """Replaces each BatchNorm running mean / variance by its mean over all processes (in place; a no-op in
    one process), so that every rank holds the same model."""
    if not dist.is_distributed():
        return
    world = dist.world_size()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var):
                buffer.copy_(dist.all_reduce_sum(buffer) / world)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Drops the records of logger `name` for the block."""
    logger = logging.getLogger(name)
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def _collective_failure(error: BaseException) -> bool:
    """Whether `error` is a failed collective: torch's DistError (NCCL), or gloo's RuntimeError for a timed-out
    or broken connection to another process."""
    text = str(error).lower()
    return isinstance(error, torch.distributed.DistError) or (
        isinstance(error, RuntimeError)
        and any(s in text for s in ("timed out", "connection closed", "connection reset"))
    )


def build_callbacks(cfg: DictConfig) -> CallbackList:
    """The run's callbacks, in the order each event calls them (after the trainer's own metrics line and
    checkpoints):

    1. the built-in loggers, which only observe: step scalars (`logger.log_every_steps`), the progress bar
       (`logger.progress_bar`), attention images (`logger.attention_images`);
    2. the user's, the `callbacks` config group, in the order of its mapping;
    3. preemption (`trainer.preempt_signals`): last, as it writes last.pt and may end the process.
    """
    logger_cfg, t = cfg.logger, cfg.trainer
    every = int(logger_cfg.log_every_steps)
    callbacks: list[Callback] = [LogSteps(every)]
    if logger_cfg.progress_bar:
        callbacks.append(ProgressBar(every))
    if logger_cfg.get("attention_images", 0):
        callbacks.append(AttentionImages(logger_cfg))
    callbacks += user_callbacks(cfg.get("callbacks") or {})
    callbacks.append(Preemption(list(t.preempt_signals), requeue=bool(t.requeue)))
    return CallbackList(callbacks)


def _channels_last_inputs(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.ndim == 4 else a for a in args
    )


class Trainer:
    """Trains `task` (built from `cfg.task` by the caller) for `cfg.trainer.epochs` epochs, writing into
    `run_dir` (see the module docstring).

    Distributed when started by torchrun or Slurm (one process per GPU): each process loads
    `data.batch_size` images per step; only rank 0 logs and writes files. `record` ({path in the run
    directory: text}) is written beside config.yaml, only by a run that holds the directory.

    Construction builds the callbacks (`build_callbacks`) and nothing else: fit() sets the run up (`_setup`).
    """

    def __init__(
        self, cfg: DictConfig, task: Task, run_dir: str | os.PathLike, record: Mapping[str, str] | None = None
    ):
        self.cfg = cfg
        self.task = task
        self.run_dir = Path(run_dir)  # rank 0's once fit() has started
        self.record = dict(record or {})
        self.callbacks = build_callbacks(cfg)
        self.logger: RunLogger | None = None  # opened by fit(), with the run directory
        self.run_lock: RunLock | None = None

    def _setup(self) -> None:
        """Joins the process group, builds the model, data and optimisation, claims the run directory and
        resumes or starts the run."""
        self._setup_runtime()
        self._build_model()
        self._build_data()
        self._build_optimisation()
        self._wrap_model()
        self._init_state()

    def _setup_runtime(self) -> None:
        """Joins the process group, agrees on rank 0's run directory, picks the device and seeds the run."""
        t = self.cfg.trainer
        self.env = init_distributed(t.dist_backend, timeout_min=float(t.dist_timeout_s) / 60)
        self.is_main = self.env.rank == 0
        if not self.is_main:
            log.setLevel(logging.WARNING)
        self.run_dir = Path(dist.broadcast_object(str(self.run_dir)))  # Hydra's timestamps may differ per process
        self.device = select_device(t.device, self.env.local_rank)
        set_deterministic(bool(t.deterministic), bool(t.cudnn_benchmark))
        set_cpu_allocator(t.cpu_allocator)
        seed_everything(self.cfg.seed)  # the same initial weights on every rank

    def _build_model(self) -> None:
        """Builds the task's model (SyncBatchNorm, gradient checkpointing, device, channels_last) as `self.model`."""
        t = self.cfg.trainer
        model = build_model(self.task.build_model)
        if t.sync_bn and self.env.world_size > 1:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                log.warning("trainer.sync_bn ignored: torch's SyncBatchNorm runs on GPUs only")
        if t.grad_checkpointing:
            enable_grad_checkpointing(model)
        model.to(self.device)
        if t.channels_last:
            model.to(memory_format=torch.channels_last)
            model.register_forward_pre_hook(_channels_last_inputs)
        self.model = model  # plain module: state dicts and checkpoints carry no DDP/compile prefixes

    def _build_data(self) -> None:
        """Builds the task's datasets, this rank's loaders and the number of optimizer updates per epoch."""
        cfg, t = self.cfg, self.cfg.trainer
        train_set, val_set = self.task.build_datasets()
        self.accum_steps = int(t.accum_steps)
        self.batch_size = int(cfg.data.batch_size)
        shared = dict(
            batch_size=self.batch_size,
            data=cfg.data,
            collate_fn=self.task.collate_fn,
            rank=self.env.rank,
            world_size=self.env.world_size,
        )
        self.train_loader, self.train_sampler, self.batch_skipper = build_train_loader(
            train_set, seed=int(cfg.seed), group_ids=self.task.group_ids(train_set), **shared
        )
        self.val_loader = build_eval_loader(val_set, max_batches=t.max_eval_batches, **shared)
        # validation images evaluated by all ranks together; fewer than the split under trainer.max_eval_batches
        self.eval_images = len(self.val_loader.sampler.indices)  # type: ignore[attr-defined]
        self.eval_partial = self.eval_images < len(val_set)
        self.steps_per_epoch = len(self.train_loader) // self.accum_steps  # optimizer updates per epoch
        if self.steps_per_epoch == 0:
            raise AAConvError(
                f"{len(self.train_loader)} batches per epoch make no update of trainer.accum_steps={self.accum_steps}"
            )

    def _build_optimisation(self) -> None:
        """Builds the optimizer, learning-rate schedule, mixed precision, non-finite guard and EMA."""
        cfg, t = self.cfg, self.cfg.trainer
        self.epochs = int(t.epochs)
        self.max_steps = int(t.max_steps) if t.max_steps else None
        self.global_batch = self.batch_size * self.env.world_size * self.accum_steps
        self.optimizer = instantiate(cfg.optim, self.model, self.global_batch)
        # timm warns that cosine annealing "will have no effect" when the schedule is one update long (a smoke run)
        with _quiet_logger("timm.scheduler.cosine_lr"):
            self.scheduler = instantiate(
                cfg.schedule, self.optimizer, epochs=self.epochs, steps_per_epoch=self.steps_per_epoch
            )
        self.precision = Precision(t.precision, self.device)
        self.guard = NonFiniteGuard(int(t.max_bad_steps))
        self.ema = (
            ModelEmaV3(self.model, decay=ema_decay(t.ema, self.global_batch), use_warmup=bool(t.ema.warmup))
            if t.ema.enabled
            else None
        )

    def _wrap_model(self) -> None:
        """Sets `eval_model` (compiled if `trainer.compile`) and `train_model` (that, in DDP with several
        processes)."""
        t = self.cfg.trainer
        forward_model: nn.Module = torch.compile(self.model) if t.compile else self.model  # compiled before DDP
        self.eval_model = forward_model
        self.train_model: nn.Module = forward_model
        if self.env.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(
                forward_model, device_ids=device_ids, find_unused_parameters=bool(t.find_unused_parameters)
            )

    def _init_state(self) -> None:
        """Zeroes the counters, claims the run directory and resumes or starts the run."""
        t = self.cfg.trainer
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # batches of epoch `self.epoch` already trained on
        self.global_step = 0  # optimizer updates
        self.best_metric_name = best_metric_name(t.best_metric, self.task.primary_metric, self.ema is not None)
        self.best_metric: float | None = None  # of best_metric_name
        self.kept_best = BestCheckpoints(int(t.keep_best), maximize=self.task.primary_metric_mode == "max")
        self.train_time_s = 0.0  # fit() time up to the last checkpoint, summed over the run's segments
        self.clock: float | None = None  # perf_counter() at the last count of train_time_s, while training
        self.train_images_per_s: float | None = None  # the last epoch's
        self._buffers_averaged_at: int | None = None  # global_step of the last average_batchnorm_buffers
        self.run_lock = self._claim_run_dir(t.resume)  # nothing above writes into the run directory
        self._open_run(t.resume)  # a failure is fit()'s: close() unlocks the directory

    def _claim_run_dir(self, resume: str | None) -> RunLock | None:
        """Rank 0 locks the run directory (aaconv.engine.run_lock); every rank raises when it could not."""
        lock, error = None, None
        if self.is_main:
            try:
                lock = claim_run_dir(self.run_dir, resume, ATOMIC_FILES)
            except RunDirError as e:
                error = str(e)
        error = dist.broadcast_object(error)
        if error is not None:
            raise RunDirError(error)
        return lock

    def _open_run(self, resume: str | None) -> None:
        """Resumes (or seeds a fresh run), then writes config.yaml and the record and opens the loggers: a
        refused resume leaves the run's files as they were."""
        if not self.resume(resume):
            seed_everything(int(self.cfg.seed) + self.env.rank)  # per-rank streams (dropout, ...) from here on
        if self.is_main and (dropped := trim_epoch_records(self.run_dir / "metrics.jsonl", self.epochs_done())):
            log.warning(
                "dropped %d metrics.jsonl line(s) of epochs after the checkpoint's %g", dropped, self.epochs_done()
            )
        config = OmegaConf.to_container(self.cfg, resolve=True)
        if self.is_main:
            (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
            write_record(self.run_dir, self.record)
        self.logger = build_logger(self.cfg.logger, self.run_dir, config, self.is_main)  # type: ignore[arg-type]

    # ---- checkpoints -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs; every process must call it (the RNG states are gathered from all ranks)."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "best_metric": self.best_metric,
            "best_metric_name": self.best_metric_name,
            "best_checkpoints": self.kept_best.entries,
            "nonfinite_skipped": self.guard.skipped,
            "train_time_s": self.train_time_s,
            "train_images_per_s": self.train_images_per_s,
            "world_size": self.env.world_size,
            "rng": dist.all_gather_objects(rng_state()),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def sync_buffers(self) -> None:
        """Averages BatchNorm statistics over the ranks (model and EMA), once per optimizer step at most;
        every rank must call it."""
        if self._buffers_averaged_at == self.global_step:
            return
        average_batchnorm_buffers(self.model)
        if self.ema is not None:
            average_batchnorm_buffers(self.ema.module)
        self._buffers_averaged_at = self.global_step

    def save(self, *names: str, remove: list[str] | None = None) -> None:
        """Writes the state to each of `names` in the run directory, in that order, deleting the files `remove`
        (best-<epoch>.pt out of trainer.keep_best) before the last one (rank 0; all ranks must call). Raises
        NonFiniteWeightsError instead when a weight or buffer is NaN / inf: the files keep the last finite state."""
        self._count_train_time()
        self.sync_buffers()
        state = self.state_dict()
        self._check_finite(state)
        if self.is_main:
            for name in names[:-1]:
                save_checkpoint(state, self.run_dir / name)
            for name in remove or []:
                (self.run_dir / name).unlink(missing_ok=True)
            save_checkpoint(state, self.run_dir / names[-1])
        dist.barrier()
        self.callbacks.call("on_checkpoint", self, names)

    def _check_finite(self, state: dict[str, Any]) -> None:
        bad = nonfinite_tensors(state["model"]) + [f"ema.{k}" for k in nonfinite_tensors(state.get("ema", {}))]
        if dist.all_reduce_max(torch.tensor([len(bad)], device=self.device)).item():  # every rank stops, or none
            raise NonFiniteWeightsError(
                f"the run diverged: {len(bad)} weight/buffer tensors are NaN/inf after step {self.global_step} "
                f"(e.g. {bad[:1] or 'on another rank'}); nothing was saved, so "
                f"{self.run_dir / 'last.pt'} keeps the last finite state (best.pt the best one): lower optim.lr or "
                "set trainer.clip_grad_norm, then rerun (trainer.resume=<run dir>/best.pt to go back further)"
            )

    def resume(self, resume: str | None) -> bool:
        """trainer.resume: "auto" continues from <run_dir>/last.pt when there is one; a path continues
        from that checkpoint; null / "never" starts afresh. Returns whether it resumed."""
        if resume in (None, "never"):
            return False
        path = self.run_dir / "last.pt" if resume == "auto" else Path(str(resume))
        if resume == "auto" and not path.is_file():
            return False
        state = load_checkpoint(path)  # on the CPU: RNG states must stay there; load_state_dict moves the rest
        if "optimizer" not in state:
            raise CheckpointError(
                f"{path} holds weights only (scripts/average_checkpoints.py, ...), no training state to resume; "
                f"start a run from them with backbone.weights={path}, or resume from a run's last.pt"
            )
        load_model_state(self.model, state["model"], source=f"checkpoint {path}")
        check_same_optimizer(state["config"], self.cfg, path)
        self._load_optimizer(state, path)
        self.precision.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if "ema" not in state:
                raise CheckpointError(f"{path} has no EMA weights but trainer.ema.enabled=true")
            self.ema.module.load_state_dict(state["ema"])
        self.epoch, self.batch_in_epoch, self.global_step = (
            state["epoch"],
            state["batch_in_epoch"],
            state["global_step"],
        )
        self.guard.skipped = state["nonfinite_skipped"]
        self._restore_best(state)
        # checkpoints from before these keys: the time of the segments they cover is not known (0)
        self.train_time_s = float(state.get("train_time_s", 0.0))
        self.train_images_per_s = state.get("train_images_per_s")
        if state["world_size"] == self.env.world_size:
            set_rng_state(state["rng"][self.env.rank])
        else:
            log.warning(
                "resuming %d processes from %d: random streams differ from an uninterrupted run",
                self.env.world_size,
                state["world_size"],
            )
            seed_everything(int(self.cfg.seed) + self.env.rank + self.global_step)
        log.info(
            "resumed from %s: epoch %d, batch %d, step %d", path, self.epoch, self.batch_in_epoch, self.global_step
        )
        return True

    def _restore_best(self, state: dict[str, Any]) -> None:
        """The checkpoint's best metric and trainer.keep_best list; both start afresh, with a log line, when it
        chose them by another metric (checkpoints from before `best_metric_name`: the task's primary metric)."""
        name = state.get("best_metric_name", self.task.primary_metric)
        if name == self.best_metric_name:
            self.best_metric = state["best_metric"]
            self.kept_best.restore(state.get("best_checkpoints", []), self.run_dir)
        else:
            log.warning(
                "resume: trainer.best_metric is %s, the checkpoint's was %s: the best is reset, so the next "
                "evaluation writes best.pt (best-<epoch>.pt files by %s stay, not counted by trainer.keep_best)",
                self.best_metric_name,
                name,
                name,
            )
        for path in self.kept_best.stale(self.run_dir, self.epochs_done()) if self.is_main else []:
            path.unlink()
            log.warning("removed %s: written after the checkpoint the run resumes from", path)

    def _load_optimizer(self, state: dict[str, Any], path: Path) -> None:
        """The checkpoint's optimizer state (momenta, ...) under the current config's hyperparameters. The
        schedule is restored when nothing it is built from changed, else rebuilt from the current config at
        the checkpoint's step (extending a finished run: trainer.epochs=<more>), and the change is logged."""
        current = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as e:
            raise CheckpointError(
                f"{path}'s optimizer state does not fit this run's optim config ({e}); "
                "resume with the run's optim settings, or start a new run"
            ) from e
        changes = changed_keys(state["config"], self.cfg)
        if state["world_size"] != self.env.world_size:
            changes.append(
                f"world_size={state['world_size']} -> {self.env.world_size} (global batch {self.global_batch})"
            )
        if not changes:
            self.scheduler.load_state_dict(state["scheduler"])
            return
        for group, settings in zip(self.optimizer.param_groups, current, strict=True):
            group.update(settings)
        self.scheduler.step_update(state["global_step"])
        log.warning(
            "resume: %s changed since the checkpoint: learning-rate schedule rebuilt from the current "
            "config at step %d (lr %.4g)",
            ", ".join(changes),
            state["global_step"],
            self.optimizer.param_groups[0]["lr"],
        )

    # ---- training ----------------------------------------------------------------------------------------

    def train_one_epoch(self) -> dict[str, float]:
        """Trains the rest of epoch `self.epoch` (all of it unless resumed mid-epoch)."""
        t = self.cfg.trainer
        self.train_model.train()
        self.train_sampler.set_epoch(self.epoch)
        self.batch_skipper.skip = self.batch_in_epoch
        batches_per_epoch = self.steps_per_epoch * self.accum_steps  # the tail that fills no update is dropped
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # summed on device: no sync per step
        images, unreadable, window_bad, start = 0, 0, False, time.perf_counter()
        self.callbacks.call("on_epoch_start", self)
        for batch in self.train_loader:
            if self.batch_in_epoch >= batches_per_epoch or self.reached_max_steps():
                break
            update = (self.batch_in_epoch + 1) % self.accum_steps == 0
            sync = update or not isinstance(self.train_model, DistributedDataParallel)
            with contextlib.nullcontext() if sync else self.train_model.no_sync():
                with self.precision.autocast():
                    loss, batch_images = self.task.training_loss(self.train_model, batch, self.device)
                unreadable += self.batch_size - batch_images  # left out by data.skip_unreadable
                if self.guard.bad(loss):
                    window_bad = True
                    log.warning("non-finite loss at epoch %d batch %d: step skipped", self.epoch, self.batch_in_epoch)
                else:
                    self.precision.scaler.scale(loss / self.accum_steps).backward()
                    loss_sum += loss.detach() * batch_images
                    images += batch_images
            self.batch_in_epoch += 1
            if not update:
                continue
            if not window_bad and self.optimizer_step(t):
                self.guard.stepped()
            self.optimizer.zero_grad(set_to_none=True)
            window_bad = False
            self.global_step += 1
            self.scheduler.step_update(self.global_step)
            if t.checkpoint_every_steps and self.global_step % int(t.checkpoint_every_steps) == 0:
                self.save("last.pt")
            self.callbacks.call("on_step_end", self, loss.detach())
        seconds = time.perf_counter() - start
        sums = dist.all_reduce_sum(
            torch.stack([loss_sum, loss_sum.new_tensor(images), loss_sum.new_tensor(unreadable)])
        )
        loss_total, images_total, unreadable_total = sums.tolist()
        if unreadable_total:
            log.warning(
                "epoch %d: %d unreadable training images skipped (data.skip_unreadable=true); list them with "
                "python scripts/check_data.py",
                self.epoch + 1,
                unreadable_total,
            )
        return {
            "train_loss": loss_total / max(images_total, 1),
            "train_images_per_s": images_total / seconds,
            "unreadable_skipped": int(unreadable_total),
            "epoch_time_s": seconds,
            "nonfinite_skipped": self.guard.skipped,
        }

    def optimizer_step(self, t: DictConfig) -> bool:
        """Unscale (fp16), clip, step, update the scaler and the EMA. Without fp16's scaler (which skips
        steps with inf / NaN gradients itself) a step whose gradient norm is not finite is skipped here, before
        it reaches the weights. Returns whether the step was taken."""
        scaler = self.precision.scaler
        norm = None
        if t.clip_grad_norm:
            scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(t.clip_grad_norm))
        if not scaler.is_enabled():
            norm = gradient_norm(self.model.parameters()) if norm is None else norm
            if self.guard.bad(norm):
                log.warning("non-finite gradients at epoch %d step %d: step skipped", self.epoch, self.global_step + 1)
                return False
        scaler.step(self.optimizer)
        scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)
        return True

    def evaluate(self) -> dict[str, float]:
        """The task's metrics on the whole validation set (each image once across ranks; with
        `trainer.max_eval_batches`, that many batches per rank spread evenly over the set), and the EMA's as
        `ema_<metric>` when EMA is on (the files a task writes, detection's predictions.json, are then the EMA's: the
        weights results.json reports), then the callbacks' on_eval_end. BatchNorm statistics are averaged over the
        ranks first. Random states are put back afterwards: evaluating (or not, or the EMA too) never changes the
        training run's random streams."""
        self.sync_buffers()
        state = rng_state()
        model_files = self.run_dir if self.ema is None else None
        with self.precision.autocast():
            metrics = self.task.evaluate(self.eval_model, self.val_loader, self.device, output_dir=model_files)
            if self.ema is not None:
                ema_metrics = self.task.evaluate(self.ema.module, self.val_loader, self.device, output_dir=self.run_dir)
                metrics.update({f"ema_{k}": v for k, v in ema_metrics.items()})
        self.callbacks.call("on_eval_end", self, metrics)
        set_rng_state(state)
        return metrics

    def epoch_complete(self) -> bool:
        return self.batch_in_epoch >= self.steps_per_epoch * self.accum_steps

    def epochs_done(self) -> float:
        """Epochs trained and evaluated: fractional after a trainer.max_steps stop mid-epoch (what its
        metrics.jsonl line says); a whole epoch's last batches count once its evaluation is recorded."""
        if self.epoch_complete():
            return float(self.epoch)
        return round(self.epoch + self.batch_in_epoch / (self.steps_per_epoch * self.accum_steps), 6)

    def _count_train_time(self) -> None:
        """Adds the time since the last count to `train_time_s` (once fit() started). Counted at each
        checkpoint: the run's time is that of its segments up to their last checkpoints (a segment ended by
        kill -9 counts up to its last checkpoint; a rerun of a finished run, which saves nothing, adds nothing)."""
        if self.clock is not None:
            now = time.perf_counter()
            self.train_time_s, self.clock = self.train_time_s + now - self.clock, now

    def reached_max_steps(self) -> bool:
        return self.max_steps is not None and self.global_step >= self.max_steps

    def stopped_by(self) -> str:
        """What ended training: "epochs" (all `trainer.epochs` trained) or "max_steps" (`trainer.max_steps`
        updates made before that)."""
        return "epochs" if self.epoch >= self.epochs else "max_steps"

    def finished(self) -> bool:
        """All epochs trained, or `trainer.max_steps` updates made."""
        return self.epoch >= self.epochs or self.reached_max_steps()

    def fit(self) -> dict[str, Any]:
        """Sets the run up (process group, model, data, run directory, resume), trains the remaining epochs,
        evaluating and checkpointing after each; returns (and writes) results.json."""
        try:
            self._setup()
            results = self._fit()
        except BaseException as e:
            rank, several = dist.rank(), dist.world_size() > 1  # before close() leaves the process group
            self.close(graceful=False)  # no barrier: the other ranks may never reach it
            if several and _collective_failure(e):
                raise DistributedError(
                    f"rank {rank}: a collective failed ({first_line(e)}): another process died, or hung for "
                    f"longer than trainer.dist_timeout_s={self.cfg.trainer.dist_timeout_s} s (its log says why); "
                    "rerun to resume from the last checkpoint"
                ) from e
            raise
        self.close()
        return results

    def _fit(self) -> dict[str, Any]:
        log.info(
            "model %s (%s attention): %.2fM parameters on %s x%d, %s, global batch %d, lr %.4g (scaled)",
            self.cfg.backbone.name,
            self.cfg.attention.variant,
            count_parameters(self.model) / 1e6,
            self.device,
            self.env.world_size,
            self.precision.name,
            self.global_batch,
            self.scheduler.base_values[0],
        )
        metrics: dict[str, float] = {}
        self.callbacks.call("on_fit_start", self)
        self.clock = time.perf_counter()  # train_time_s grows at each checkpoint from here on
        while not self.finished():
            train_stats = self.train_one_epoch()
            self.train_images_per_s = train_stats["train_images_per_s"]
            metrics = self.evaluate()
            lr = self.optimizer.param_groups[0]["lr"]
            epoch = self.epoch + 1 if self.epoch_complete() else self.epochs_done()  # fractional: max_steps stop
            record = {
                "epoch": epoch,
                "step": self.global_step,
                "lr": lr,
                **train_stats,
                **metrics,
                "peak_memory_mb": peak_memory_mb(self.device),
            }
            self._log_epoch(record)
            if self.epoch_complete():  # else stopped by trainer.max_steps
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self._save_epoch(metrics, epoch)
            self.callbacks.call("on_epoch_end", self, record)
        if not metrics:  # resumed a finished run: report its final weights
            metrics = self.evaluate()
        results = {
            **reported_metrics(metrics, ema=self.ema is not None),
            **run_facts(self.cfg, self.model),
            "epochs": self.epochs,  # configured; what was trained: epochs_trained, stopped_by
            "epochs_trained": self.epochs_done(),
            "stopped_by": self.stopped_by(),
            "steps": self.global_step,
            "eval_images": self.eval_images,
            "eval_partial": self.eval_partial,
            "train_images_per_s": self.train_images_per_s,
            "train_time_s": self.train_time_s,  # up to the last checkpoint, over all segments
            "nonfinite_skipped": self.guard.skipped,
            "peak_memory_mb": peak_memory_mb(self.device),
            "device": str(self.device),
            "world_size": self.env.world_size,
            "global_batch": self.global_batch,
            "precision": self.precision.name,
            "best_metric_name": self.best_metric_name,
            f"best_{self.best_metric_name}": self.best_metric,
            "checkpoint": str(self.run_dir / "last.pt"),
        }
        if self.is_main:
            write_json_atomic(results, self.run_dir / "results.json")
            log.info("results: %s", json.dumps(results))
            log.info("run directory: %s", self.run_dir.resolve())
        self.callbacks.call("on_fit_end", self, results)
        return results

    def _save_epoch(self, metrics: dict[str, float], epoch: float) -> None:
        """Writes the epoch's checkpoints: best-<epoch>.pt when among trainer.keep_best's k best, best.pt when
        the best metric improved, then last.pt (no last.pt names a file not yet written, or one deleted). A
        trainer.best_metric the evaluation lacks stops the run, once last.pt keeps the epoch."""
        if self.best_metric_name not in metrics:
            self.save("last.pt")
            check_best_metric(self.best_metric_name, metrics)
        value = metrics[self.best_metric_name]
        improved = improves(value, self.best_metric, maximize=self.task.primary_metric_mode == "max")
        if improved:
            self.best_metric = value
        kept, dropped = self.kept_best.offer(epoch, value)
        names = [*([kept] if kept else []), *(["best.pt"] if improved else []), "last.pt"]
        self.save(*names, remove=dropped)

    def _log_epoch(self, record: dict[str, Any]) -> None:
        """Appends the epoch's line to metrics.jsonl (before its checkpoint: a resume drops lines past it)."""
        try:
            self.logger.log_epoch(record, self.global_step)
        except OSError as e:
            raise RunDirError(
                f"cannot write {self.run_dir / 'metrics.jsonl'} ({first_line(e)}); free space or fix "
                "the permissions, then rerun the same command to resume"
            ) from e

    def close(self, graceful: bool = True) -> None:
        """Closes the callbacks (preemption puts the signal handlers back) and loggers, leaves the process group
        (after a barrier if `graceful`), unlocks the run directory; after a failed setup, what it got to."""
        self.callbacks.call("on_close", self)
        if self.logger is not None:
            self.logger.close()
        destroy_distributed(barrier=graceful)
        if self.run_lock is not None:
            self.run_lock.release()
