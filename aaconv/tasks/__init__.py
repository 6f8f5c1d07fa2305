"""Tasks tie a model, its data, its loss and its metrics together; the training loop only sees this seam.

The interface is `aaconv.tasks.base.Task`. `build_task` makes one from the project's own config tree;
`task_from_saved_config` from a config read back from a checkpoint, which is data and is never instantiated.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from aaconv.errors import AAConvError, CheckpointError
from aaconv.tasks.base import Task

# The tasks a saved config may name: `_target_` -> (module, class).
TASKS = {
    "aaconv.tasks.classification.ClassificationTask": ("aaconv.tasks.classification", "ClassificationTask"),
    "aaconv.tasks.detection.DetectionTask": ("aaconv.tasks.detection", "DetectionTask"),
}


def build_task(cfg: Mapping[str, Any]) -> Task:
    """Instantiates `cfg.task` (its `_target_` class) with the backbone, attention and data groups.

    Only for configs composed from the project's own config tree: a config read back from a checkpoint
    or any other file is data and must never reach `instantiate` (use task_from_saved_config). A user error
    the task raises (aaconv.errors) comes out as itself, not wrapped in Hydra's InstantiationException."""
    try:
        return instantiate(
            cfg["task"], backbone=cfg["backbone"], attention=cfg["attention"], data=cfg["data"], _convert_="all"
        )
    except InstantiationException as e:
        if isinstance(e.__cause__, AAConvError):
            raise e.__cause__ from None
        raise


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def task_from_saved_config(cfg: Mapping[str, Any]) -> Task:
    """The task a saved run config describes (a checkpoint's `config`, read back as data).

    Its `task._target_` must be one of TASKS; that class is called with the config's plain values, and no
    other name in the config is imported or called."""
    options = dict(_plain(cfg["task"]))
    target = options.pop("_target_", None)
    if target not in TASKS:
        raise CheckpointError(
            f"the checkpoint's config names task {target!r}, which is not one of aaconv's tasks "
            f"({', '.join(TASKS)}); evaluate it with the code that trained it"
        )
    module, name = TASKS[target]
    task_class = getattr(importlib.import_module(module), name)
    groups = {group: _plain(cfg[group]) for group in ("backbone", "attention", "data")}
    return task_class(**options, **groups)


__all__ = ["TASKS", "Task", "build_task", "task_from_saved_config"]
