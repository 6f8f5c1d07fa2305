"""JPEG decoding and training augmentation on the GPU, so the loader workers only read files.

With ``data.decode=gpu`` the training set yields each image's encoded bytes; ``GpuDecode`` then decodes a whole
batch with ``torchvision.io.decode_jpeg(device=...)`` (nvJPEG on CUDA) and applies timm's training recipe on
the device: RandomResizedCrop(scale, ratio), horizontal flip, optional ColorJitter, /255 and mean/std
normalisation. Files nvJPEG cannot read (ImageNet holds a few CMYK JPEGs and one PNG) are decoded by
``torchvision.io.decode_image`` on the CPU instead. Evaluation keeps the PIL path.

``loader_throughput`` measures the training loader alone, either path (``scripts/benchmark.py --loader``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torch.utils.data import DataLoader, default_collate
from torchvision.datasets import ImageFolder
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from aaconv.data import dataset_root
from aaconv.data.imagefolder import build_imagefolder
from aaconv.data.transforms import classification_transform
from aaconv.errors import ConfigError, DataError

GPU_OPTIONS = {"scale", "ratio", "hflip", "color_jitter", "interpolation"}  # timm train keywords GpuDecode applies


def read_bytes(path: str) -> Tensor:
    """The file's bytes as a 1-D uint8 tensor; DataError naming the file if it is empty or unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read image {path} ({e.strerror}); check the file and its permissions") from e
    if not data:
        raise DataError(f"image {path} is an empty file; remove or replace it (scripts/check_data.py lists them)")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def encoded(dataset: ImageFolder) -> ImageFolder:
    """Makes `dataset` yield (encoded bytes: 1-D uint8 tensor, class index): its files are read, not decoded."""
    dataset.loader, dataset.transform = read_bytes, None
    return dataset


def collate_encoded(batch: Sequence[tuple[Any, int]]) -> tuple[Any, Tensor]:
    """Encoded samples -> (list of byte tensors, targets); decoded samples (the eval set) -> default collate."""
    if isinstance(batch[0][0], Tensor) and batch[0][0].dtype == torch.uint8 and batch[0][0].dim() == 1:
        return [sample[0] for sample in batch], torch.tensor([sample[1] for sample in batch])
    return default_collate(batch)


def decode_batch(files: list[Tensor], device: torch.device) -> list[Tensor]:
    """(3, H, W) uint8 images on `device`: one batched decode_jpeg call, per-file CPU decode for what it rejects."""
    try:
        return list(decode_jpeg(files, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        return [_decode_one(data, device) for data in files]


def _decode_one(data: Tensor, device: torch.device) -> Tensor:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        try:
            return decode_image(data, mode=ImageReadMode.RGB).to(device)
        except RuntimeError as e:
            raise DataError(
                f"cannot decode an image of {data.numel()} bytes ({e}); data.decode=cpu names the failing file"
            ) from e


class GpuDecode:
    """Encoded batch -> (B, 3, S, S) normalised float images on the device (timm's training transform).

    Args:
        image_size: S.
        scale, ratio: RandomResizedCrop area fraction and aspect-ratio ranges (timm defaults (0.08, 1), (3/4, 4/3)).
        hflip: flip probability.
        color_jitter: brightness = contrast = saturation factor (timm's float form), 0: off.
        interpolation: "bilinear" or "bicubic" (antialiased, as PIL).
    """

    def __init__(
        self,
        image_size: int,
        *,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        color_jitter: float = 0.0,
        interpolation: str = "bilinear",
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
    ):
        self.size = [image_size, image_size]
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), hflip
        self.interpolation = T.InterpolationMode(interpolation)
        self.jitter = T.ColorJitter(color_jitter, color_jitter, color_jitter) if color_jitter else None
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    @classmethod
    def from_config(cls, image_size: int, options: Mapping[str, Any]) -> GpuDecode:
        """From `data.transform.train`; an option only the CPU path has (RandAugment, random erasing) is an error."""
        unsupported = sorted(k for k, v in options.items() if k not in GPU_OPTIONS and v not in (None, 0, 0.0))
        if unsupported:
            raise ConfigError(
                f"data.decode=gpu applies {sorted(GPU_OPTIONS)} only, not data.transform.train.{unsupported[0]}; "
                f"unset it or use data.decode=cpu"
            )
        return cls(image_size, **{k: v for k, v in options.items() if k in GPU_OPTIONS and v is not None})

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """RandomResizedCrop's (top, left, h, w): 10 tries at a random area and log-uniform aspect ratio, then
        the whole image clipped to the ratio range, centred."""
        area = height * width
        log_ratio = torch.log(torch.tensor(self.ratio))
        for _ in range(10):
            target = area * torch.empty(1).uniform_(*self.scale).item()
            aspect = math.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item()).item())
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,)))
                left = int(torch.randint(0, width - w + 1, (1,)))
                return top, left, h, w
        aspect = width / height
        if aspect < min(self.ratio):
            w, h = width, round(width / min(self.ratio))
        elif aspect > max(self.ratio):
            h, w = height, round(height * max(self.ratio))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def augment(self, image: Tensor) -> Tensor:
        """(3, H, W) uint8 -> (3, S, S) uint8: random resized crop, flip, colour jitter."""
        image = TF.resized_crop(image, *self.crop_box(*image.shape[-2:]), self.size, self.interpolation, antialias=True)
        if torch.rand(1).item() < self.hflip:
            image = TF.horizontal_flip(image)
        return self.jitter(image) if self.jitter is not None else image

    def __call__(self, files: list[Tensor], device: torch.device) -> Tensor:
        images = torch.stack([self.augment(image) for image in decode_batch(files, device)])
        mean, std = self.mean.to(device), self.std.to(device)
        return (images.float() / 255 - mean) / std


def loader_throughput(
    data: Mapping[str, Any],
    *,
    decode: str,
    workers: int,
    batch_size: int,
    image_size: int,
    batches: int,
    device: torch.device,
    warmup: int = 1,
) -> float:
    """Images/s of the training loader alone over `batches` batches after `warmup`: PIL decode + timm transform
    in the workers (decode="pil"), or file reads in the workers and ``GpuDecode`` on `device` (decode="gpu")."""
    options = data["transform"]["train"]
    dataset = build_imagefolder(
        dataset_root(data, "imagefolder"), data["train_split"], classification_transform(image_size, True, options)
    )
    gpu = GpuDecode.from_config(image_size, options) if decode == "gpu" else None
    if gpu is not None:
        encoded(dataset)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        collate_fn=collate_encoded,
        persistent_workers=False,
        pin_memory=device.type == "cuda",
    )
    if len(loader) < warmup + batches:
        raise DataError(f"{len(dataset)} images make {len(loader)} batches of {batch_size}; need {warmup + batches}")
    count, begin = 0, 0.0
    for index, (images, _) in enumerate(loader):
        images = gpu(images, device) if gpu is not None else images.to(device, non_blocking=True)
        if index + 1 == warmup:
            _sync(device)
            begin = time.perf_counter()
        elif index >= warmup:
            count += images.shape[0]
        if index + 1 == warmup + batches:
            break
    _sync(device)
    return count / (time.perf_counter() - begin)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
