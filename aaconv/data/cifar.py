"""CIFAR-100 from the standard python archive, read without running code from the files.

    <root>/cifar-100-python/{train,test,meta}      (cifar-100-python.tar.gz from cs.toronto.edu, extracted)

`train` and `test` are pickles of dicts with `data` (N, 3072) uint8 rows (1024 red, 1024 green, 1024 blue
values, row-major 32x32) and `fine_labels`; `meta` names the 100 fine classes. A pickle can run any code
when loaded, so they are read by a restricted unpickler that only rebuilds numpy arrays and plain
containers and refuses every other global.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from aaconv.data.registry import DataFormat, DataSplits, register_format
from aaconv.errors import ConfigError, DataError

FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")
MEAN = (0.5071, 0.4865, 0.4409)  # CIFAR-100 training-set channel statistics
STD = (0.2673, 0.2564, 0.2762)
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR archive")
        return super().find_class(module, name)


def load_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle as a dict with str keys; DataError if it is unreadable or holds anything but data."""
    try:
        with open(path, "rb") as f:
            content = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DataError(f"{path} is not a CIFAR-100 python pickle ({e}); re-extract cifar-100-python.tar.gz") from e
    if not isinstance(content, dict):
        raise DataError(f"{path} holds a {type(content).__name__}, not the dict of a CIFAR-100 python pickle")
    return content


def archive_dir(root: str | Path) -> Path:
    """<root>/cifar-100-python after checking it holds train, test and meta; else DataError naming them."""
    folder = Path(root).expanduser() / FOLDER
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-100 not found: {folder} lacks {', '.join(missing)}; expected <data.root>/{FOLDER}/"
            "{train,test,meta} (extract cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
            "into data.root)"
        )
    return folder


class CIFAR100(Dataset):
    """The `split` ("train" or "test") of CIFAR-100: (PIL image 32x32 RGB, fine label 0..99) pairs."""

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None):
        if split not in ("train", "test"):
            raise DataError(f"CIFAR-100 has the splits train and test, not {split!r}; set data.train_split / val_split")
        folder = archive_dir(root)
        content = load_pickle(folder / split)
        data, labels = content.get("data"), content.get("fine_labels")
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels is None:
            raise DataError(f"{folder / split} has no (N, 3072) 'data' array and 'fine_labels'; re-extract the archive")
        if len(labels) != len(data):
            raise DataError(f"{folder / split} has {len(data)} images but {len(labels)} labels; re-extract the archive")
        self.images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3) uint8
        self.targets = [int(label) for label in labels]
        self.classes = list(load_pickle(folder / "meta").get("fine_label_names", []))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.images[index])
        return (self.transform(image) if self.transform else image), self.targets[index]


def cifar_transform(train: bool, padding: int = 4, hflip: float = 0.5) -> Callable:
    """The standard CIFAR augmentation (Zagoruyko & Komodakis 2016): 4-px zero padding + random 32 px crop and a
    horizontal flip for training; normalisation by the training-set statistics for both splits."""
    steps: list[Callable] = []
    if train:
        steps = [transforms.RandomCrop(32, padding=padding), transforms.RandomHorizontalFlip(hflip)]
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def build_cifar_data(data: Mapping[str, Any]) -> DataSplits:
    """`data.format: cifar`: CIFAR-100's train and test pickles with the standard CIFAR augmentation
    (`data.transform`: cifar_transform's keywords), evaluated on the 32 px images as they are."""
    if data.get("eval_image_size") is not None or data.get("crop_pct") is not None:
        raise ConfigError(
            "data.eval_image_size / data.crop_pct resize and crop ImageFolder images; CIFAR-100 is evaluated "
            "on its 32 px images as they are: leave them null"
        )
    if data.get("decode", "cpu") != "cpu":
        raise ConfigError("CIFAR-100 is decoded in memory: data.decode=gpu is for JPEG files; leave it at cpu")
    train = CIFAR100(data["root"], data["train_split"], cifar_transform(True, **data["transform"]))
    val = CIFAR100(data["root"], data["val_split"], cifar_transform(False))
    return DataSplits(train, val, train.classes)


def cifar_eval_transform(data: Mapping[str, Any]) -> Callable:
    """The val split's transform (normalisation only: CIFAR is evaluated at 32 px as it is)."""
    return cifar_transform(False)


register_format(DataFormat("cifar", "classification", build_cifar_data, cifar_eval_transform))
