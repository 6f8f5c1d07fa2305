"""ImageFolder loading: clear one-line errors for every malformed layout, exact class bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from aaconv.data import SkipUnreadable
from aaconv.data.imagefolder import build_imagefolder
from aaconv.data.transforms import classification_transform
from aaconv.engine.trainer import Trainer
from aaconv.errors import DataError, exit_on_user_error
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


def build_classification_datasets(root: Path, num_classes: int) -> None:
    """Builds the train and val datasets the way `python train.py data=imagenet` does."""
    cfg = compose_config("data=imagenet", f"data.root={root}", f"data.num_classes={num_classes}")
    build_task(cfg).build_datasets()


def test_val_classes_named_differently_from_train_are_refused(tmp_path: Path) -> None:
    make_tree(tmp_path, {"circle": 1, "square": 1})
    make_tree(tmp_path, {"circle": 1, "star": 1}, split="val")
    with pytest.raises(DataError) as error:
        build_classification_datasets(tmp_path, num_classes=2)
    assert str(error.value) == (
        f"class folders of {tmp_path / 'train'} and {tmp_path / 'val'} differ (only in train: square; "
        f"only in val: star), so their labels would not match; make {tmp_path / 'val'} hold the same class "
        f"folders as {tmp_path / 'train'}"
    )


@pytest.mark.parametrize("num_classes", [2, 3])
def test_an_extra_val_class_is_named_whatever_num_classes_says(tmp_path: Path, num_classes: int) -> None:
    make_tree(tmp_path, {"a": 1, "b": 1})
    make_tree(tmp_path, {"a": 1, "b": 1, "c": 1}, split="val")
    with pytest.raises(DataError, match=r"differ \(only in val: c\), so their labels would not match") as error:
        build_classification_datasets(tmp_path, num_classes=num_classes)
    assert "num_classes" not in str(error.value)


def test_training_stops_on_differing_class_folders_with_one_error_line(tmp_path: Path, capsys) -> None:
    make_tree(tmp_path / "data", {"circle": 1, "square": 1})
    make_tree(tmp_path / "data", {"circle": 1, "star": 1}, split="val")
    cfg = compose_config("data=imagenet", f"data.root={tmp_path / 'data'}", "data.num_classes=2", "data.workers=0")
    with pytest.raises(SystemExit) as exit_status:
        exit_on_user_error(Trainer(cfg, build_task(cfg), tmp_path / "run").fit)()
    assert exit_status.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: class folders of ") and "(only in train: square; only in val: star)" in error
    assert "\n" not in error


def test_many_differing_class_folders_are_counted(tmp_path: Path) -> None:
    make_tree(tmp_path, {name: 1 for name in "abcdefgh"})
    make_tree(tmp_path, {"a": 1, "b": 1}, split="val")
    with pytest.raises(DataError, match=r"\(only in train: c, d, e, f, g and 1 more\)"):
        build_classification_datasets(tmp_path, num_classes=8)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a": 1})
    bad = tmp_path / "train" / "a" / "broken.png"
    bad.write_bytes(b"not a png at all")
    dataset = build_imagefolder(tmp_path, "train", transform=None)
    index = [i for i, (path, _) in enumerate(dataset.samples) if path.endswith("broken.png")][0]
    with pytest.raises(DataError, match=r"cannot decode image .*broken.png.*delete or re-download"):
        dataset[index]


def test_truncated_jpeg_decoded_by_the_transform_names_the_file(tmp_path: Path) -> None:
    """A JPEG is decoded by the transform (at the scale its crop allows), not by the loader: its decode error
    still names the file."""
    make_tree(tmp_path, {"a": 1})
    bad = tmp_path / "train" / "a" / "truncated.jpg"
    Image.radial_gradient("L").convert("RGB").resize((400, 300)).save(bad, quality=90)
    bad.write_bytes(bad.read_bytes()[:2000])
    dataset = build_imagefolder(tmp_path, "train", transform=classification_transform(32, True, {}))
    index = [i for i, (path, _) in enumerate(dataset.samples) if path.endswith("truncated.jpg")][0]
    with pytest.raises(DataError, match=r"cannot decode image .*truncated.jpg.*delete or re-download"):
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
