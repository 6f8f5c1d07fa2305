"""One writer per run directory: an exclusive `fcntl` lock on `<run_dir>/.lock`, held for the whole run.

The kernel drops the lock when its process ends, however it ends (kill -9 included), so a crashed run never
leaves a stale lock behind; the file itself stays and only says who held it last.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from aaconv.errors import RunDirError
from aaconv.utils.atomic import remove_temp_files

LOCK_NAME = ".lock"


class RunLock:
    """Takes the lock on construction or raises RunDirError naming the process that holds it."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise RunDirError(f"cannot create {self.path} ({e.strerror}); choose a writable hydra.run.dir") from e
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip() or "another process"
            self.release()
            raise RunDirError(
                f"run directory {self.path.parent} is in use by {holder}; wait for it to finish, "
                "or give this run another hydra.run.dir"
            ) from None
        try:  # also the first write into the run directory: a full disk shows here, before any training
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError as e:
            self.release()
            raise RunDirError(
                f"cannot write {self.path} ({e.strerror}); free space or choose a writable hydra.run.dir"
            ) from e

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


def claim_run_dir(run_dir: Path, resume: str | None, files: list[str]) -> RunLock:
    """Creates `run_dir`, locks it, refuses `trainer.resume=never` where a run already wrote `last.pt`
    (its metrics.jsonl and best.pt would mix with the new run's), and deletes the temporary files a killed
    checkpoint write left of `files`. RunDirError when any of this cannot be done."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(
            f"cannot create run directory {run_dir} ({e.strerror}); choose a writable hydra.run.dir"
        ) from e
    lock = RunLock(run_dir)
    if resume in (None, "never") and (run_dir / "last.pt").exists():
        lock.release()
        raise RunDirError(
            f"trainer.resume={resume} but {run_dir} already holds a run (last.pt); give the new run "
            "another hydra.run.dir, delete that directory, or continue it with trainer.resume=auto"
        )
    remove_temp_files(run_dir, files)
    return lock
