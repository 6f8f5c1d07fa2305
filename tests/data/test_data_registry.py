"""The dataset registry: every data config names a registered format, every format has a config, the tasks build
any registered format with no edit, and a wrong format, task or class count is one line naming the fix."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from aaconv.data import registry
from aaconv.data.registry import DataFormat, DataSplits, build_data, data_format, formats, register_format
from aaconv.errors import ConfigError, DataError
from aaconv.tasks.classification import ClassificationTask
from aaconv.tasks.detection import DetectionTask
from helpers.config import REPO, TINY_SHAPES, data_configs

DATA_CONFIGS = data_configs()
BUILTIN_CONFIGS = [name for name, data in DATA_CONFIGS.items() if data.get("generate")]


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The registry as it is, restored after the test (which may register formats of its own)."""
    monkeypatch.setattr(registry._FORMATS, "entries", dict(formats()))
    yield


def random_classification(data: Mapping[str, Any]) -> DataSplits:
    """A format for the test: `data.size` random 8x8 images with `data.labels` labels."""
    count, classes = int(data["size"]), int(data["labels"])
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(count, 3, 8, 8, generator=generator), torch.arange(count) % classes
    return DataSplits(TensorDataset(images, labels), TensorDataset(images, labels), [f"c{i}" for i in range(classes)])


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_every_data_config_names_a_registered_format(name: str) -> None:
    assert DATA_CONFIGS[name]["format"] in formats(), f"configs/data/{name}.yaml"


@pytest.mark.parametrize("name", list(formats()))
def test_every_format_has_a_data_config(name: str) -> None:
    assert any(data["format"] == name for data in DATA_CONFIGS.values()), f"no configs/data/*.yaml with format {name}"


@pytest.mark.parametrize("config", BUILTIN_CONFIGS)
def test_builtin_sets_build_through_their_format(config: str, data_cache: Path) -> None:
    data = {**DATA_CONFIGS[config], "root": str(data_cache)}
    if data["generate"].get("kind", "shapes") == "shapes":
        data["generate"] = {**TINY_SHAPES, "det_image_size": data["generate"]["det_image_size"]}
    task = formats()[data["format"]].task
    splits = build_data(data, task, **({"hflip": 0.5} if task == "detection" else {}))
    image, target = splits.train[0]
    assert image.shape[0] == 3 and len(splits.val) > 0
    if task == "classification":
        assert len(splits.classes) == data["num_classes"] and 0 <= target < data["num_classes"]
    else:
        assert len(splits.classes) <= data["num_classes"] and splits.classes[0] == "__background__"
        assert set(target) == {"boxes", "labels", "image_id"} and splits.collate_fn is not None


def test_a_new_format_reaches_the_task_without_a_task_edit(scratch_registry: None) -> None:
    register_format(DataFormat("random_tensors", "classification", random_classification))
    data = {"name": "random", "format": "random_tensors", "size": 12, "labels": 3, "num_classes": 3, "image_size": 8}
    task = ClassificationTask(backbone={"name": "resnet18"}, attention={"variant": "none"}, data=data)
    train, val = task.build_datasets()
    assert len(train) == len(val) == 12 and task.collate_fn is None
    assert [int(train[i][1]) for i in range(4)] == [0, 1, 2, 0]


def test_tasks_name_no_format() -> None:
    sources = {path.name: path.read_text() for path in (REPO / "aaconv" / "tasks").glob("*.py")}
    for name in formats():
        for file, text in sources.items():
            assert f'"{name}"' not in text and f"'{name}'" not in text, f"aaconv/tasks/{file} names format {name}"


def test_unknown_format_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown data.format 'tfrecord'; the registered formats are .*imagefolder"):
        build_data({"format": "tfrecord", "num_classes": 2}, "classification")


def test_detection_task_refuses_classification_data(data_cache: Path) -> None:
    data = {**DATA_CONFIGS["shapes"], "root": str(data_cache)}
    task = DetectionTask(backbone={"name": "resnet18"}, attention={"variant": "none"}, data=data, head="retinanet")
    with pytest.raises(ConfigError, match=r"data=shapes \(format imagefolder\) holds classification data.*coco"):
        task.build_datasets()


def test_class_count_is_checked_for_every_format(scratch_registry: None) -> None:
    register_format(DataFormat("random_tensors", "classification", random_classification))
    data = {"name": "random", "format": "random_tensors", "size": 4, "labels": 3, "num_classes": 5}
    with pytest.raises(DataError, match=r"data=random has 3 classes but data.num_classes=5; set data.num_classes=3"):
        build_data(data, "classification")


def test_configs_saved_before_data_format_read_their_tasks_format() -> None:
    assert data_format({"name": "imagenet"}, "classification").name == "imagefolder"
    assert data_format({"name": "coco"}, "detection").name == "coco"


def test_a_name_registers_once(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="'imagefolder' is already registered"):
        register_format(DataFormat("imagefolder", "classification", random_classification))
