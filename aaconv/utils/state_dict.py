"""Strict state-dict loading with an error a user can act on."""

from __future__ import annotations

import torch
from torch import nn

from aaconv.errors import CheckpointError


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
