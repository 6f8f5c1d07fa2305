"""A fixed square input canvas for torchvision's detectors: the AA paper's RetinaNet input.

The AA paper's RetinaNet costs (Bello et al. 2019, COCO table: 182 GFLOPs for ResNet-50, 243 for ResNet-101) fit a
640 x 640 input, the TPU RetinaNet implementation of its time: each image is resized so that its longer side is
`canvas`, then zero-padded at the bottom / right to `canvas` x `canvas`, so every batch has one shape. Training may
jitter the scale (the longer side becomes `canvas` x s, s uniform in `scale_jitter`) and then takes a random
`canvas`-sized crop where the scaled image is larger, dropping the boxes the crop leaves empty.

torchvision's own transform (shorter side `min_size`, longer side <= `max_size`, padded to the batch's largest
image rounded up to 32) stays the default of `build_detector`; this one replaces it with `canvas=...`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform


class CanvasTransform(GeneralizedRCNNTransform):
    """Normalise, resize the longer side to `canvas` (x a training jitter) and pad to (B, 3, canvas, canvas).

    Args:
        canvas: side of the square input, a multiple of 32 (the paper: 640).
        image_mean, image_std: per-channel normalisation (torchvision's ImageNet values).
        scale_jitter: (low, high) scale range sampled per training image, e.g. (0.8, 1.2); None: no jitter.

    Targets: {"boxes": (N, 4) xyxy, "labels": (N,), ...}; every (N, ...) entry is cropped with the boxes.
    """

    def __init__(
        self,
        canvas: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        scale_jitter: Sequence[float] | None = None,
    ):
        if canvas <= 0 or canvas % 32:
            raise ValueError(f"canvas must be a positive multiple of 32 (the backbone's stride), got {canvas}")
        if scale_jitter is not None and not (len(scale_jitter) == 2 and 0 < scale_jitter[0] <= scale_jitter[1]):
            raise ValueError(
                f"scale_jitter must be [low, high] with 0 < low <= high, e.g. [0.8, 1.2]; got {scale_jitter}"
            )
        super().__init__(canvas, canvas, list(image_mean), list(image_std), size_divisible=canvas)
        self.canvas = canvas
        self.scale_jitter = tuple(float(s) for s in scale_jitter) if scale_jitter is not None else None

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor] | None]:
        """(3, H, W) -> (3, h, w) with max(h, w) = canvas x s (s = 1 in eval), cropped to at most canvas."""
        height, width = image.shape[-2:]
        scale = 1.0
        if self.training and self.scale_jitter is not None:
            low, high = self.scale_jitter
            scale = low + (high - low) * float(torch.rand(()))
        factor = self.canvas * scale / max(height, width)
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        if target is not None:
            ratios = target["boxes"].new_tensor([size[1] / width, size[0] / height] * 2)
            target = {**target, "boxes": target["boxes"] * ratios}
        if size[0] > self.canvas or size[1] > self.canvas:
            image, target = self._random_crop(image, target)
        return image, target

    def _random_crop(self, image: Tensor, target: dict[str, Tensor] | None) -> tuple[Tensor, dict[str, Tensor] | None]:
        height, width = image.shape[-2:]
        top = int(torch.randint(0, max(height - self.canvas, 0) + 1, ()))
        left = int(torch.randint(0, max(width - self.canvas, 0) + 1, ()))
        image = image[:, top : top + self.canvas, left : left + self.canvas]
        if target is None:
            return image, None
        crop_h, crop_w = image.shape[-2:]
        boxes = target["boxes"] - target["boxes"].new_tensor([left, top, left, top])
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, crop_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, crop_h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        count = len(keep)
        cropped = {k: v[keep] if v.dim() and len(v) == count else v for k, v in target.items()}
        cropped["boxes"] = boxes[keep]
        return image, cropped

    def batch_images(self, images: list[Tensor], size_divisible: int = 32) -> Tensor:
        """A list of (3, h, w), h, w <= canvas -> (B, 3, canvas, canvas), each image at the top left."""
        batch = images[0].new_zeros(len(images), images[0].shape[0], self.canvas, self.canvas)
        for slot, image in zip(batch, images, strict=True):
            slot[:, : image.shape[1], : image.shape[2]].copy_(image)
        return batch

    def __repr__(self) -> str:
        return f"{type(self).__name__}(canvas={self.canvas}, scale_jitter={self.scale_jitter})"
