"""Optimisers (timm's factory) with the learning rate scaled by the global batch, and per-iteration schedules."""

from __future__ import annotations

from typing import Any

from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn
from torch.optim import Optimizer


def scaled_lr(lr: float, global_batch: int, lr_base_batch: int) -> float:
    """Linear scaling rule (Goyal et al., 2017): `lr` is quoted for `lr_base_batch` images per step."""
    return lr * global_batch / lr_base_batch


def create_optimizer(
    model: nn.Module,
    global_batch: int,
    *,
    opt: str = "momentum",
    lr: float = 0.1,
    lr_base_batch: int = 256,
    weight_decay: float = 1e-4,
    no_decay_norm_bias: bool = True,
    **kwargs: Any,
) -> Optimizer:
    """timm's `create_optimizer_v2` with lr = lr * global_batch / lr_base_batch.

    Args:
        opt: timm's optimiser name: "momentum" (SGD), "sgd" / "nesterov" (SGD + Nesterov),
            "rmsproptf", "adamw", "lamb", ...
        no_decay_norm_bias: no weight decay on norm layers and biases (timm's filter_bias_and_bn).
        kwargs: passed on (momentum, betas, eps, ...).
    """
    return create_optimizer_v2(
        model,
        opt=opt,
        lr=scaled_lr(lr, global_batch, lr_base_batch),
        weight_decay=weight_decay,
        filter_bias_and_bn=no_decay_norm_bias,
        **kwargs,
    )


def cosine_schedule(
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_lr: float = 1e-6,
    min_lr: float = 0.0,
) -> Scheduler:
    """Linear warmup from `warmup_lr`, then cosine decay to `min_lr`; stepped every iteration."""
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, epochs * steps_per_epoch - warmup_steps),
        lr_min=min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=warmup_lr,
        warmup_prefix=True,
        t_in_epochs=False,
    )
