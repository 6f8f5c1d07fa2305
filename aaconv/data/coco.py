"""COCO detection data read through pycocotools: `<root>/{train2017,val2017}/` + `<root>/annotations/`.

Labels: a box's label is its COCO `category_id` itself (COCO: 1..90 with gaps), and detectors have
`num_classes = largest category id + 1` (torchvision's 91 for COCO; 0 is Faster R-CNN's background).
Predictions therefore need no mapping back: label == category_id.

Every split: crowd boxes (`iscrowd=1`) are not training targets, boxes with no area after clipping to the
image (degenerate, or outside it) are dropped from the targets, and annotations whose `image_id` names no
image are ignored; one line per split counts each. An annotation whose `category_id` is not among the
file's categories is an error. Training split only: images left without boxes are dropped. The validation
split keeps every image, and pycocotools scores against the annotation file as it is (its degenerate boxes
included). An image that cannot be decoded stops the run with an error naming it, or with `skip_unreadable`
comes out as None and is left out of its batch (aaconv.data.SkipUnreadable).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from aaconv.errors import DataError

log = logging.getLogger("aaconv")
Target = dict[str, Tensor]


def load_coco(annotation_file: Path) -> Any:
    """pycocotools' COCO index of `annotation_file`, without its prints; DataError if missing."""
    from pycocotools.coco import COCO

    if not annotation_file.is_file():
        raise DataError(
            f"COCO annotations {annotation_file} not found; data.root must hold "
            "annotations/instances_<split>.json next to the <split>/ image folder"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(annotation_file))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(
            f"COCO annotations {annotation_file} are not valid JSON ({e}); re-download or fix the file"
        ) from e
    except (KeyError, TypeError) as e:
        raise DataError(
            f"COCO annotations {annotation_file} lack the COCO layout (missing {e}); "
            "expected 'images', 'annotations' and 'categories' lists"
        ) from e
    check_categories(coco, annotation_file)
    return coco


def check_categories(coco: Any, annotation_file: Path) -> None:
    """DataError naming the first annotation whose category_id is not among the file's categories."""
    known = set(coco.cats)
    for ann in coco.dataset.get("annotations", []):
        if ann.get("category_id") not in known:
            raise DataError(
                f"annotation {ann.get('id')} in {annotation_file} has category_id "
                f"{ann.get('category_id')}, which is not among the file's {len(known)} categories; "
                "fix or remove that annotation"
            )


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
            raise DataError(f"COCO split {split} under {self.root} has no usable image")

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
        target, _ = annotations_to_target(self.coco.imgToAnns[image_id], image.width, image.height)
        pixels = F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)
        if self.train and torch.rand(()) < self.hflip:
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
