"""Datasets: ImageFolder (ImageNet), COCO, CIFAR-100, and the built-in synthetic sets (shapes, relations), each a
registered data format (aaconv.data.registry) that the tasks ask for by `data.format`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import default_collate

from aaconv.data.builtin import BUILTIN, dataset_root
from aaconv.data.registry import DataFormat, DataSplits, build_data, data_format, formats, register_format
from aaconv.errors import DataError


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


__all__ = [
    "BUILTIN",
    "DataFormat",
    "DataSplits",
    "SkipUnreadable",
    "build_data",
    "data_format",
    "dataset_root",
    "formats",
    "register_format",
]
