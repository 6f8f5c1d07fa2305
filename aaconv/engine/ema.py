"""The weight-EMA decay per optimizer step for the run's global batch.

A decay d per step averages over about 1 / (1 - d) steps, so the same d at another global batch averages over
another number of images: the MnasNet recipe's 0.9999 per step at 4096 images (Tan et al. 2019) spans about
10,000 steps = 41M images = 32 ImageNet epochs; at a global batch of 512 it would span 4 epochs. Quoting d at
a reference batch B_ref and raising it to B / B_ref keeps the span in images (and epochs) at any batch B:
0.9999 at 4096 becomes 0.9999 ** (512 / 4096) = 0.99998750 per step at 512.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aaconv.errors import ConfigError


def per_step_decay(decay: float, global_batch: int, decay_batch: int | None = None) -> float:
    """The EMA decay per optimizer step of `global_batch` images for `decay` quoted per step of `decay_batch`
    images (`trainer.ema.decay_batch`); None: `decay` is per step at any batch, unchanged."""
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"trainer.ema.decay must be in (0, 1), got {decay}")
    if decay_batch is None:
        return decay
    if decay_batch <= 0:
        raise ConfigError(
            f"trainer.ema.decay_batch must be a positive number of images (or null: per step), got {decay_batch}"
        )
    return decay ** (global_batch / decay_batch)


def ema_decay(ema: Mapping[str, Any], global_batch: int) -> float:
    """The `trainer.ema` group's ({decay, decay_batch}) decay per step at `global_batch` (per_step_decay)."""
    return per_step_decay(float(ema["decay"]), global_batch, ema.get("decay_batch"))
