"""Classification transforms: timm's standard ImageNet train/eval pipelines, configured from `data.transform` (and
`data.eval_image_size` / `data.crop_pct` for evaluation)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from timm.data import create_transform

from aaconv.data.device_normalize import uint8_output
from aaconv.data.draft import with_draft


def classification_transform(image_size: int, train: bool, options: Mapping[str, Any]) -> Callable:
    """timm's `create_transform` for one split, its first stage decoding JPEGs at reduced scale when it can
    (`aaconv.data.draft`: same crops, images opened by `aaconv.data.draft.open_rgb`).

    Train: RandomResizedCrop(scale, ratio) + flip + optional ColorJitter / RandAugment (`auto_augment`,
    e.g. "rand-m9-mstd0.5") / random erasing (`re_prob`). Eval: resize to image_size / crop_pct, then
    center crop. `options` are create_transform's keywords (see configs/data/*.yaml). The output is a (3, S, S)
    uint8 tensor, normalised on the device (`aaconv.data.device_normalize`), or with random erasing a normalised
    float32 one (erasing fills normalised values).
    """
    prefetch = uint8_output(options)
    return with_draft(create_transform(image_size, is_training=train, use_prefetcher=prefetch, **options))


def eval_transform(data: Mapping[str, Any]) -> Callable:
    """The evaluation transform of a `data` config (validation during training, eval.py, pictures): resize the
    shorter side to S / crop_pct, centre-crop S x S, with S = `data.eval_image_size` (null: `data.image_size`) and
    `data.crop_pct` over `data.transform.eval`'s (where configs written before `data.crop_pct` keep it)."""
    options = dict(data["transform"]["eval"])
    if data.get("crop_pct") is not None:
        options["crop_pct"] = data["crop_pct"]
    return classification_transform(data.get("eval_image_size") or data["image_size"], False, options)
