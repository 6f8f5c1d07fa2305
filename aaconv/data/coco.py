"""COCO detection data read through pycocotools: `<root>/{train2017,val2017}/` + `<root>/annotations/`.

Labels: a box's label is its COCO `category_id` itself (COCO: 1..90 with gaps), and detectors have
`num_classes = largest category id + 1` (torchvision's 91 for COCO; 0 is Faster R-CNN's background).
Predictions therefore need no mapping back: label == category_id.

Every split: crowd boxes (`iscrowd=1`) are not training targets, boxes with no area after clipping to the
image (degenerate, or outside it) are dropped from the targets, and annotations whose `image_id` names no
image are ignored; one line per split counts each. An annotation file that breaks the layout (a missing list,
a non-integer or duplicate id, category 0, a file name outside the split's folder, a box that is not four finite
numbers, an unknown `category_id`: `annotation_problems`) is an error, and so is an image whose size differs from
its entry's. Training split only: images left without boxes are dropped. The validation
split keeps every image, and pycocotools scores against the annotation file as it is (its degenerate boxes
included). An image that cannot be decoded stops the run with an error naming it, or with `skip_unreadable`
comes out as None and is left out of its batch (aaconv.data.SkipUnreadable).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from aaconv.data.builtin import dataset_root
from aaconv.data.registry import DataFormat, DataSplits, register_format
from aaconv.errors import DataError

log = logging.getLogger("aaconv")
Target = dict[str, Tensor]


def load_coco(annotation_file: Path) -> Any:
    """pycocotools' COCO index of `annotation_file` (without its prints), after `annotation_problems` found
    nothing; DataError naming the first problem otherwise."""
    from pycocotools.coco import COCO

    if not annotation_file.is_file():
        raise DataError(
            f"COCO annotations {annotation_file} not found; data.root must hold "
            "annotations/instances_<split>.json next to the <split>/ image folder"
        )
    try:
        data = json.loads(annotation_file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(
            f"COCO annotations {annotation_file} are not valid JSON ({e}); re-download or fix the file"
        ) from e
    problems = annotation_problems(data)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(
            f"COCO annotations {annotation_file}: {problems[0]}{more}; fix the file "
            "(python scripts/check_data.py <root> --layout coco lists every problem)"
        )
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_box(value: object) -> bool:
    """A COCO bbox: a list of four finite numbers [x, y, width, height]."""
    numbers = isinstance(value, list) and len(value) == 4
    return numbers and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)


def annotation_problems(data: object) -> list[str]:
    """Every way `data` (a parsed instances_<split>.json) breaks the COCO layout this project reads: the three
    lists, integer ids (categories from 1: label 0 is the detectors' background) without duplicates, image
    entries with a file name inside the split's folder and a positive size, annotations with an integer image id,
    a known category and a finite [x, y, w, h] box. Boxes with no area and annotations of unlisted images are
    not problems here: CocoDetection counts and skips them."""
    lists = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in lists):
        return ["the top level must be an object with 'images', 'annotations' and 'categories' lists"]
    categories = [c if isinstance(c, dict) else {} for c in data["categories"]]
    images = [i if isinstance(i, dict) else {} for i in data["images"]]
    annotations = [a if isinstance(a, dict) else {} for a in data["annotations"]]
    category_ids = {c.get("id") for c in categories}
    return (
        [p for c in categories for p in _category_problems(c)]
        + [p for i in images for p in image_problems(i)]
        + _duplicate_ids("category", categories)
        + _duplicate_ids("image", images)
        + [p for a in annotations for p in _annotation_problems(a, category_ids)]
    )


def _category_problems(category: dict[str, Any]) -> list[str]:
    cid = category.get("id")
    return [] if _is_id(cid) and cid >= 1 else [f"category id {cid!r} is not an integer >= 1 (0 is the background)"]


def image_problems(image: dict[str, Any]) -> list[str]:
    """What is wrong with one `images` entry: its id, its file name (inside the split's folder), its size."""
    where, name, problems = f"image {image.get('id')!r}", image.get("file_name"), []
    if not _is_id(image.get("id")):
        problems.append(f"{where}: the id is not an integer")
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        problems.append(f"{where}: file_name {name!r} is not a file name inside the split's image folder")
    if not all(_is_id(image.get(k)) and image[k] > 0 for k in ("width", "height")):
        problems.append(
            f"{where}: width x height {image.get('width')!r} x {image.get('height')!r} are not positive integers"
        )
    return problems


def _duplicate_ids(kind: str, entries: list[dict[str, Any]]) -> list[str]:
    counts = Counter(e.get("id") for e in entries if _is_id(e.get("id")))
    return [f"{kind} id {i} is listed more than once" for i, n in counts.items() if n > 1]


def _annotation_problems(ann: dict[str, Any], category_ids: set[object]) -> list[str]:
    where, problems = f"annotation {ann.get('id')!r}", []
    if not _is_id(ann.get("image_id")):
        problems.append(f"{where}: image_id {ann.get('image_id')!r} is not an integer")
    if not _is_id(ann.get("category_id")) or ann["category_id"] not in category_ids:
        problems.append(f"{where}: category_id {ann.get('category_id')!r} is not among the file's category ids")
    if not is_box(ann.get("bbox")):
        problems.append(f"{where}: bbox {ann.get('bbox')!r} is not [x, y, width, height] of finite numbers")
    return problems


def annotations_to_target(annotations: list[dict[str, Any]], width: int, height: int) -> tuple[Target, int]:
    """COCO annotations of one image -> ({"boxes": (N, 4) xyxy float, "labels": (N,) int64}, dropped count)."""
    boxes, labels, dropped = [], [], 0
    for ann in annotations:
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        x0, y0, x1, y1 = max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h)
        if x1 <= x0 or y1 <= y0:
            dropped += 1
            continue
        boxes.append([x0, y0, x1, y1])
        labels.append(ann["category_id"])
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    return target, dropped


class CocoDetection(Dataset):
    """(image (3, H, W) float in [0, 1], target {boxes, labels, image_id}) pairs of one COCO split.

    Args:
        root: folder with `<split>/` and `annotations/instances_<split>.json`.
        split: "train2017" or "val2017" (any name following that layout).
        train: clean the targets (module docstring) and flip images horizontally with probability `hflip`.
        hflip: flip probability (training only).
        skip_unreadable: an image that cannot be decoded is None (logged) instead of a DataError.
    """

    def __init__(self, root: str | Path, split: str, train: bool, hflip: float = 0.5, skip_unreadable: bool = False):
        self.root = Path(root)
        self.images = self.root / split
        if not self.images.is_dir():
            raise DataError(f"COCO image folder {self.images} not found; data.root must hold {split}/")
        self.annotation_file = self.root / "annotations" / f"instances_{split}.json"
        self.coco = load_coco(self.annotation_file)
        self.train, self.hflip, self.skip_unreadable = train, hflip, skip_unreadable
        self.ids = self._summarize(sorted(self.coco.imgs))
        if not self.ids:
            raise DataError(
                f"COCO split {split} under {self.root} has no usable image ({len(self.coco.imgs)} images, "
                f"{len(self.coco.anns)} annotations): training needs images with a non-crowd box of positive area"
            )

    def _summarize(self, ids: list[int]) -> list[int]:
        """The images this split uses (training: those with a box left), after one log line that counts the
        boxes, the degenerate boxes and crowd boxes left out of the targets, the orphan annotations and the
        images without boxes."""
        kept, empty, boxes, degenerate = [], 0, 0, 0
        for image_id in ids:
            info = self.coco.imgs[image_id]
            target, dropped = annotations_to_target(self.coco.imgToAnns[image_id], info["width"], info["height"])
            boxes, degenerate = boxes + len(target["boxes"]), degenerate + dropped
            if len(target["boxes"]) or not self.train:
                kept.append(image_id)
            if not len(target["boxes"]):
                empty += 1
        anns = self.coco.dataset.get("annotations", [])
        crowd = sum(1 for ann in anns if ann.get("iscrowd", 0) and ann["image_id"] in self.coco.imgs)
        orphans = sum(1 for ann in anns if ann["image_id"] not in self.coco.imgs)
        scored = "dropped from training" if self.train else "kept (pycocotools scores the file as it is)"
        log.info(
            "COCO %s: %d images used of %d, %d boxes; %d degenerate or outside-the-image boxes left out of the "
            "targets, %d crowd boxes ignored, %d annotations for image ids with no image ignored; %d images "
            "without boxes %s",
            self.images.name,
            len(kept),
            len(ids),
            boxes,
            degenerate,
            crowd,
            orphans,
            empty,
            scored,
        )
        return kept

    def __len__(self) -> int:
        return len(self.ids)

    def aspect_ratios(self) -> list[float]:
        """width / height of every image, from the annotation file (no image is opened)."""
        return [self.coco.imgs[i]["width"] / self.coco.imgs[i]["height"] for i in self.ids]

    def __getitem__(self, index: int) -> tuple[Tensor, Target] | None:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self.images / info["file_name"]
        try:
            image = Image.open(path).convert("RGB")
        except OSError as e:
            error = DataError(f"cannot read COCO image {path}: {e}")
            if self.skip_unreadable:
                log.warning("skipped: %s", error)
                return None
            raise error from e
        if image.size != (info["width"], info["height"]):  # boxes are in the annotated size's coordinates
            raise DataError(
                f"COCO image {path} is {image.width}x{image.height} but its annotation says "
                f"{info['width']}x{info['height']}; fix the image entry's width / height or replace the file"
            )
        return detection_sample(image, self.coco.imgToAnns[image_id], image_id, self.hflip if self.train else 0.0)


def detection_sample(
    image: Image.Image, annotations: list[dict[str, Any]], image_id: int, hflip: float
) -> tuple[Tensor, Target]:
    """One image with its COCO annotations as a detection sample: (image (3, H, W) float in [0, 1],
    {boxes (N, 4) xyxy, labels (N,), image_id}), flipped horizontally with probability `hflip` (0: never)."""
    target, _ = annotations_to_target(annotations, image.width, image.height)
    pixels = F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)
    if hflip > 0 and torch.rand(()) < hflip:
        pixels = pixels.flip(-1)
        target["boxes"] = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1, -1, 1]) + torch.tensor(
            [image.width, 0.0, image.width, 0]
        )
    target["image_id"] = torch.tensor(image_id)
    return pixels, target


def detection_collate(batch: list[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """Keeps images of different sizes apart: ([image, ...], [target, ...])."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def category_names(*cocos: Any) -> list[str]:
    """The name of every label of pycocotools indexes `cocos`: index = category id, "" where no category has that
    id, "__background__" at 0 (torchvision's COCO convention)."""
    categories = {cid: c["name"] for coco in cocos for cid, c in coco.cats.items()}
    names = [""] * (max(categories, default=0) + 1)
    for cid, name in categories.items():
        names[cid] = str(name)
    names[0] = "__background__"
    return names


def build_coco_data(data: Mapping[str, Any], hflip: float = 0.5) -> DataSplits:
    """`data.format: coco`: <root>/<split>/ images with <root>/annotations/instances_<split>.json (a built-in set is
    generated into the cache first); training images flipped with probability `hflip`."""
    root, skip = dataset_root(data, "coco"), bool(data.get("skip_unreadable", False))
    train = CocoDetection(root, data["train_split"], train=True, hflip=hflip, skip_unreadable=skip)
    val = CocoDetection(root, data["val_split"], train=False, skip_unreadable=skip)
    return DataSplits(train, val, category_names(train.coco, val.coco), detection_collate)


register_format(DataFormat("coco", "detection", build_coco_data))
