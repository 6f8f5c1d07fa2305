"""Reading torch files safely (`weights_only=True`) and strict state-dict loading, with errors a user can act on."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aaconv.errors import CheckpointError, first_line

ZIP_MAGIC = b"PK\x03\x04"


def torch_load_safely(path: str | os.PathLike, what: str, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`: tensors, numbers, strings, lists and dicts only, nothing unpickled.
    A file it cannot read is a CheckpointError saying what the file is instead of torch's message (which, for
    pickled objects, suggests `weights_only=False`: the one fix this project never takes). `what` names the
    file in the message ("checkpoint", "weights")."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for empty / foreign / truncated / pickled files
        raise CheckpointError(f"cannot read {what} {path}: {_unreadable_reason(path, e)}") from e


def _unreadable_reason(path: Path, error: Exception) -> str:
    with path.open("rb") as f:
        magic = f.read(4)
    if not magic:
        return "the file is empty (an interrupted copy?); copy it again"
    if magic != ZIP_MAGIC:  # torch.save writes a zip archive
        return "not a file written by torch.save (a text, JSON or pickle file?); pass a .pt / .pth / .safetensors file"
    if isinstance(error, pickle.UnpicklingError):
        return (
            "it holds Python objects besides tensors and plain values, and files are read with weights_only=True "
            "(nothing is unpickled); save model.state_dict() instead, or use scripts/export.py"
        )
    return f"the file is truncated or corrupt ({first_line(error).split('. ')[0]}); copy it again"


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
