"""The built-in "shapes" dataset: coloured geometric shapes on noisy backgrounds.

Images are drawn deterministically from a seed and written once into a cache folder in the two
on-disk layouts real data comes in, so that the default run exercises the same loaders as
ImageNet and COCO:

    <root>/imagefolder/{train,val}/<class>/<index>.png                   ImageFolder (classification)
    <root>/coco/{train2017,val2017}/<id>.png                             COCO images (detection)
    <root>/coco/annotations/instances_{train2017,val2017}.json           COCO instances

Every image is drawn from its own generator seeded with (seed, split, index), so a dataset is
reproducible bit for bit and independent of generation order. The folder is written under a
temporary name and renamed into place when complete: an interrupted or concurrent generation
never leaves a half-written dataset behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from aaconv.utils.atomic import current_umask

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "star")
SPLITS: tuple[str, ...] = ("train", "val")
FORMAT_VERSION = 2
_COMPLETE_MARKER = "spec.json"
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ShapesSpec:
    """What to generate. Changing any field generates a new dataset in its own folder."""

    seed: int = 0
    image_size: int = 64
    train_per_class: int = 600
    val_per_class: int = 150
    det_image_size: int = 128
    det_train_images: int = 1200
    det_val_images: int = 300
    det_max_objects: int = 3

    def folder_name(self) -> str:
        fields = "-".join(str(v) for v in asdict(self).values())
        return f"shapes-v{FORMAT_VERSION}-{fields}"

    def write(self, folder: Path) -> None:
        """Draws the whole set into the empty `folder` (both layouts)."""
        _write_imagefolder(folder / "imagefolder", self)
        _write_coco(folder / "coco", self)


def _split_rng(seed: int, split: str, index: int, layout: str) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index, 0 if layout == "cls" else 1])


def _noisy_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns a (size, size, 3) uint8 background and its base colour."""
    base = rng.integers(0, 256, size=3)
    noise = rng.normal(0.0, 12.0, size=(size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8), base


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    while True:
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - background).max() >= 96:
            return tuple(int(c) for c in colour)


def _star_points(cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.45
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return points


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: Box, colour: tuple[int, int, int]) -> Box:
    """Draws `kind` inside the square `box` = (x0, y0, x1, y1) (inclusive pixel bounds).

    Returns the shape's own bounding box: `box` itself, except for the star, whose points do not
    reach every side of the square.
    """
    x0, y0, x1, y1 = box
    side = x1 - x0
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=colour)
    elif kind == "cross":
        bar = max(2, side // 3)
        mid0 = x0 + (side - bar) // 2
        draw.rectangle((mid0, y0, mid0 + bar, y1), fill=colour)
        mid0 = y0 + (side - bar) // 2
        draw.rectangle((x0, mid0, x1, mid0 + bar), fill=colour)
    elif kind == "ring":
        draw.ellipse(box, outline=colour, width=max(2, side // 6))
    elif kind == "star":
        points = _star_points((x0 + x1) / 2, (y0 + y1) / 2, side / 2)
        draw.polygon(points, fill=colour)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys))
    else:
        raise ValueError(f"unknown shape {kind!r}; known shapes: {', '.join(CLASSES)}")
    return box


def _random_box(rng: np.random.Generator, image_size: int, min_side: int, max_side: int) -> Box:
    side = int(rng.integers(min_side, max_side + 1))
    x0 = int(rng.integers(0, image_size - side))
    y0 = int(rng.integers(0, image_size - side))
    return x0, y0, x0 + side, y0 + side


def classification_sample(seed: int, split: str, index: int, image_size: int) -> tuple[Image.Image, int]:
    """One image holding one shape; the label is the shape's class index in CLASSES."""
    rng = _split_rng(seed, split, index, "cls")
    label = index % len(CLASSES)
    pixels, base = _noisy_background(rng, image_size)
    image = Image.fromarray(pixels)
    box = _random_box(rng, image_size, image_size // 2, image_size * 17 // 20)
    draw_shape(ImageDraw.Draw(image), CLASSES[label], box, _contrasting_colour(rng, base))
    return image, label


def _overlap(a: Box, b: Box) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def detection_sample(
    seed: int, split: str, index: int, image_size: int, max_objects: int
) -> tuple[Image.Image, list[tuple[int, Box]]]:
    """One image with 1..max_objects non-overlapping shapes; returns (image, [(class index, box)])."""
    rng = _split_rng(seed, split, index, "det")
    pixels, base = _noisy_background(rng, image_size)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    objects: list[tuple[int, Box]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            box = _random_box(rng, image_size, image_size // 6, image_size * 2 // 5)
            if not any(_overlap(box, other) for _, other in objects):
                label = int(rng.integers(0, len(CLASSES)))
                objects.append((label, draw_shape(draw, CLASSES[label], box, _contrasting_colour(rng, base))))
                break
    return image, objects


def _write_imagefolder(root: Path, spec: ShapesSpec) -> None:
    for split, per_class in (("train", spec.train_per_class), ("val", spec.val_per_class)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
        for index in range(per_class * len(CLASSES)):
            image, label = classification_sample(spec.seed, split, index, spec.image_size)
            image.save(root / split / CLASSES[label] / f"{index:06d}.png")


def _write_coco(root: Path, spec: ShapesSpec) -> None:
    (root / "annotations").mkdir(parents=True)
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)]
    for split, count in (("train", spec.det_train_images), ("val", spec.det_val_images)):
        folder = f"{split}2017"
        (root / folder).mkdir()
        images, annotations = [], []
        for index in range(count):
            image, objects = detection_sample(spec.seed, split, index, spec.det_image_size, spec.det_max_objects)
            image_id = index + 1
            file_name = f"{image_id:012d}.png"
            image.save(root / folder / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": image.width, "height": image.height})
            for label, (x0, y0, x1, y1) in objects:
                w, h = x1 - x0 + 1, y1 - y0 + 1  # inclusive pixel bounds -> COCO xywh
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": label + 1,
                        "bbox": [x0, y0, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        instances = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{folder}.json").write_text(json.dumps(instances))


def materialize(cache_dir: str | os.PathLike, spec: ShapesSpec = ShapesSpec()) -> Path:
    """Generates the dataset into `cache_dir` unless already there; returns its root folder.

    `spec` is any frozen dataclass with `folder_name()` and `write(folder)` (ShapesSpec, RelationsSpec).

    Safe to call from several processes at once (e.g. every rank of a distributed job): each
    writes a private temporary folder, the first rename wins, the others discard theirs.
    """
    cache_dir = Path(cache_dir).expanduser()
    root = cache_dir / spec.folder_name()
    if (root / _COMPLETE_MARKER).is_file():
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".shapes-", dir=cache_dir))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide a shared AACONV_CACHE from a team
    try:
        spec.write(staging)
        (staging / _COMPLETE_MARKER).write_text(json.dumps(asdict(spec), indent=2))
        try:
            os.rename(staging, root)
        except OSError:
            if not (root / _COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
