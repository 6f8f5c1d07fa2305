"""The shard formats (aaconv/data/shards.py): `shards` for classification (ImageNet converted by
scripts/make_shards.py), read with the folder path's transforms, and `coco_shards` for detection, scored against
the original annotation file. A built-in set (`data.generate`) is generated into the cache and converted to shards
there on first use, so the quick start runs from shards as it runs from its folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aaconv.data.builtin import dataset_root
from aaconv.data.coco import detection_collate
from aaconv.data.gpu_decode import collate_encoded
from aaconv.data.registry import DataFormat, DataSplits, register_format
from aaconv.data.shard_sources import coco_source, imagefolder_source
from aaconv.data.shard_writer import write_shards
from aaconv.data.shards import MANIFEST, ShardDetection, ShardImages, ShardSplit, read_manifest, shard_location
from aaconv.data.transforms import classification_transform, eval_transform
from aaconv.errors import DataError
from aaconv.utils.atomic import current_umask

SOURCES = {"classification": ("imagefolder", imagefolder_source), "detection": ("coco", coco_source)}


def builtin_shards(data: Mapping[str, Any], kind: str) -> Path:
    """The shards of a built-in set, written next to its generated folder (its `kind` layout) on first use. Safe
    from several processes at once: each writes a private folder, the first rename wins."""
    layout, source = SOURCES[kind]
    folder = dataset_root(data, layout)
    shards = folder.parent / f"{layout}-shards"
    if (shards / MANIFEST).is_file():
        return shards
    staging = Path(tempfile.mkdtemp(prefix=".shards-", dir=folder.parent))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide a shared AACONV_CACHE from a team
    try:
        classes, splits = source(folder, [data["train_split"], data["val_split"]])
        write_shards(staging, kind=kind, classes=classes, splits=splits, source=str(folder), progress=False)
        try:
            os.rename(staging, shards)
        except OSError as e:
            if not (shards / MANIFEST).is_file():
                raise DataError(f"cannot write the built-in shards to {shards} ({e}); delete that folder") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return shards


def open_shards(data: Mapping[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    """(location, manifest) of the shards `data` names, checked to hold `kind` samples."""
    location = shard_location(builtin_shards(data, kind) if data.get("generate") else data["root"])
    manifest = read_manifest(location)
    if manifest.get("kind") != kind:
        raise DataError(
            f"the shards at {location} hold {manifest.get('kind')} samples, data={data.get('name')} reads {kind} "
            "samples; pick the data config of their kind"
        )
    return location, manifest


def build_shard_data(data: Mapping[str, Any]) -> DataSplits:
    """`data.format: shards`: classification shards, decoded and transformed as the folder path does; with
    `data.decode: gpu` the training images stay encoded for aaconv.data.gpu_decode."""
    location, manifest = open_shards(data, "classification")
    cache, skip = data.get("cache_dir"), bool(data.get("skip_unreadable", False))
    gpu = data.get("decode", "cpu") == "gpu"
    train = ShardImages(
        ShardSplit(location, data["train_split"], manifest, cache),
        classification_transform(data["image_size"], True, data["transform"]["train"]),
        skip_unreadable=skip,
        encoded=gpu,
    )
    val = ShardImages(ShardSplit(location, data["val_split"], manifest, cache), eval_transform(data), skip)
    return DataSplits(train, val, manifest["classes"], collate_encoded if gpu else None)


def annotation_file(data: Mapping[str, Any]) -> Path:
    """The original annotation file of the val split that evaluation scores against: `data.annotations`, or the
    generated one of a built-in set."""
    if data.get("generate"):
        return dataset_root(data, "coco") / "annotations" / f"instances_{data['val_split']}.json"
    if not data.get("annotations"):
        raise DataError(
            f"data.annotations is not set: COCO shards are scored against the original annotation file, e.g. "
            f"data.annotations=/data/coco/annotations/instances_{data['val_split']}.json"
        )
    path = Path(str(data["annotations"])).expanduser()
    if not path.is_file():
        raise DataError(
            f"data.annotations={path} not found: set it to the original instances_{data['val_split']}.json the "
            "shards were written from"
        )
    return path


def build_coco_shard_data(data: Mapping[str, Any], hflip: float = 0.5) -> DataSplits:
    """`data.format: coco_shards`: COCO shards (scripts/make_shards.py --coco), the val split scored against
    `data.annotations`; training images flipped with probability `hflip`."""
    location, manifest = open_shards(data, "detection")
    cache, skip = data.get("cache_dir"), bool(data.get("skip_unreadable", False))

    def split(name: str, train: bool) -> ShardDetection:
        return ShardDetection(
            ShardSplit(location, name, manifest, cache),
            manifest["splits"][name],
            train=train,
            hflip=hflip,
            annotation_file=None if train else annotation_file(data),
            skip_unreadable=skip,
        )

    train, val = split(data["train_split"], True), split(data["val_split"], False)
    return DataSplits(train, val, manifest["classes"], detection_collate)


register_format(DataFormat("shards", "classification", build_shard_data, eval_transform))
register_format(DataFormat("coco_shards", "detection", build_coco_shard_data))
