"""Checkpoints: written atomically, read with `weights_only=True` (nothing is unpickled)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aaconv.engine.atomic import atomic_write
from aaconv.errors import CheckpointError


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Writes `state` to `path` atomically (see aaconv.engine.atomic): never a truncated checkpoint."""
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


def load_model_state(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict load whose error lists the missing / unexpected / mis-shaped keys instead of a wall of text."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or mismatched:
        def head(keys: list[str]) -> str:
            return f"{len(keys)} {keys[:5]}{' ...' if len(keys) > 5 else ''}"

        raise CheckpointError(
            f"{source} does not fit this model (another backbone, attention variant or class count?): "
            f"missing {head(missing)}, unexpected {head(unexpected)}, shape mismatch {head(mismatched)}"
        )
    model.load_state_dict(state_dict)
