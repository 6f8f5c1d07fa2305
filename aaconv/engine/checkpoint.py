"""Checkpoints: written atomically, read with `weights_only=True` (nothing is unpickled), never saved with
NaN / inf weights."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from aaconv.errors import CheckpointError, first_line
from aaconv.utils.atomic import atomic_write
from aaconv.utils.state_dict import torch_load_safely


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Writes `state` to `path` atomically (see aaconv.utils.atomic): never a truncated checkpoint.
    A failed write (disk full, permissions) is a CheckpointError that leaves the previous file in place."""
    try:
        return atomic_write(path, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError ("unexpected pos")
        raise CheckpointError(
            f"cannot write checkpoint {path} ({first_line(e)}): the disk is full or the folder "
            "is not writable; free space or fix the permissions, then rerun the same command to "
            "resume"
        ) from e


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads a checkpoint written by `save_checkpoint` (tensors, numbers, strings, lists, dicts only)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass the last.pt or best.pt inside it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the last.pt or best.pt of a run directory")
    state = torch_load_safely(path, "checkpoint", map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not an aaconv checkpoint (no 'model' entry)")
    return state


WEIGHTS = ("auto", "ema", "model")  # eval.py's weights=, scripts/export.py's --weights


def select_weights(
    state: Mapping[str, Any], choice: str, checkpoint: str | os.PathLike, option: str = "weights"
) -> tuple[str, dict[str, torch.Tensor]]:
    """("ema" or "model", that state dict) of checkpoint `state`: `choice` "auto" is the EMA's when the checkpoint
    has them (trainer.ema.enabled), else the model's. A missing EMA is a CheckpointError naming `option`."""
    which = ("ema" if "ema" in state else "model") if choice == "auto" else choice
    if which == "ema" and "ema" not in state:
        raise CheckpointError(
            f"{checkpoint} has no EMA weights (trained with trainer.ema.enabled=false); "
            f"use {option}=model or {option}=auto"
        )
    return which, state[which]


def nonfinite_tensors(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of `state_dict` holding a NaN or inf (weights and buffers alike:
    BatchNorm statistics go non-finite from a diverged forward pass even when no step was taken)."""
    return [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
