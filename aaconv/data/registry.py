"""The dataset registry: how each data format builds its splits, chosen by the `data` config group's `format`.

A format is one ``DataFormat`` entry, registered by the file that reads it (``register_format`` at the bottom of
imagefolder.py, cifar.py, coco.py, ...). Every module of ``aaconv.data`` is imported the first time the registry is
read, so a new format is one new file here plus ``configs/data/<name>.yaml`` naming it (``format: <name>``). The
tasks ask ``build_data(data, task)`` and never branch on a format's name.

A format says which task its samples are for (``task``: "classification" samples are ``(image, label)``,
"detection" samples ``(image, {boxes, labels, image_id})``), builds the (train, val) datasets with their label
names and the collate function the task's loader needs, and, for classification, the evaluation transform of a
single image (scripts/visualize.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch.utils.data import Dataset

from aaconv.errors import ConfigError, DataError
from aaconv.utils.plugins import PackageRegistry

TaskKind = Literal["classification", "detection"]
# Configs saved before `data.format` existed read the one format their task had then.
FORMAT_BEFORE_REGISTRY: dict[str, str] = {"classification": "imagefolder", "detection": "coco"}


@dataclass(frozen=True)
class DataSplits:
    """What a format builds for a task.

    Attributes:
        train, val: the datasets (classification: (image, label) samples; detection: (image, target) samples).
        classes: the name of every label, the label being the index (detection: the category id, "" for an id
            without a category, index 0 the background).
        collate_fn: the DataLoader collate function of both splits (None: torch's default).
    """

    train: Dataset
    val: Dataset
    classes: list[str]
    collate_fn: Callable[[list[Any]], Any] | None = None


@dataclass(frozen=True)
class DataFormat:
    """One registered data format.

    Attributes:
        name: the `data.format` value that picks it.
        task: the task kind its samples are for.
        build: ``build(data, **task_options) -> DataSplits`` from the `data` config group (plain mapping);
            detection formats take the task's ``hflip``.
        eval_transform: classification only: ``eval_transform(data)`` -> the transform the val split applies to a
            PIL image (scripts/visualize.py shows any image as the model sees it); None for detection.
    """

    name: str
    task: TaskKind
    build: Callable[..., DataSplits]
    eval_transform: Callable[[Mapping[str, Any]], Callable] | None = None


_FORMATS: PackageRegistry[DataFormat] = PackageRegistry(__package__)


def register_format(data_format: DataFormat) -> DataFormat:
    """Adds ``data_format`` to the registry (called once per format, by the module that reads it)."""
    if data_format.task not in FORMAT_BEFORE_REGISTRY:
        raise ValueError(f"data format {data_format.name!r}: task must be one of {tuple(FORMAT_BEFORE_REGISTRY)}")
    return _FORMATS.add(data_format.name, data_format)


def formats() -> dict[str, DataFormat]:
    """Every registered format, by name, in registration order."""
    return _FORMATS.read()


def data_format(data: Mapping[str, Any], task: TaskKind) -> DataFormat:
    """The format `data.format` names, checked to serve `task`; ConfigError naming the valid ones otherwise."""
    registered = formats()
    name = data.get("format") or FORMAT_BEFORE_REGISTRY[task]
    if name not in registered:
        raise ConfigError(f"unknown data.format {name!r}; the registered formats are {', '.join(registered)}")
    found = registered[name]
    if found.task != task:
        serving = ", ".join(n for n, f in registered.items() if f.task == task)
        raise ConfigError(
            f"data={data.get('name')} (format {name}) holds {found.task} data, but the {task} task needs "
            f"{task} data: pick a data config with one of the formats {serving}"
        )
    return found


def build_data(data: Mapping[str, Any], task: TaskKind, **task_options: Any) -> DataSplits:
    """The splits of the `data` config group for `task`, their label count checked against `data.num_classes`
    (classification: equal; detection: the largest category id + 1 at most)."""
    splits = data_format(data, task).build(data, **task_options)
    found, num_classes = len(splits.classes), int(data["num_classes"])
    if task == "classification" and found != num_classes:
        raise DataError(
            f"data={data.get('name')} has {found} classes but data.num_classes={num_classes}; "
            f"set data.num_classes={found} or fix the data"
        )
    if task == "detection" and found > num_classes:
        raise DataError(
            f"category id {found - 1} needs data.num_classes >= {found} (largest category id + 1; COCO: 91), got "
            f"{num_classes}: train with data.num_classes={found}, or evaluate a checkpoint on annotations of the "
            "categories it was trained on"
        )
    return splits
