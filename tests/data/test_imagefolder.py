"""ImageFolder loading: clear one-line errors for every malformed layout, exact class bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from aaconv.data import SkipUnreadable
from aaconv.data.imagefolder import build_imagefolder
from aaconv.engine.trainer import Trainer
from aaconv.errors import DataError
from aaconv.tasks import build_task
from helpers.config import compose_config
from helpers.images import write_messy_imagefolder


def make_tree(root: Path, classes: dict[str, int], split: str = "train") -> Path:
    for name, count in classes.items():
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / f"{i}.png")
    return root


def test_reads_classes_in_sorted_order(tmp_path: Path) -> None:
    make_tree(tmp_path, {"n02": 2, "n01": 3})
    dataset = build_imagefolder(tmp_path, "train", transform=None, num_classes=2)
    assert dataset.classes == ["n01", "n02"]
    assert sorted(label for _, label in dataset.samples) == [0, 0, 0, 1, 1]
    image, label = dataset[0]
    assert image.mode == "RGB" and label == 0


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist; set data.root.*<root>/train/<class>/<image>"):
        build_imagefolder(tmp_path / "nope", "train", transform=None)


def test_a_file_given_as_root_is_named_as_a_file(tmp_path: Path) -> None:
    root = tmp_path / "train.tar"
    root.write_bytes(b"")
    with pytest.raises(DataError, match=r"data root .*train.tar is a file, not a folder; set data.root"):
        build_imagefolder(root, "train", transform=None)


def test_a_single_class_is_refused_for_training(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a": 2})
    for num_classes in (1, 1000):  # before the count check, which would suggest data.num_classes=1
        with pytest.raises(DataError, match=r"has one class folder \(a\): a classifier needs two or more"):
            build_imagefolder(tmp_path, "train", transform=None, num_classes=num_classes)


def test_missing_split(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a": 1}, split="training")
    with pytest.raises(DataError, match=r"has no 'train' folder \(found \['training'\]\)"):
        build_imagefolder(tmp_path, "train", transform=None)


def test_split_without_class_folders(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "loose.png")
    with pytest.raises(DataError, match="has no class folders"):
        build_imagefolder(tmp_path, "val", transform=None)


def test_class_folders_without_images(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="expected <root>/train/<class>/<image>"):
        build_imagefolder(tmp_path, "train", transform=None)


def test_wrong_class_count_names_the_fix(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a": 1, "b": 1, "c": 1})
    with pytest.raises(DataError, match=r"3 class folders but data.num_classes=1000; set data.num_classes=3"):
        build_imagefolder(tmp_path, "train", transform=None, num_classes=1000)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a": 1})
    bad = tmp_path / "train" / "a" / "broken.png"
    bad.write_bytes(b"not a png at all")
    dataset = build_imagefolder(tmp_path, "train", transform=None)
    index = [i for i, (path, _) in enumerate(dataset.samples) if path.endswith("broken.png")][0]
    with pytest.raises(DataError, match=r"cannot decode image .*broken.png.*delete or re-download"):
        dataset[index]


def test_skip_unreadable_gives_none_for_exactly_the_bad_files(tmp_path: Path) -> None:
    bad = {str(p) for p in write_messy_imagefolder(tmp_path) if "/train/" in str(p)}
    strict = build_imagefolder(tmp_path, "train", transform=None)
    skipping = build_imagefolder(tmp_path, "train", transform=None, skip_unreadable=True)
    for index, (path, label) in enumerate(skipping.samples):
        if path in bad:
            assert skipping[index] is None
            with pytest.raises(DataError, match="cannot decode image"):
                strict[index]
        else:
            image, target = skipping[index]
            assert image.mode == "RGB" and target == label
    assert sum(skipping[i] is None for i in range(len(skipping))) == len(bad) == 2


def test_skip_unreadable_collate_leaves_out_none_and_refuses_an_all_bad_batch() -> None:
    collate = SkipUnreadable(None)
    images, labels = collate([(torch.zeros(3), 0), None, (torch.ones(3), 1)])
    assert images.shape == (2, 3) and labels.tolist() == [0, 1]
    with pytest.raises(DataError, match="all 2 images of a batch are unreadable.*check_data.py"):
        collate([None, None])


def test_training_with_skip_unreadable_counts_the_skipped_images(tmp_path: Path) -> None:
    write_messy_imagefolder(tmp_path / "data")
    # 13 images per split, one batch of 13: every image is seen once per epoch, the 2 bad ones skipped
    cfg = compose_config(
        "data=imagenet",
        f"data.root={tmp_path / 'data'}",
        "data.num_classes=2",
        "data.image_size=32",
        "data.batch_size=13",
        "data.workers=0",
        "data.skip_unreadable=true",
        "trainer.epochs=1",
        "logger.progress_bar=false",
    )
    results = Trainer(cfg, build_task(cfg), tmp_path / "run").fit()
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert record["unreadable_skipped"] == 2 and results["val_images"] == 13 - 2
