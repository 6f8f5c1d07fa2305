"""Atomic file writes: a temporary file in the target's folder, fsynced, then renamed over the target.

A crash or preemption mid-write leaves the previous file intact, never a truncated one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Calls `write(f)` on a temporary binary file, then renames it to `path` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(data: Any, path: str | os.PathLike, indent: int | None = 2) -> Path:
    """`data` as JSON (with a final newline when indented) written atomically to `path`."""
    text = json.dumps(data, indent=indent) + ("\n" if indent is not None else "")
    return atomic_write(path, lambda f: f.write(text.encode()))
