"""Datasets: ImageFolder (ImageNet), COCO, and the built-in synthetic shapes set in both layouts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aaconv.data.shapes import ShapesSpec, materialize


def dataset_root(data: Mapping[str, Any], layout: str) -> Path:
    """The folder the loaders read.

    With `data.generate` set (the built-in shapes set), the dataset is materialised into the cache
    folder `data.root` on first use and `layout` ("imagefolder" or "coco") picks its sub-folder;
    otherwise `data.root` is the user's dataset folder itself.
    """
    generate = data.get("generate")
    if generate:
        return materialize(data["root"], ShapesSpec(**generate)) / layout
    return Path(str(data["root"])).expanduser()
