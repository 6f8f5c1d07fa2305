"""User-facing errors: raised for bad input, printed by the entry points as one line, never a traceback."""

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

P = ParamSpec("P")
R = TypeVar("R")


class AAConvError(Exception):
    """A problem with the user's data, config or files; the message names the problem and the fix."""


class DataError(AAConvError):
    """Missing, malformed or corrupt data."""


class CheckpointError(AAConvError):
    """A checkpoint that is missing, unreadable, or from another model."""


class ConfigError(AAConvError):
    """A config value that is required but unset, or that cannot work."""


class RunDirError(AAConvError):
    """A run directory that another process is writing, that cannot be written, or that a setting would corrupt."""


class DistributedError(AAConvError):
    """A collective that failed: another process died, hangs, or cannot be reached."""


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message, or its type name when the message is empty."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def user_message(error: BaseException) -> str:
    """`error`'s message on one line. An error re-raised from a DataLoader worker carries the worker's whole
    traceback in its message; its last line holds the original message after the exception's name."""
    text = str(error).strip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    name = f"{type(error).__module__}.{type(error).__qualname__}: "
    return last.removeprefix(name).removeprefix(f"{type(error).__qualname__}: ")


def require_values(cfg: DictConfig) -> None:
    """Raises ConfigError naming every mandatory value the user has not set: each `???` and each key of
    `required_values` that is null."""
    required = cfg.get("required_values") or []
    missing = sorted(set(OmegaConf.missing_keys(cfg)) | {k for k in required if OmegaConf.select(cfg, k) is None})
    if missing:
        settings = " ".join(f"{key}=..." for key in missing)
        raise ConfigError(f"required config value(s) not set: {', '.join(missing)}; add {settings} to the command")


def exit_on_user_error(fn: Callable[P, R]) -> Callable[P, R]:
    """Turns a user error (bad data, checkpoint or a required config value left unset) into one log line
    and exit status 2 instead of a traceback; programming errors still raise."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (AAConvError, MissingMandatoryValue) as e:
            print(f"error: {user_message(e)}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
