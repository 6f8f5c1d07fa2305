"""What resuming a run checks and repairs: settings that changed since the checkpoint, an optimizer that
cannot continue, and epoch records written after the checkpoint."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aaconv.errors import CheckpointError
from aaconv.utils.atomic import atomic_write

# Keys the learning-rate schedule is built from: when one differs, the schedule is rebuilt, not restored.
SCHEDULE_KEYS = ("trainer.epochs", "trainer.accum_steps", "data.batch_size", "optim", "schedule")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": leaf} of a nested mapping (lists are leaves)."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    return {k: v for key, child in node.items() for k, v in _flat(child, f"{prefix}.{key}" if prefix else key).items()}


def changed_keys(stored: Mapping[str, Any], cfg: DictConfig, keys: tuple[str, ...] = SCHEDULE_KEYS) -> list[str]:
    """ "key=old -> new" for every setting under `keys` that differs between a checkpoint's config and `cfg`."""
    old, new = _flat(stored), _flat(OmegaConf.to_container(cfg, resolve=True))
    leaves = sorted(old.keys() | new.keys())
    watched = [leaf for leaf in leaves if any(leaf == k or leaf.startswith(k + ".") for k in keys)]
    return [f"{leaf}={old.get(leaf)} -> {new.get(leaf)}" for leaf in watched if old.get(leaf) != new.get(leaf)]


def check_same_optimizer(stored: Mapping[str, Any], cfg: DictConfig, path: Path) -> None:
    """CheckpointError when the checkpoint's optimizer state belongs to another optimizer than `cfg.optim`."""
    old, new = stored.get("optim", {}).get("opt"), cfg.optim.get("opt")
    if old != new:
        raise CheckpointError(
            f"{path} holds optim.opt={old} state, which optim.opt={new} cannot continue; "
            f"resume with optim.opt={old}, or start a new run (another hydra.run.dir)"
        )


def trim_epoch_records(path: Path, epochs_done: float) -> int:
    """Drops the lines of metrics.jsonl `path` for epochs after `epochs_done` (written before a crash
    stopped their checkpoint; fractional for a run stopped by trainer.max_steps); returns how many were dropped."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line).get("epoch", 0) <= epochs_done]
    if len(kept) != len(lines):
        atomic_write(path, lambda f: f.write("".join(kept).encode()))
    return len(lines) - len(kept)
