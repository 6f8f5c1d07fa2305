"""Checkpoints: written atomically, read with `weights_only=True` (nothing is unpickled)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from aaconv.utils.atomic import atomic_write
from aaconv.errors import CheckpointError


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Writes `state` to `path` atomically (see aaconv.utils.atomic): never a truncated checkpoint."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads a checkpoint written by `save_checkpoint` (tensors, numbers, strings, lists, dicts only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the last.pt or best.pt of a run directory")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign / pickled files
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not an aaconv checkpoint (no 'model' entry)")
    return state
