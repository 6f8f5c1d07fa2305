"""Preemption: on SIGTERM / SIGUSR1 (what Slurm sends before it stops a job) note the request, let the
trainer finish its step and write a checkpoint, then do what the signal would have done.

What happens after the checkpoint follows the handler that was installed before ours:
- a Python handler (submitit's, under `hydra/launcher=slurm`) is called: on SIGUSR2 submitit requeues the job
  itself (and exits); its SIGTERM handler only logs, and training goes on;
- SIG_IGN: training goes on;
- the default action: under Slurm (SLURM_JOB_ID set, `requeue` on) rank 0 runs `scontrol requeue <job>`,
  then every process exits with status 128 + signal number, the shell's convention for "killed by signal".

`Preemption` is the trainer callback that does this (`trainer.preempt_signals`, `trainer.requeue`): it checks
after each optimizer update and each epoch, after the trainer's own checkpoints and the other callbacks, since it may
end the process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from aaconv.engine.callbacks import Callback
from aaconv.utils import distributed as dist

if TYPE_CHECKING:
    from aaconv.engine.trainer import Trainer

log = logging.getLogger("aaconv")


class PreemptionHandler:
    """Installs handlers for `signal_names` (e.g. ["SIGTERM", "SIGUSR1"]) that only record the signal."""

    def __init__(self, signal_names: Sequence[str], requeue: bool = True):
        self.requeue = requeue
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            log.warning("not on the main thread: preemption signals are not handled")
            return
        for name in signal_names:
            signum = int(getattr(signal, name))
            self._previous[signum] = signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            log.warning("received %s: checkpointing at the end of this step", signal.Signals(signum).name)
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def finish(self, signum: int, is_main: bool) -> None:
        """After the checkpoint: chain to the previous handler of `signum`, or requeue (Slurm) and exit.
        Returns only when the signal is to be ignored (training continues)."""
        self.signum = None
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, None)  # returns only when that handler lets the job carry on
            return
        if previous == signal.SIG_IGN:
            return
        self.close()
        job = os.environ.get("SLURM_JOB_ID")
        if job and self.requeue and is_main:
            log.info("requeueing Slurm job %s", job)
            subprocess.run(["scontrol", "requeue", job], check=False)
        raise SystemExit(128 + signum)

    def close(self) -> None:
        """Puts the previous handlers back."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}


class Preemption(Callback):
    """Installs a `PreemptionHandler` for `signal_names` when training starts; after an update or an epoch
    in which any rank received one of them, every rank writes last.pt and then finishes the signal."""

    def __init__(self, signal_names: Sequence[str], requeue: bool = True):
        self.signal_names, self.requeue = list(signal_names), requeue
        self.handler: PreemptionHandler | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.handler = PreemptionHandler(self.signal_names, requeue=self.requeue)

    def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self._checkpoint_if_requested(trainer)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._checkpoint_if_requested(trainer)

    def on_close(self, trainer: Trainer) -> None:
        if self.handler is not None:
            self.handler.close()
            self.handler = None

    def _requested(self, trainer: Trainer) -> int:
        """The signal any rank received (0: none), agreed on by all ranks."""
        assert self.handler is not None
        if not dist.is_distributed():
            return self.handler.signum or 0
        signum = torch.tensor([self.handler.signum or 0], dtype=torch.int64, device=trainer.device)
        return int(dist.all_reduce_max(signum).item())

    def _checkpoint_if_requested(self, trainer: Trainer) -> None:
        signum = self._requested(trainer)
        if signum:
            trainer.save("last.pt")
            log.warning(
                "checkpoint written to %s at epoch %d, batch %d",
                trainer.run_dir / "last.pt",
                trainer.epoch,
                trainer.batch_in_epoch,
            )
            assert self.handler is not None
            self.handler.finish(signum, trainer.is_main)
