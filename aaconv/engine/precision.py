"""Mixed precision: autocast to bf16 / fp16 (with a GradScaler for fp16 only), and a guard that skips
steps whose loss is not finite and stops training after too many in a row."""

from __future__ import annotations

import contextlib

import torch

from aaconv.utils.distributed import all_reduce_max
from aaconv.errors import AAConvError

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(AAConvError):
    """Training produced too many NaN / inf losses in a row."""


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" is bf16 on a CUDA device that supports it, else fp32; explicit names are checked."""
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


class NonFiniteGuard:
    """Counts non-finite losses; `bad(loss)` is True (on every rank) when any rank's loss is NaN / inf.

    Raises `NonFiniteLossError` once `max_consecutive` steps in a row were bad (0: never abort).
    """

    def __init__(self, max_consecutive: int):
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0

    def bad(self, loss: torch.Tensor) -> bool:
        flag = all_reduce_max((~torch.isfinite(loss.detach())).to(torch.int32).reshape(1))
        is_bad = bool(flag.item())
        if not is_bad:
            self.consecutive = 0
            return False
        self.consecutive += 1
        self.skipped += 1
        if self.max_consecutive and self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"the loss was NaN/inf in {self.consecutive} steps in a row ({self.skipped} skipped in all): "
                "lower optim.lr, add trainer.clip_grad_norm, or use trainer.precision=bf16/fp32 instead of fp16"
            )
        return True
