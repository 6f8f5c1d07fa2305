"""Classification transforms: timm's standard ImageNet train/eval pipelines, configured from `data.transform`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from timm.data import create_transform


def classification_transform(image_size: int, train: bool, options: Mapping[str, Any]) -> Callable:
    """timm's `create_transform` for one split.

    Train: RandomResizedCrop(scale, ratio) + flip + optional ColorJitter / RandAugment (`auto_augment`,
    e.g. "rand-m9-mstd0.5") / random erasing (`re_prob`). Eval: resize to image_size / crop_pct, then
    center crop. `options` are create_transform's keywords (see configs/data/*.yaml).
    """
    return create_transform(image_size, is_training=train, **options)
