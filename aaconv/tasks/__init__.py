"""Tasks tie a model, its data, its loss and its metrics together; the training loop only sees this seam.

A task has:
    primary_metric: str                                   the metric that picks the best checkpoint
    build_model() -> nn.Module
    build_datasets() -> (train_dataset, val_dataset)
    collate_fn: Callable | None                           DataLoader collate function (None: default)
    output_dir: Path | None                               where evaluate() may write files (predictions.json)
    training_loss(model, batch, device) -> (loss, num_images)
    evaluate(model, loader, device) -> dict[str, float]
        metrics over the whole dataset; when distributed each process sees its shard and the task
        combines them with aaconv.engine.distributed (all_reduce_sum / all_gather_objects).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate


def build_task(cfg: Mapping[str, Any]) -> Any:
    """Instantiates `cfg.task` (its `_target_` class) with the backbone, attention and data groups."""
    return instantiate(
        cfg["task"], backbone=cfg["backbone"], attention=cfg["attention"], data=cfg["data"], _convert_="all"
    )
