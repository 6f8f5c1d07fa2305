"""ImageFolder loading: clear one-line errors for every malformed layout, exact class bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from aaconv.data.imagefolder import build_imagefolder
from aaconv.errors import DataError


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
