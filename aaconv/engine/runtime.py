"""Run-time setup: device choice, seeding, deterministic mode, the CPU allocator, and the random states a checkpoint
carries."""

from __future__ import annotations

import argparse
import ctypes
import os
import random
from typing import Any

import numpy as np
import torch

from aaconv.errors import ConfigError


def select_device(name: str = "auto", local_rank: int = 0, key: str = "trainer.device") -> torch.device:
    """ "auto" takes CUDA (GPU `local_rank`) when present, else the CPU; anything else is passed to torch.device.
    `key` is the config key the errors name (eval.py's is `device`)."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"{key}={name} is not a device: use auto, cpu, cuda or cuda:<index>") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name} but no CUDA device is visible; use {key}=auto or cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool, cudnn_benchmark: bool = False) -> None:
    """`enabled`: deterministic kernels where they exist (a warning names ops that have none) and no cuDNN
    autotuning. Otherwise cuDNN autotuning as asked (fast for fixed input sizes, slow for varying ones)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = cudnn_benchmark and not enabled


CPU_ALLOCATORS = ("tuned", "default")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks below 32 MiB come from the heap
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed heap for reuse instead of returning it to the OS


def set_cpu_allocator(mode: str) -> bool:
    """``"tuned"``: glibc's malloc keeps the memory of freed tensors below 32 MiB for reuse. A training step frees
    and allocates the same activations, gradients and temporaries every step; by default glibc maps the larger ones
    afresh or returns them to the OS, and each step then page-faults them back in (on the CPU up to a tenth of an
    AW-ResNet-50 step, docs/performance.md). ``"default"``: glibc's own behaviour, untouched. Process-wide, inherited by
    forked data workers. Returns whether the setting was applied (False for ``"default"`` and where the C library
    has no ``mallopt``: macOS, musl)."""
    if mode not in CPU_ALLOCATORS:
        raise ConfigError(f"cpu_allocator={mode!r}: use one of {', '.join(CPU_ALLOCATORS)}")
    if mode == "default":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def add_cpu_allocator_option(parser: argparse.ArgumentParser) -> None:
    """The scripts' ``--cpu-allocator tuned|default`` (for ``set_cpu_allocator``), default as train.py sets it."""
    parser.add_argument(
        "--cpu-allocator",
        default="tuned",
        choices=CPU_ALLOCATORS,
        help="glibc malloc as train.py sets it (trainer.cpu_allocator, default tuned) or glibc's default",
    )


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors and lists (loadable with weights_only=True)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [np_kind, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what `rng_state` captured."""
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_kind, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
