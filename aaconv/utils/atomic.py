"""Atomic file writes: a temporary file in the target's folder, fsynced, then renamed over the target.

A crash or preemption mid-write leaves the previous file intact, never a truncated one; a kill -9 mid-write
leaves a `.<name>.*.tmp` file behind, which `remove_temp_files` deletes. Files get the mode a plain `open`
would give them (0666 less the process umask), so a team on shared storage can read them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask (read by setting it and putting it back: os.umask is the only portable reader)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Calls `write(f)` on a temporary binary file, then renames it to `path` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would hide results from the rest of a team
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_temp_files(folder: str | os.PathLike, names: list[str]) -> list[Path]:
    """Deletes what a killed `atomic_write` of `folder/<name>` left (`.<name>.*.tmp`); returns the files removed.
    Only safe while no other process writes into `folder`."""
    removed = []
    for name in names:
        for stray in Path(folder).glob(f".{name}.*{TEMP_SUFFIX}"):
            stray.unlink(missing_ok=True)
            removed.append(stray)
    return removed


def write_json_atomic(data: Any, path: str | os.PathLike, indent: int | None = 2) -> Path:
    """`data` as JSON (with a final newline when indented) written atomically to `path`."""
    text = json.dumps(data, indent=indent) + ("\n" if indent is not None else "")
    return atomic_write(path, lambda f: f.write(text.encode()))
