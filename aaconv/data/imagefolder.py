"""ImageNet-style classification data: an ImageFolder tree with one sub-folder per class.

    <root>/<split>/<class name>/<image>     e.g. /data/imagenet/train/n01440764/n01440764_10026.JPEG

Real ImageNet and the built-in shapes set are read by the same code. The train and val splits must hold the
same class folders: each numbers its labels by sorted folder name, so a folder in one split only would mislabel
the other's images, and `build_splits` stops with an error naming it. An image that cannot be decoded
stops the run with an error naming it, or with `skip_unreadable` is left out of its batch (see
`aaconv.data.SkipUnreadable`); scripts/check_data.py lists every such file up front.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes

from aaconv.data.builtin import dataset_root
from aaconv.data.draft import open_rgb
from aaconv.data.registry import DataFormat, DataSplits, register_format
from aaconv.data.transforms import classification_transform, eval_transform
from aaconv.errors import DataError

log = logging.getLogger("aaconv")
LAYOUT_HINT = "expected <root>/{split}/<class>/<image>, e.g. <root>/train/n01440764/x.JPEG (one folder per class)"


def load_rgb(path: str) -> Image.Image:
    """Opens an image as RGB, turning a decode failure into an error that names the file."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"cannot decode image {path} ({e}); delete or re-download that file") from e


def check_split_dir(root: str | Path, split: str) -> Path:
    """Returns root/split after checking it holds class folders with images, else raises DataError."""
    root = Path(root).expanduser()
    hint = LAYOUT_HINT.format(split=split)
    if root.is_file():
        raise DataError(f"data root {root} is a file, not a folder; set data.root to the dataset folder ({hint})")
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist; set data.root to the dataset folder ({hint})")
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir())[:5]
        raise DataError(f"data root {root} has no '{split}' folder (found {found}); {hint}")
    if not any(p.is_dir() for p in split_dir.iterdir()):
        raise DataError(f"{split_dir} has no class folders; {hint}")
    return split_dir


class RGBImageFolder(ImageFolder):
    """An ImageFolder of images opened by `open_rgb` (JPEGs decoded by the transform, at the scale it picks)
    whose undecodable images raise an error that names the file."""

    def __getitem__(self, index: int) -> Any:
        try:
            return super().__getitem__(index)
        except OSError as e:
            path = self.samples[index][0]
            raise DataError(f"cannot decode image {path} ({e}); delete or re-download that file") from e


class SkippingImageFolder(RGBImageFolder):
    """An ImageFolder whose unreadable images come out as None (logged with their path) instead of an error."""

    def __getitem__(self, index: int) -> Any:
        try:
            return super().__getitem__(index)
        except DataError as e:
            log.warning("skipped: %s", e)
            return None


def build_imagefolder(
    root: str | Path,
    split: str,
    transform: Callable | None,
    num_classes: int | None = None,
    skip_unreadable: bool = False,
) -> ImageFolder:
    """An ImageFolder over root/split whose class count is checked against `num_classes`; with
    `skip_unreadable` an image that cannot be decoded is None instead of a DataError."""
    split_dir = check_split_dir(root, split)
    folder = SkippingImageFolder if skip_unreadable else RGBImageFolder
    try:
        dataset = folder(str(split_dir), transform=transform, loader=open_rgb)
    except FileNotFoundError as e:
        raise DataError(f"{e}; {LAYOUT_HINT.format(split=split)}") from e
    if num_classes is not None:
        check_class_count(dataset, num_classes)
    return dataset


def check_class_count(dataset: ImageFolder, num_classes: int) -> None:
    """Raises DataError unless `dataset` has two or more class folders, `num_classes` of them."""
    if len(dataset.classes) < 2:
        raise DataError(
            f"{dataset.root} has one class folder ({dataset.classes[0]}): a classifier needs two or more; "
            "add the other classes' folders next to it"
        )
    if len(dataset.classes) != num_classes:
        raise DataError(
            f"{dataset.root} has {len(dataset.classes)} class folders but data.num_classes={num_classes}; "
            f"set data.num_classes={len(dataset.classes)} or fix the folder"
        )


def some(names: list[str], shown: int = 5) -> str:
    """`names` joined by commas, the first `shown` of them and a count of the rest when there are more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def class_mismatch(train_dir: Path, val_dir: Path) -> str | None:
    """The problem, and its fix, when the two splits have different class folders (each split numbers its
    labels by sorted folder name, so any difference mislabels the val images); None when they agree."""
    train, val = set(find_classes(str(train_dir))[0]), set(find_classes(str(val_dir))[0])
    if train == val:
        return None
    only = ((train_dir.name, sorted(train - val)), (val_dir.name, sorted(val - train)))
    differences = "; ".join(f"only in {split}: {some(names)}" for split, names in only if names)
    return (
        f"class folders of {train_dir} and {val_dir} differ ({differences}), so their labels would not match; "
        f"make {val_dir} hold the same class folders as {train_dir}"
    )


def build_splits(
    root: str | Path,
    *,
    train_split: str,
    val_split: str,
    train_transform: Callable | None,
    val_transform: Callable | None,
    num_classes: int,
    skip_unreadable: bool = False,
) -> tuple[ImageFolder, ImageFolder]:
    """The (train, val) ImageFolders over root/<split>; DataError unless both splits have the same class
    folders (checked first, so that a differing folder is named), `num_classes` of them."""
    train = build_imagefolder(root, train_split, train_transform, skip_unreadable=skip_unreadable)
    val = build_imagefolder(root, val_split, val_transform, skip_unreadable=skip_unreadable)
    problem = class_mismatch(Path(train.root), Path(val.root))
    if problem is not None:
        raise DataError(problem)
    check_class_count(train, num_classes)
    return train, val


def build_imagefolder_data(data: Mapping[str, Any]) -> DataSplits:
    """`data.format: imagefolder`: the splits of <root>/<split>/<class>/<image> (a built-in set is generated into
    the cache first) with timm's train / eval transforms; with `data.decode: gpu` the training images stay encoded
    for aaconv.data.gpu_decode."""
    train, val = build_splits(
        dataset_root(data, "imagefolder"),
        train_split=data["train_split"],
        val_split=data["val_split"],
        train_transform=classification_transform(data["image_size"], True, data["transform"]["train"]),
        val_transform=eval_transform(data),
        num_classes=data["num_classes"],
        skip_unreadable=bool(data.get("skip_unreadable", False)),
    )
    if data.get("decode", "cpu") != "gpu":
        return DataSplits(train, val, train.classes)
    from aaconv.data.gpu_decode import collate_encoded, encoded  # imported here: gpu_decode reads ImageFolders

    return DataSplits(encoded(train), val, train.classes, collate_encoded)


register_format(DataFormat("imagefolder", "classification", build_imagefolder_data, eval_transform))
