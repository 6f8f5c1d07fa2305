"""Finds every unreadable image of a dataset in one run, before hours of training stop on the first one.

    python scripts/check_data.py ROOT [--layout imagefolder|coco] [--workers N]

imagefolder: decodes every image file under ROOT (all splits, e.g. ROOT/train/<class>/*.JPEG) in full as RGB
(aaconv.data.imagefolder.load_rgb; the training loader may decode a JPEG at a reduced scale, from the same
bytes), and names the class folders that are in one split only
(each split compared with ROOT/train, or the first split: aaconv.data.imagefolder.class_mismatch).
coco: for each ROOT/annotations/instances_<split>.json, decodes every image it lists from ROOT/<split>/ and
checks its size against the file, and lists every entry training would refuse
(aaconv.data.coco.annotation_problems: ids, sizes, file names, categories, boxes) or skip with a count
(annotations of unlisted images, boxes with a negative side).

Prints one line per problem (`<file>: <what>`, or the two splits whose class folders differ) and a summary;
exits 1 if there is any problem, else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from multiprocessing import Pool
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from aaconv.data.coco import annotation_problems, image_problems, is_box
from aaconv.data.imagefolder import class_mismatch, load_rgb
from aaconv.errors import DataError

ImageCheck = tuple[str, tuple[int, int] | None]  # (path, expected (width, height) or None)


def check_image(item: ImageCheck) -> str | None:
    """The problem with one image file, or None when it decodes (and has the expected size)."""
    path, size = item
    try:
        image = load_rgb(path)
    except DataError as e:
        empty = Path(path).is_file() and Path(path).stat().st_size == 0
        return f"{path}: {'empty file (0 bytes)' if empty else e.__cause__ or e}"
    if size is not None and image.size != size:
        return f"{path}: is {image.width}x{image.height} but the annotation file says {size[0]}x{size[1]}"
    return None


def imagefolder_images(root: Path) -> list[ImageCheck]:
    """Every file under `root` with an image extension (the files torchvision's ImageFolder reads); DataError
    if there is none (a wrong or empty folder is not a clean dataset)."""
    images = [
        (str(p), None) for p in sorted(root.rglob("*")) if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS)
    ]
    if not images:
        raise DataError(
            f"no image files under {root}; the ImageFolder layout is <root>/<split>/<class>/<image> "
            "(for COCO add --layout coco)"
        )
    return images


def split_mismatches(root: Path) -> list[str]:
    """The class-folder differences between ROOT/train (or the first split when there is none) and each other
    split: the folders of ROOT that hold class folders."""
    splits = [p for p in sorted(root.iterdir()) if p.is_dir() and any(c.is_dir() for c in p.iterdir())]
    if len(splits) < 2:
        return []
    reference = root / "train" if root / "train" in splits else splits[0]
    problems = [class_mismatch(reference, split) for split in splits if split != reference]
    return [problem for problem in problems if problem is not None]


def coco_checks(root: Path) -> tuple[list[ImageCheck], list[str]]:
    """(images to decode with their annotated sizes, annotation problems) of every annotations/instances_*.json:
    what training refuses (aaconv.data.coco.annotation_problems), and what it would skip with a count
    (annotations of unlisted images, boxes with a negative side)."""
    files = sorted((root / "annotations").glob("instances_*.json"))
    if not files:
        raise DataError(
            f"no {root}/annotations/instances_<split>.json; the COCO layout is <root>/<split>/ + "
            "<root>/annotations/instances_<split>.json"
        )
    images: list[ImageCheck] = []
    problems: list[str] = []
    for file in files:
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as e:
            problems.append(f"{file}: cannot read ({e})")
            continue
        problems += [f"{file}: {problem}" for problem in annotation_problems(data)]
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
            continue  # the images can still be decoded without categories
        folder = root / file.stem.removeprefix("instances_")
        listed = [i for i in data["images"] if isinstance(i, dict) and not image_problems(i)]
        images += [(str(folder / i["file_name"]), (i["width"], i["height"])) for i in listed]
        image_ids = {i.get("id") for i in data["images"] if isinstance(i, dict)}  # listed, valid or not
        for ann in data["annotations"]:
            if not isinstance(ann, dict):
                continue
            where = f"{file}: annotation {ann.get('id')!r}"
            if isinstance(ann.get("image_id"), int) and ann["image_id"] not in image_ids:
                problems.append(f"{where} names image {ann['image_id']}, which is not in the file's images")
            box = ann.get("bbox")
            if is_box(box) and min(box[2:]) < 0:
                problems.append(f"{where}: bbox {box} has a negative width or height")
    return images, problems


def run_checks(images: list[ImageCheck], workers: int) -> Iterator[str | None]:
    if workers <= 0:
        yield from map(check_image, images)
        return
    with Pool(workers) as pool:
        yield from pool.imap(check_image, images, chunksize=64)


def report(problems: Iterable[str]) -> int:
    """Prints each problem as it is found; returns how many."""
    count = 0
    for line in problems:
        print(line, flush=True)
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="dataset folder (ImageFolder root with its splits, or COCO root)")
    parser.add_argument("--layout", choices=("imagefolder", "coco"), default="imagefolder")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (0: in this process)")
    args = parser.parse_args(argv)
    root = args.root.expanduser()
    start = time.perf_counter()
    try:
        if not root.is_dir():
            raise DataError(f"{root} is not a folder")
        if args.layout == "coco":
            images, problems = coco_checks(root)
        else:
            images, problems = imagefolder_images(root), split_mismatches(root)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bad = report(problems)
    bad_images = report(p for p in run_checks(images, args.workers) if p is not None)
    kind = "annotation" if args.layout == "coco" else "class folder"
    print(
        f"checked {len(images)} images under {root} in {time.perf_counter() - start:.1f} s: "
        f"{bad_images} unreadable or mis-sized, {bad} {kind} problems"
    )
    return 1 if bad or bad_images else 0


if __name__ == "__main__":
    sys.exit(main())
