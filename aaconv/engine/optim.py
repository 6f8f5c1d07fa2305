"""Optimisers (timm's factory) with the learning rate scaled by the global batch, and per-iteration schedules.

Learning-rate rule: `optim.lr` is quoted for a global batch of `optim.lr_base_batch` images and scaled linearly
(Goyal et al., 2017): lr = optim.lr * global_batch / optim.lr_base_batch, where
global_batch = data.batch_size (per process) * processes * trainer.accum_steps.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Sequence
from typing import Any

from timm.optim import create_optimizer_v2, get_optimizer_info
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn
from torch.optim import Optimizer

from aaconv.errors import AAConvError


def scaled_lr(lr: float, global_batch: int, lr_base_batch: int) -> float:
    """Linear scaling rule (Goyal et al., 2017): `lr` is quoted for `lr_base_batch` images per step."""
    return lr * global_batch / lr_base_batch


def _fused_kwargs(model: nn.Module, opt: str, fused: bool | str) -> dict[str, Any]:
    """{"fused": True} where torch's optimiser class has a fused kernel and it is wanted ("auto": on CUDA)."""
    opt_class = get_optimizer_info(opt).opt_class
    if fused is False or isinstance(opt_class, str):  # apex classes are fused already
        return {}
    accepts = "fused" in inspect.signature(opt_class.__init__).parameters
    on_cuda = all(p.is_cuda for p in model.parameters())
    if fused is True and not accepts:
        raise AAConvError(
            f"optim.fused=true but optimizer {opt!r} has no fused implementation in torch; use fused=auto"
        )
    return {"fused": True} if accepts and (fused is True or on_cuda) else {}


def check_apex(opt: str) -> None:
    """timm's "fused*" optimisers (fusedlamb, fusedadam, ...) are NVIDIA apex's: say so when apex is missing."""
    info = get_optimizer_info(opt)
    if (
        isinstance(info.opt_class, str)
        and info.opt_class.startswith("apex.")
        and importlib.util.find_spec("apex") is None
    ):
        plain = opt.removeprefix("fused")
        raise AAConvError(
            f"optim.opt={opt} is NVIDIA apex's {info.opt_class}, and apex is not installed "
            f"(https://github.com/NVIDIA/apex); install it, or use optim.opt={plain} (timm's own implementation)"
        )


def create_optimizer(
    model: nn.Module,
    global_batch: int,
    *,
    opt: str = "momentum",
    lr: float = 0.1,
    lr_base_batch: int = 256,
    weight_decay: float = 1e-4,
    no_decay_norm_bias: bool = True,
    fused: bool | str = "auto",
    **kwargs: Any,
) -> Optimizer:
    """timm's `create_optimizer_v2` with lr = lr * global_batch / lr_base_batch.

    Args:
        opt: timm's optimiser name: "momentum" (SGD), "sgd" / "nesterov" (SGD + Nesterov),
            "rmsproptf" (RMSProp as TensorFlow has it), "adamw", "lamb", "fusedlamb" (apex), ...
        no_decay_norm_bias: no weight decay on norm layers and biases (timm's filter_bias_and_bn).
        fused: torch's fused kernels where the class has one: true, false, or "auto" (when on CUDA).
        kwargs: passed on (momentum, betas, eps, alpha, ...).
    """
    check_apex(opt)
    kwargs.update(_fused_kwargs(model, opt, fused))
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


def step_schedule(
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    decay_epochs: float,
    decay_rate: float = 0.1,
    warmup_epochs: float = 0.0,
    warmup_lr: float = 1e-6,
) -> Scheduler:
    """Linear warmup, then lr * decay_rate every `decay_epochs` epochs (counted from the start; e.g. the
    MnasNet recipe's 0.97 every 2.4 epochs); stepped every iteration."""
    del epochs
    return StepLRScheduler(
        optimizer,
        decay_t=max(1, round(decay_epochs * steps_per_epoch)),
        decay_rate=decay_rate,
        warmup_t=round(warmup_epochs * steps_per_epoch),
        warmup_lr_init=warmup_lr,
        warmup_prefix=False,
        t_in_epochs=False,
    )


def multistep_schedule(
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    milestones: Sequence[float],
    decay_rate: float = 0.1,
    warmup_epochs: float = 0.0,
    warmup_lr: float = 1e-6,
) -> Scheduler:
    """Linear warmup, then lr * decay_rate at each milestone epoch (e.g. [30, 60, 80] for 90-epoch ResNets)."""
    del epochs
    return MultiStepLRScheduler(
        optimizer,
        # timm applies milestone m from t = m - 1 on; t here is the 0-based index of the next update, and the
        # first update of a milestone epoch is to be the first at the lower rate
        decay_t=[round(m * steps_per_epoch) + 1 for m in milestones],
        decay_rate=decay_rate,
        warmup_t=round(warmup_epochs * steps_per_epoch),
        warmup_lr_init=warmup_lr,
        warmup_prefix=False,
        t_in_epochs=False,
    )
