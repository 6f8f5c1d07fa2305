"""The Task protocol: what the training loop and eval.py need from a task, and nothing more.

A task ties a model, its data, its loss and its metrics together. The engine (aaconv.engine) receives a
task object and never imports a task or a model itself; train.py / eval.py build the task from the
config (aaconv.tasks.build_task) and hand it over.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset


@runtime_checkable
class Task(Protocol):
    """Interface of a training / evaluation task (aaconv.tasks.classification, aaconv.tasks.detection).

    Attributes:
        primary_metric: the key of `evaluate`'s result that picks `best.pt` and that train.py returns to
            Hydra sweepers ("top1", "AP").
        primary_metric_mode: "max" when larger is better, "min" otherwise.
        collate_fn: the DataLoader collate function for both splits (None: torch's default), the data format's
            (aaconv.data.registry) once `build_datasets` has run.
    """

    primary_metric: str
    primary_metric_mode: Literal["max", "min"]
    collate_fn: Callable[[list[Any]], Any] | None

    def build_model(self) -> nn.Module:
        """A freshly initialised model (pretrained weights applied where the config asks for them)."""
        ...

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """(train, validation) datasets."""
        ...

    def group_ids(self, dataset: Dataset) -> list[int] | None:
        """A group id per sample to batch like with like (detection: aspect ratio); None: no grouping."""
        ...

    def training_loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[Tensor, int]:
        """(scalar loss to minimise, number of images in `batch`)."""
        ...

    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, output_dir: Path | None = None
    ) -> dict[str, float]:
        """Metrics over every sample of `loader`'s dataset, identical on every process.

        When distributed, each process sees its shard and the task combines them with
        aaconv.utils.distributed (all_reduce_sum / all_gather_objects). Files the task writes (detection's
        predictions.json) go into `output_dir`, written by the main process only; None writes nothing.
        """
        ...
