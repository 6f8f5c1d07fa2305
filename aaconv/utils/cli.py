"""argparse types shared by scripts/: a bad value is argparse's one usage line, never a traceback later."""

from __future__ import annotations

import argparse
import re

import torch


def positive_int(text: str) -> int:
    """An integer > 0."""
    if not re.fullmatch(r"\d+", text.strip()) or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}")
    return int(text)


def dims(text: str) -> str:
    """'AxB' of two integers > 0 (a map size HxW, a stage CxS), returned as given."""
    if not re.fullmatch(r"[1-9]\d*x[1-9]\d*", text.strip().lower()):
        raise argparse.ArgumentTypeError(f"expected AxB with two integers > 0 (e.g. 28x28), got {text!r}")
    return text.strip().lower()


def device(text: str) -> str:
    """A torch device this machine has: 'cpu', or 'cuda' / 'cuda:N' where a GPU is visible."""
    try:
        kind = torch.device(text).type
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda or cuda:<index>") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device is visible; use --device cpu")
    return text
