"""Which evaluation picks the best checkpoints: `trainer.best_metric` (best.pt) and `trainer.keep_best`
(the k best as best-<epoch>.pt).

The best metric is a key of the trainer's evaluation dict (what metrics.jsonl holds each epoch): null picks
the EMA's `ema_<primary metric>` when `trainer.ema.enabled`, else the task's primary metric. Its direction is
the task's `primary_metric_mode`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aaconv.errors import ConfigError

KEPT_PATTERN = re.compile(r"best-(\d+(?:\.\d+)?)\.pt")  # best-<epoch>.pt, fractional after a max_steps stop


def best_metric_name(choice: str | None, primary_metric: str, ema: bool) -> str:
    """The evaluation key `trainer.best_metric` = `choice` names (null: see the module docstring). An `ema_`
    name without EMA is a ConfigError here; other names are checked against the first evaluation
    (`check_best_metric`)."""
    if choice is None:
        return f"ema_{primary_metric}" if ema else primary_metric
    if choice.startswith("ema_") and not ema:
        raise ConfigError(
            f"trainer.best_metric={choice} is an EMA metric but trainer.ema.enabled=false; enable the EMA, "
            f"or pick a metric of the model (e.g. trainer.best_metric={primary_metric}, or null)"
        )
    return choice


def check_best_metric(name: str, metrics: Mapping[str, float]) -> None:
    """ConfigError (one line, listing the names there are) when the evaluation `metrics` have no `name`."""
    if name not in metrics:
        raise ConfigError(
            f"trainer.best_metric={name} is not a metric of this run's evaluation, which has "
            f"{', '.join(sorted(metrics))}; pick one of them (or null: the primary metric)"
        )


def improves(value: float, best: float | None, maximize: bool) -> bool:
    """Whether `value` beats `best` (None: nothing yet); a NaN / inf value never does."""
    if not math.isfinite(value):
        return False
    return best is None or (value > best if maximize else value < best)


def kept_name(epoch: float) -> str:
    """best-<epoch>.pt: best-3.pt, or best-0.375.pt for an evaluation after a trainer.max_steps stop mid-epoch."""
    return f"best-{epoch:g}.pt"


class BestCheckpoints:
    """The `k` best checkpoints of a run by the best metric (`trainer.keep_best`), as a list of
    {"file", "epoch", "value"} ordered best first, which the checkpoints carry (`best_checkpoints`) so that a
    resume continues it. `k` = 0 keeps none."""

    def __init__(self, k: int, maximize: bool):
        self.k, self.maximize = k, maximize
        self.entries: list[dict[str, Any]] = []

    def offer(self, epoch: float, value: float) -> tuple[str | None, list[str]]:
        """Ranks the evaluation of `epoch`: (the file to write it to, or None when it is not among the k best;
        the files that drop out of the k best, to delete)."""
        if self.k == 0 or not math.isfinite(value):
            return None, []
        if len(self.entries) == self.k and not improves(value, self.entries[-1]["value"], self.maximize):
            return None, []
        name = kept_name(epoch)
        entries = [e for e in self.entries if e["file"] != name] + [{"file": name, "epoch": epoch, "value": value}]
        entries.sort(key=lambda e: -e["value"] if self.maximize else e["value"])  # stable: the earlier one on ties
        self.entries = entries[: self.k]
        return name, [e["file"] for e in entries[self.k :]]

    def restore(self, entries: list[dict[str, Any]], run_dir: Path) -> None:
        """Continues the list `entries` of a checkpoint: those of its files still in `run_dir`, at most k (a
        lower trainer.keep_best on resume leaves the files past it on disk, uncounted)."""
        self.entries = [dict(e) for e in entries if (run_dir / e["file"]).is_file()][: self.k]

    def stale(self, run_dir: Path, epochs_done: float) -> list[Path]:
        """The best-<epoch>.pt files of `run_dir` of epochs after `epochs_done` that the list does not hold:
        written by a segment that ended before the checkpoint that would list them (a resume trains those epochs
        again, as it drops their metrics.jsonl lines)."""
        listed = {e["file"] for e in self.entries}
        stale = []
        for path in sorted(run_dir.glob("best-*.pt")):
            match = KEPT_PATTERN.fullmatch(path.name)
            if match and float(match[1]) > epochs_done and path.name not in listed:
                stale.append(path)
        return stale
