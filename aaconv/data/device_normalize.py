"""Normalisation on the device: the loader workers hand over uint8 batches (a quarter of float32's bytes, no
float conversion in the workers), and the mean / std normalisation runs on the device, as timm's prefetcher does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor


class DeviceNormalize:
    """(B, 3, H, W) uint8 batch -> (B, 3, H, W) float32 on `device`, (x / 255 - mean) / std; a float batch
    (already normalised in the workers, e.g. CIFAR's or one with random erasing) is only moved to `device`."""

    def __init__(self, mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, std: Sequence[float] = IMAGENET_DEFAULT_STD):
        self.scale = torch.tensor([255.0 * s for s in std]).view(1, 3, 1, 1)
        self.shift = torch.tensor([255.0 * m for m in mean]).view(1, 3, 1, 1)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> DeviceNormalize:
        """The mean / std of timm `create_transform` keywords (ImageNet's when not given)."""
        return cls(options.get("mean", IMAGENET_DEFAULT_MEAN), options.get("std", IMAGENET_DEFAULT_STD))

    def __call__(self, images: Tensor, device: torch.device) -> Tensor:
        images = images.to(device, non_blocking=True)
        if images.dtype != torch.uint8:
            return images
        return images.float().sub_(self.shift.to(device)).div_(self.scale.to(device))


def uint8_output(options: Mapping[str, Any]) -> bool:
    """Whether the timm pipeline of `options` can end in uint8 (timm's `use_prefetcher=True`): not with random
    erasing, which timm then leaves to its prefetcher, outside the per-sample seeded augmentation."""
    return not options.get("re_prob")
