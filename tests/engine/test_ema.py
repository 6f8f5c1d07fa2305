"""aaconv.engine.ema: an EMA decay quoted at a reference batch keeps its horizon in images at any batch."""

from __future__ import annotations

import math

import pytest

from aaconv.engine.ema import ema_decay, per_step_decay
from aaconv.errors import ConfigError


def test_decay_at_another_batch_keeps_the_number_of_images_averaged() -> None:
    reference = 1 / (1 - 0.9999) * 4096  # images the MnasNet recipe's EMA spans: 4096 per step, 10,000 steps
    decay = per_step_decay(0.9999, 512, 4096)
    assert decay == pytest.approx(0.9999875, abs=1e-9)
    assert math.log(0.9999) / 4096 == pytest.approx(math.log(decay) / 512)  # same decay per image
    assert 1 / (1 - decay) * 512 == pytest.approx(reference, rel=1e-3)
    assert per_step_decay(0.9999, 4096, 4096) == 0.9999 and per_step_decay(0.9998, 64) == 0.9998


def test_config_group_and_bad_values() -> None:
    assert ema_decay({"decay": 0.9999, "decay_batch": 4096}, 512) == per_step_decay(0.9999, 512, 4096)
    assert ema_decay({"decay": 0.99}, 512) == 0.99
    with pytest.raises(ConfigError, match="trainer.ema.decay must be in"):
        per_step_decay(1.5, 512)
    with pytest.raises(ConfigError, match="trainer.ema.decay_batch must be a positive"):
        per_step_decay(0.999, 512, 0)
