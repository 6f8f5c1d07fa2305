"""Tasks tie a model, its data, its loss and its metrics together; the training loop only sees this seam.

The interface is `aaconv.tasks.base.Task`; `build_task` makes one from the project's own config tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate

from aaconv.tasks.base import Task


def build_task(cfg: Mapping[str, Any]) -> Task:
    """Instantiates `cfg.task` (its `_target_` class) with the backbone, attention and data groups.

    Only for configs composed from the project's own config tree: a config read back from a checkpoint
    or any other file is data and must never reach `instantiate`."""
    return instantiate(
        cfg["task"], backbone=cfg["backbone"], attention=cfg["attention"], data=cfg["data"], _convert_="all"
    )


__all__ = ["Task", "build_task"]
