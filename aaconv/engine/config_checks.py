"""The training config checked once, up front: every value that must be a positive integer, a non-negative
number, ... is one, and the error quotes the value as the user typed it (not a derived one such as the
batch-scaled learning rate), so a typo never surfaces as a traceback halfway through a run."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import nn

from aaconv.engine.checkpoint import WEIGHTS
from aaconv.engine.runtime import CPU_ALLOCATORS
from aaconv.errors import ConfigError, first_line
from aaconv.layers import create_attention

_UNSET = object()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


POSITIVE_INT, COUNT, POSITIVE, NON_NEGATIVE = "a positive integer", "an integer >= 0", "a number > 0", "a number >= 0"
POSITIVE_OR_NULL, STAGES = "a number > 0, or null", "a list of stage numbers, e.g. [2,3,4]"
POSITIVE_INT_OR_NULL, COUNT_OR_NULL, INTEGER = "a positive integer, or null", "an integer >= 0, or null", "an integer"
DECODER, PROBABILITY, SIZES = "cpu or gpu", "a number in [0, 1]", "a positive integer or a list of them"
FRACTION, FRACTION_OR_NULL = "a number in (0, 1]", "a number in (0, 1], or null"
ALLOCATOR = " or ".join(CPU_ALLOCATORS)
WEIGHTS_CHOICE = " or ".join(WEIGHTS)
RESUME = "auto, never, or the path of an existing checkpoint file (a run's last.pt / best.pt)"
RULES: dict[str, Callable[[object], bool]] = {
    POSITIVE_INT: lambda v: _is_int(v) and v > 0,
    COUNT: lambda v: _is_int(v) and v >= 0,
    COUNT_OR_NULL: lambda v: v is None or (_is_int(v) and v >= 0),
    INTEGER: _is_int,
    DECODER: lambda v: v in ("cpu", "gpu"),
    ALLOCATOR: lambda v: v in CPU_ALLOCATORS,
    WEIGHTS_CHOICE: lambda v: v in WEIGHTS,
    PROBABILITY: lambda v: _is_number(v) and 0 <= v <= 1,
    FRACTION: lambda v: _is_number(v) and 0 < v <= 1,
    FRACTION_OR_NULL: lambda v: v is None or (_is_number(v) and 0 < v <= 1),
    SIZES: lambda v: all(_is_int(n) and n > 0 for n in (v if isinstance(v, list) and v else [v])),
    RESUME: lambda v: v in (None, "auto", "never") or Path(str(v)).expanduser().is_file(),
    POSITIVE: lambda v: _is_number(v) and v > 0,
    NON_NEGATIVE: lambda v: _is_number(v) and v >= 0,
    POSITIVE_OR_NULL: lambda v: v is None or (_is_number(v) and v > 0),
    POSITIVE_INT_OR_NULL: lambda v: v is None or (_is_int(v) and v > 0),
    STAGES: lambda v: isinstance(v, list) and all(_is_int(s) for s in v),
}

# Keys absent from a config (another task's or attention variant's) are skipped.
CHECKS: dict[str, str] = {
    "seed": INTEGER,
    "data.batch_size": POSITIVE_INT,
    "data.image_size": POSITIVE_INT,
    "data.eval_image_size": POSITIVE_INT_OR_NULL,
    "data.crop_pct": FRACTION,
    "data.num_classes": POSITIVE_INT,
    "data.workers": COUNT,
    "data.decode": DECODER,
    "data.aug_repeats": COUNT,
    "data.detection.min_size": SIZES,
    "data.detection.max_size": POSITIVE_INT,
    "data.detection.hflip": PROBABILITY,
    "trainer.epochs": POSITIVE_INT,
    "trainer.resume": RESUME,
    "trainer.accum_steps": POSITIVE_INT,
    "trainer.max_steps": POSITIVE_INT_OR_NULL,
    "trainer.max_eval_batches": POSITIVE_INT_OR_NULL,
    "trainer.max_bad_steps": COUNT,
    "trainer.checkpoint_every_steps": COUNT,
    "trainer.keep_best": COUNT,
    "trainer.clip_grad_norm": POSITIVE_OR_NULL,
    "trainer.dist_timeout_s": POSITIVE,
    "trainer.cpu_allocator": ALLOCATOR,
    "logger.log_every_steps": POSITIVE_INT,
    "logger.attention_images": COUNT,
    "optim.lr": POSITIVE,
    "optim.lr_base_batch": POSITIVE_INT,
    "optim.weight_decay": NON_NEGATIVE,
    "schedule.warmup_epochs": NON_NEGATIVE,
    "backbone.attention_stages": STAGES,
}


# eval.py's own keys (configs/eval.yaml); null keeps the training run's value.
EVAL_CHECKS: dict[str, str] = {
    "weights": WEIGHTS_CHOICE,
    "batch_size": POSITIVE_INT_OR_NULL,
    "workers": COUNT_OR_NULL,
    "eval_image_size": POSITIVE_INT_OR_NULL,
    "crop_pct": FRACTION_OR_NULL,
}


def check_attention(cfg: DictConfig) -> None:
    """ConfigError (one line) when `cfg.attention` names an unknown part or has an option of the wrong type or
    range: each attention part checks its own options (aaconv.layers.parts)."""
    attention = OmegaConf.select(cfg, "attention", default=None)
    if attention is None:
        return
    try:
        create_attention(OmegaConf.to_container(attention, resolve=True))
    except ValueError as e:
        raise ConfigError(first_line(e)) from e


def check_config(cfg: DictConfig, checks: Mapping[str, str] = CHECKS) -> None:
    """Raises ConfigError for the first value of `checks` (key -> rule) that does not fit its rule, or for
    an attention option its part refuses (`check_attention`; training configs only)."""
    if checks is CHECKS:
        check_attention(cfg)
    for key, rule in checks.items():
        value = OmegaConf.select(cfg, key, default=_UNSET)
        if value is _UNSET:
            continue
        if isinstance(value, DictConfig) or OmegaConf.is_list(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not RULES[rule](value):
            raise ConfigError(f"{key}={value} is not valid: it must be {rule}")


def build_model(build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` (a task's build_model), with the layers' and backbones' argument checks (ValueError: stages a
    backbone lacks, more attention heads than channels, ...) turned into one ConfigError line."""
    try:
        return build()
    except ValueError as e:
        raise ConfigError(
            f"the config cannot build a model: {first_line(e)}; fix backbone.* / attention.* (detection: task.detector.* "
            "/ data.detection.*)"
        ) from e
