"""JPEG draft decoding: a JPEG is decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT-domain scaling, PIL's
`Image.draft`) when the transform would shrink the pixels it keeps by at least that factor anyway.

The image is opened with its header only (`open_rgb`), so its size is known before any pixel is decoded. The
training crop box is drawn first, exactly as timm's `RandomResizedCropAndInterpolation` draws it (the same
random calls in the same order), then the image is decoded at the largest scale 1/s that still leaves the crop
at least the output size, and the box, divided by s, is cropped and resized. Evaluation decodes at the largest
scale that leaves the shorter side at least the resize target. A crop that would be upsampled, or an image that
is not a JPEG, is decoded in full as before.
"""

from __future__ import annotations

import math
import random
from typing import IO

from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms
from torchvision.transforms.functional import pil_modes_mapping


def open_rgb(path: str | IO[bytes]) -> Image.Image:
    """The image at `path` (a file name, or a binary file object such as a shard sample's bytes): an RGB JPEG with its header read and its pixels not yet decoded (`draft` may still
    pick its scale); any other image decoded now and converted to RGB."""
    image = Image.open(path)
    if image.format == "JPEG" and image.mode == "RGB":
        return image
    with image:
        return image.convert("RGB")


def draft(image: Image.Image, min_size: tuple[int, int]) -> float:
    """Sets a not-yet-decoded JPEG to decode at the smallest size whose sides are still >= `min_size` (w, h),
    then decodes it; returns s, the original pixels per decoded pixel (1, 2, 4 or 8; 1 when the image is not
    a JPEG or was already decoded). A point (x, y) of the original is (x / s, y / s) in the decoded image."""
    width = image.width
    if min(min_size) < 1:
        min_size = (max(min_size[0], 1), max(min_size[1], 1))
    drafted = image.draft("RGB", min_size)
    image.load()
    return 1.0 if drafted is None else width / drafted[1][2]


def resized_crop(
    image: Image.Image, box: tuple[float, float, float, float], size: tuple[int, int], resample: int
) -> Image.Image:
    """`box` (left, top, right, bottom; fractional after a draft) of `image` resized to `size` (w, h): the
    enclosing whole-pixel box is cropped and resized from the fractional box within it, so that a whole-pixel
    `box` gives exactly torchvision's crop-then-resize."""
    left, top = math.floor(box[0]), math.floor(box[1])
    crop = image.crop((left, top, math.ceil(box[2]), math.ceil(box[3])))
    inner = (box[0] - left, box[1] - top, box[2] - left, box[3] - top)
    return crop.resize(size, resample, box=inner)


class DraftRandomResizedCrop(RandomResizedCropAndInterpolation):
    """timm's `RandomResizedCropAndInterpolation` (same crop boxes, same interpolation draw) on an image opened
    by `open_rgb`, decoded at the scale the crop allows. PIL image (W, H) -> PIL image `size`."""

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left, height, width = self.get_params(img, self.scale, self.ratio)
        if isinstance(self.interpolation, (tuple, list)):
            interpolation = random.choice(self.interpolation)
        else:
            interpolation = self.interpolation
        out_h, out_w = self.size
        request = (math.ceil(img.width * out_w / width), math.ceil(img.height * out_h / height))
        s = draft(img, request)
        box = (left / s, top / s, (left + width) / s, (top + height) / s)
        return resized_crop(img, box, (out_w, out_h), pil_modes_mapping[interpolation])


class DraftResize(transforms.Resize):
    """torchvision's `Resize` of the shorter side to `size` (an int) on an image opened by `open_rgb`, decoded at
    the largest scale whose shorter side is still >= `size`. PIL image (W, H) -> PIL image."""

    def forward(self, img: Image.Image) -> Image.Image:
        shorter = min(img.size)
        draft(img, (math.ceil(img.width * self.size / shorter), math.ceil(img.height * self.size / shorter)))
        return super().forward(img)


def with_draft(transform: transforms.Compose) -> transforms.Compose:
    """`transform` (timm's `create_transform` output) with its first stage, a `RandomResizedCropAndInterpolation`
    or a shorter-side `Resize`, replaced by its draft-decoding twin; other pipelines are returned unchanged."""
    stages = list(transform.transforms)
    first = stages[0]
    if type(first) is RandomResizedCropAndInterpolation:
        twin = DraftRandomResizedCrop(first.size, scale=first.scale, ratio=first.ratio)
        twin.interpolation = first.interpolation
        stages[0] = twin
    elif type(first) is transforms.Resize and isinstance(first.size, int):
        stages[0] = DraftResize(first.size, interpolation=first.interpolation, antialias=first.antialias)
    return transforms.Compose(stages)
