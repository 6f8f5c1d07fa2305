"""Resident memory over a CPU training run: is anything kept per step (a leak)?

    OMP_NUM_THREADS=1 python scripts/rss_growth.py [--epochs 4] [--every 25] [override ...]

Trains the quick-start model (ResNet-18, built-in shapes at 32 px, batch 16) in-process, reads the process's
resident set size (/proc/self/statm) before every `--every`-th training step, prints a table, and the growth
per 100 steps as the least-squares slope after the first epoch (allocator and caches warm up in epoch 1).
Extra arguments are Hydra overrides (e.g. attention=aa).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path
from typing import Any

from aaconv.engine.trainer import Trainer
from aaconv.runs import compose_config
from aaconv.tasks import build_task

SMALL_SHAPES = [
    "data.generate.train_per_class=200",
    "data.generate.val_per_class=20",
    "data.batch_size=16",
    "data.workers=0",
    "logger.progress_bar=false",
]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class RssProbe:
    """Wraps a task; records (step, RSS) before every `every`-th training_loss call."""

    def __init__(self, task: Any, every: int):
        self.task, self.every, self.calls, self.samples = task, every, 0, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def training_loss(self, *args: Any) -> Any:
        if self.calls % self.every == 0:
            self.samples.append((self.calls, rss_mb()))
        self.calls += 1
        return self.task.training_loss(*args)


def slope(points: list[tuple[int, float]]) -> float:
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--every", type=int, default=25)
    args, overrides = parser.parse_known_args()
    cache = os.environ.get("AACONV_CACHE", str(Path.home() / ".cache/aaconv"))
    cfg = compose_config([f"data.root={cache}", *SMALL_SHAPES, f"trainer.epochs={args.epochs}", *overrides])
    probe = RssProbe(build_task(cfg), args.every)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, probe, run_dir)  # type: ignore[arg-type]
        trainer.fit()
    warm = [(s, r) for s, r in probe.samples if s >= trainer.steps_per_epoch]
    print(f"{'step':>6} {'RSS MB':>8}")
    for step, rss in probe.samples:
        print(f"{step:>6} {rss:>8.1f}")
    print(
        f"{trainer.global_step} steps ({trainer.steps_per_epoch} per epoch); RSS growth after epoch 1: "
        f"{100 * slope(warm):+.2f} MB per 100 steps ({warm[0][1]:.1f} -> {warm[-1][1]:.1f} MB)"
    )


if __name__ == "__main__":
    main()
