"""Run-time setup: device choice and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch


def select_device(name: str = "auto") -> torch.device:
    """"auto" takes CUDA when present, else the CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"trainer.device={name} but no CUDA device is visible; use trainer.device=auto or cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
