"""Datasets: ImageFolder (ImageNet), COCO, CIFAR-100, and the built-in synthetic sets (shapes, relations)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import default_collate

from aaconv.data.relations import RelationsSpec
from aaconv.data.shapes import ShapesSpec, materialize
from aaconv.errors import DataError

BUILTIN = {"shapes": ShapesSpec, "relations": RelationsSpec}


def dataset_root(data: Mapping[str, Any], layout: str) -> Path:
    """The folder the loaders read.

    With `data.generate` set (a built-in set: `generate.kind` picks shapes, the default, or relations), the
    dataset is materialised into the cache folder `data.root` on first use and `layout` ("imagefolder" or
    "coco") picks its sub-folder; otherwise `data.root` is the user's dataset folder itself.
    """
    generate = data.get("generate")
    if generate:
        options = dict(generate)
        kind = options.pop("kind", "shapes")
        if kind not in BUILTIN:
            raise DataError(f"unknown data.generate.kind {kind!r}; the built-in sets are {', '.join(BUILTIN)}")
        return materialize(data["root"], BUILTIN[kind](**options)) / layout
    return Path(str(data["root"])).expanduser()


class SkipUnreadable:
    """A collate function that leaves out the None samples of datasets built with `skip_unreadable`
    (images that could not be decoded): batches come out smaller by the number skipped."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any] | None):
        self.collate_fn = collate_fn or default_collate

    def __call__(self, batch: list[Any]) -> Any:
        kept = [sample for sample in batch if sample is not None]
        if not kept:
            raise DataError(
                f"all {len(batch)} images of a batch are unreadable; list the bad files with "
                "python scripts/check_data.py <data root>"
            )
        return self.collate_fn(kept)
