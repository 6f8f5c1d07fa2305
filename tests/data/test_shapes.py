"""The built-in shapes set: deterministic, in real ImageFolder / COCO layouts, with tight boxes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools.coco import COCO

from aaconv.data.shapes import CLASSES, ShapesSpec, classification_sample, detection_sample, draw_shape, materialize

SPEC = ShapesSpec(
    seed=3,
    image_size=32,
    train_per_class=4,
    val_per_class=2,
    det_image_size=64,
    det_train_images=6,
    det_val_images=3,
    det_max_objects=3,
)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_generation_is_bit_for_bit_reproducible(tmp_path: Path) -> None:
    first = materialize(tmp_path / "a", SPEC)
    second = materialize(tmp_path / "b", SPEC)
    digest = tree_digest(first)
    assert len(digest) > 40
    assert digest == tree_digest(second)


def test_seed_changes_the_images() -> None:
    a, _ = classification_sample(0, "train", 5, 32)
    b, _ = classification_sample(1, "train", 5, 32)
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_second_call_reuses_the_cache(tmp_path: Path) -> None:
    root = materialize(tmp_path, SPEC)
    marker = root / "imagefolder" / "train" / CLASSES[0] / "000000.png"
    marker.write_bytes(b"touched")
    assert materialize(tmp_path, SPEC) == root
    assert marker.read_bytes() == b"touched"
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no staging folder left behind


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o077, 0o700)])
def test_dataset_folder_follows_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        root = materialize(tmp_path, SPEC)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(root.stat().st_mode) == mode  # a shared cache is readable by the team when the umask says so


def test_imagefolder_layout(tmp_path: Path) -> None:
    root = materialize(tmp_path, SPEC) / "imagefolder"
    for split, per_class in (("train", SPEC.train_per_class), ("val", SPEC.val_per_class)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(CLASSES)
        for name in CLASSES:
            images = list((root / split / name).glob("*.png"))
            assert len(images) == per_class
            assert Image.open(images[0]).size == (SPEC.image_size, SPEC.image_size)


def test_coco_layout_reads_with_pycocotools(tmp_path: Path) -> None:
    root = materialize(tmp_path, SPEC) / "coco"
    coco = COCO(str(root / "annotations" / "instances_val2017.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    assert len(coco.getImgIds()) == SPEC.det_val_images
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        assert (root / "val2017" / info["file_name"]).is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 1 <= len(anns) <= SPEC.det_max_objects
        for ann in anns:
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= info["width"] and y + h <= info["height"]


@pytest.mark.parametrize("kind", CLASSES)
@pytest.mark.parametrize("side", [9, 16, 31])
def test_returned_box_is_the_bounding_box_of_the_drawn_pixels(kind: str, side: int) -> None:
    canvas = Image.new("RGB", (48, 48))
    box = draw_shape(ImageDraw.Draw(canvas), kind, (5, 7, 5 + side, 7 + side), (255, 255, 255))
    ys, xs = np.nonzero(np.asarray(canvas).any(axis=-1))
    drawn = (xs.min(), ys.min(), xs.max(), ys.max())
    assert np.abs(np.subtract(box, drawn)).max() <= 1, (box, drawn)


def test_detection_objects_do_not_overlap() -> None:
    for index in range(20):
        _, objects = detection_sample(7, "train", index, 64, 3)
        boxes = [b for _, b in objects]
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[a], boxes[b]
                assert ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0


def test_classification_labels_cycle_through_classes() -> None:
    labels = [classification_sample(0, "val", i, 32)[1] for i in range(2 * len(CLASSES))]
    assert labels == list(range(len(CLASSES))) * 2


def test_spec_is_recorded(tmp_path: Path) -> None:
    root = materialize(tmp_path, SPEC)
    assert json.loads((root / "spec.json").read_text())["seed"] == 3
