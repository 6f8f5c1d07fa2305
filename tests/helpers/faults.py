"""A trainer callback that stops a real run as a preemption does: SIGTERM to its own process after step N.

python train.py +callbacks.stop._target_=helpers.faults.SigtermAtStep +callbacks.stop.step=5
"""

from __future__ import annotations

import os
import signal
from typing import Any

from aaconv.engine.callbacks import Callback


class SigtermAtStep(Callback):
    """Sends SIGTERM to this process when the optimizer step `step` has ended (a resumed run starts past it)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer: Any, loss: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
