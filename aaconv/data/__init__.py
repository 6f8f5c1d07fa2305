"""Datasets: ImageFolder (ImageNet), COCO, and the built-in synthetic shapes set in both layouts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import default_collate

from aaconv.data.shapes import ShapesSpec, materialize
from aaconv.errors import DataError


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


class SkipUnreadable:
    """A collate function that leaves out the None samples of datasets built with `skip_unreadable`
    (images that could not be decoded): batches come out smaller by the number skipped."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any] | None):
        self.collate_fn = collate_fn or default_collate

    def __call__(self, batch: list[Any]) -> Any:
        kept = [sample for sample in batch if sample is not None]
        if not kept:
            raise DataError(f"all {len(batch)} images of a batch are unreadable; list the bad files with "
                            "python scripts/check_data.py <data root>")
        return self.collate_fn(kept)
