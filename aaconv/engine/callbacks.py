"""Trainer callbacks: what runs beside the training loop at named events (detectron2's hooks, Lightning's callbacks).

`Trainer.fit()` calls the events in this order, with the trainer first and the arguments below:

    on_fit_start(trainer)                once the run holds its directory, has resumed (or started afresh) and
                                         opened its loggers; before the first epoch
      on_epoch_start(trainer)            before an epoch's batches (`trainer.batch_in_epoch` of them were trained
                                         before a resume mid-epoch)
        on_step_end(trainer, loss)       after each optimizer update (`trainer.global_step` counts it; `loss` is
                                         the last batch's, a tensor on the device: `.item()` waits for the GPU)
        on_checkpoint(trainer, names)    after the trainer wrote checkpoint files `names` (in `trainer.run_dir`)
      on_eval_end(trainer, metrics)      after each evaluation, with its metrics; random draws here leave the
                                         training run's random streams as they were
      on_epoch_end(trainer, record)      after the epoch's metrics.jsonl line `record` and its checkpoints
    on_fit_end(trainer, results)         after results.json
    on_close(trainer)                    always last, also when fit() fails: give back what the callback holds

An epoch stopped by `trainer.max_steps` ends early, and a rerun of a finished run goes from on_fit_start to
one evaluation and on_fit_end. Every process calls every event: write files or log on `trainer.is_main` only.

The trainer writes its own files first (metrics line, then the checkpoints) and calls the callbacks after them, in
the order of its list (`aaconv.engine.trainer.build_callbacks`): the built-in loggers, then the user's callbacks
(the `callbacks` config group), then preemption, which may end the process. A user callback is a subclass of
`Callback` named in the config by `_target_`; it is instantiated from the project's config tree and the command line
only, never from a checkpoint (aaconv.engine.stored_config drops a stored `callbacks` entry unread).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from torch import Tensor

from aaconv.errors import ConfigError, first_line

if TYPE_CHECKING:
    from aaconv.engine.trainer import Trainer

EVENTS = (
    "on_fit_start",
    "on_epoch_start",
    "on_step_end",
    "on_checkpoint",
    "on_eval_end",
    "on_epoch_end",
    "on_fit_end",
    "on_close",
)


class Callback:
    """A no-op at every event: a callback overrides the events it needs (the module docstring lists them)."""

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer) -> None:
        pass

    def on_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        pass

    def on_checkpoint(self, trainer: Trainer, names: tuple[str, ...]) -> None:
        pass

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, trainer: Trainer, results: dict[str, Any]) -> None:
        pass

    def on_close(self, trainer: Trainer) -> None:
        pass


class CallbackList:
    """Callbacks called in list order at each event."""

    def __init__(self, callbacks: Iterable[Callback]):
        self.callbacks = list(callbacks)

    def call(self, event: str, trainer: Trainer, *args: Any) -> None:
        if event not in EVENTS:
            raise ValueError(f"no callback event {event!r}; events: {', '.join(EVENTS)}")
        for callback in self.callbacks:
            getattr(callback, event)(trainer, *args)


def user_callbacks(config: Mapping[str, Any]) -> list[Callback]:
    """The `callbacks` config group ({name: {_target_: a Callback subclass, its options}}), instantiated in the
    order of the mapping. Only for a config composed from the project's tree (train.py's), never a stored one."""
    callbacks = []
    for name, entry in config.items():
        target = entry.get("_target_") if isinstance(entry, Mapping) else None
        if not isinstance(target, str):
            raise ConfigError(f"callbacks.{name} needs a _target_ naming a Callback class (e.g. my_module.Probe)")
        try:
            callback = instantiate(entry)
        except Exception as e:
            raise ConfigError(f"callbacks.{name}: cannot instantiate {target} ({first_line(e)})") from e
        if not isinstance(callback, Callback):
            raise ConfigError(f"callbacks.{name}: {target} is not a subclass of aaconv.engine.callbacks.Callback")
        callbacks.append(callback)
    return callbacks
