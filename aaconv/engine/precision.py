"""Mixed precision: autocast to bf16 / fp16 (with a GradScaler for fp16 only), and a guard that skips
steps whose loss or gradients are not finite and stops training after too many in a row."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

from aaconv.errors import AAConvError
from aaconv.utils.distributed import all_reduce_max

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(AAConvError):
    """Training produced too many NaN / inf losses or gradients in a row."""


class NonFiniteWeightsError(AAConvError):
    """The weights (or BatchNorm statistics) went NaN / inf: the run diverged and is not saved."""


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" is bf16 on a CUDA device that supports it, else fp32; explicit names are checked."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in AUTOCAST_DTYPES:
        raise AAConvError(f"trainer.precision={precision}: choose one of auto, {', '.join(AUTOCAST_DTYPES)}")
    return precision


class Precision:
    """`with precision.autocast():` around the forward pass; `precision.scaler` scales fp16 losses
    (a disabled, pass-through GradScaler for bf16 / fp32)."""

    def __init__(self, precision: str, device: torch.device):
        self.name = resolve_precision(precision, device)
        self.device_type = device.type
        self.dtype = AUTOCAST_DTYPES[self.name]
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.name == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def gradient_norm(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """The total L2 norm of the gradients (`clip_grad_norm_` with no limit: one fused pass, grads unchanged);
    NaN / inf when any gradient is."""
    return torch.nn.utils.clip_grad_norm_(parameters, float("inf"))


class NonFiniteGuard:
    """Counts non-finite losses and gradient norms; `bad(value)` is True (on every rank) when any rank's
    value is NaN / inf. Checking the gradients before the optimizer step keeps NaN out of the weights.

    Raises `NonFiniteLossError` once `max_consecutive` values were bad with no update taken in between
    (`stepped()` after each update; 0: never abort).
    """

    def __init__(self, max_consecutive: int):
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0

    def bad(self, value: torch.Tensor) -> bool:
        flag = all_reduce_max((~torch.isfinite(value.detach())).to(torch.int32).reshape(1))
        if not bool(flag.item()):
            return False
        self.consecutive += 1
        self.skipped += 1
        if self.max_consecutive and self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"the loss or gradients were NaN/inf in {self.consecutive} steps in a row "
                f"({self.skipped} skipped in all): "
                "lower optim.lr, add trainer.clip_grad_norm, or use trainer.precision=bf16/fp32 instead of fp16"
            )
        return True

    def stepped(self) -> None:
        """An optimizer update was taken: the run of bad steps is over."""
        self.consecutive = 0
