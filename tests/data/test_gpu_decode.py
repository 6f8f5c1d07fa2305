"""The device-side decode + augmentation path (aaconv.data.gpu_decode), run on the CPU against PIL."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from aaconv.data.gpu_decode import (
    GpuDecode,
    collate_encoded,
    decode_batch,
    encoded,
    loader_throughput,
    read_bytes,
)
from aaconv.data.imagefolder import build_imagefolder
from aaconv.errors import ConfigError, DataError

cpu = torch.device("cpu")


def smooth_image(seed: int, height: int, width: int) -> Image.Image:
    """A smooth RGB image (JPEG keeps smooth content close to the original)."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(2 * np.pi * (g.uniform(0.5, 2) * x + g.uniform(0.5, 2) * y) + g.uniform(0, 6)) for _ in range(3)]
    return Image.fromarray((127.5 * (np.stack(channels, -1) + 1)).astype(np.uint8))


@pytest.fixture
def jpeg_folder(tmp_path):
    """train/<a|b>/<i>.jpg of different sizes, plus one PNG (nvJPEG's fallback case)."""
    for index, (height, width) in enumerate([(40, 60), (64, 48), (50, 50), (30, 70)]):
        folder = tmp_path / "train" / "ab"[index % 2]
        folder.mkdir(parents=True, exist_ok=True)
        smooth_image(index, height, width).save(folder / f"{index}.jpg", quality=95)
    smooth_image(9, 32, 32).save(tmp_path / "train" / "a" / "9.png")
    return tmp_path


def test_decode_matches_pil(jpeg_folder):
    files = sorted((jpeg_folder / "train").rglob("*.*"))
    decoded = decode_batch([read_bytes(str(f)) for f in files], cpu)
    for path, image in zip(files, decoded, strict=True):
        expected = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert image.shape == expected.shape and image.dtype == torch.uint8
        assert (image.int() - expected.int()).abs().max() <= 2  # libjpeg-turbo on both sides; IDCT rounding


def test_full_crop_is_resize_and_normalisation(jpeg_folder):
    """scale = ratio = 1 on a square image: the crop is the whole image, resized, /255, mean/std normalised."""
    data = read_bytes(str(jpeg_folder / "train" / "a" / "2.jpg"))  # 50 x 50
    decode = GpuDecode(20, scale=(1, 1), ratio=(1, 1), hflip=0.0, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    out = decode([data], cpu)
    pixels = decode_batch([data], cpu)[0].float()[None]
    resized = F.interpolate(pixels, size=(20, 20), mode="bilinear", antialias=True, align_corners=False)
    expected = (resized.round().clamp(0, 255) / 255 - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.3]
    ).view(3, 1, 1)
    assert out.shape == (1, 3, 20, 20) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1.5 / 255 / 0.2, rtol=0)


def test_flip_and_crop_box(jpeg_folder):
    data = read_bytes(str(jpeg_folder / "train" / "a" / "0.jpg"))
    plain = GpuDecode(16, scale=(1, 1), ratio=(1.5, 1.5), hflip=0.0)([data], cpu)
    flipped = GpuDecode(16, scale=(1, 1), ratio=(1.5, 1.5), hflip=1.0)([data], cpu)
    torch.testing.assert_close(flipped, plain.flip(-1))
    decode = GpuDecode(16)
    torch.manual_seed(0)
    for _ in range(200):
        top, left, h, w = decode.crop_box(40, 60)
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 60
        assert 0.08 * 2400 * 0.8 <= h * w <= 2400 and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_encoded_dataset_collates_to_bytes_and_decodes(jpeg_folder):
    dataset = encoded(build_imagefolder(jpeg_folder, "train", transform=None))
    images, targets = collate_encoded([dataset[i] for i in range(len(dataset))])
    assert all(image.dtype == torch.uint8 and image.dim() == 1 for image in images)
    assert targets.tolist() == [target for _, target in dataset.samples]
    batch = GpuDecode(24, color_jitter=0.4)(images, cpu)
    assert batch.shape == (len(dataset), 3, 24, 24) and torch.isfinite(batch).all()
    decoded = [(torch.zeros(3, 4, 4), 1), (torch.ones(3, 4, 4), 0)]  # the eval set: default collate
    assert collate_encoded(decoded)[0].shape == (2, 3, 4, 4)


def test_cpu_only_options_are_config_errors():
    with pytest.raises(ConfigError, match="auto_augment.*data.decode=cpu"):
        GpuDecode.from_config(32, {"scale": [0.5, 1], "auto_augment": "rand-m9-mstd0.5"})
    assert GpuDecode.from_config(32, {"hflip": 0.5, "auto_augment": None, "re_prob": 0.0}).hflip == 0.5


@pytest.mark.parametrize("decode", ["pil", "gpu"])
def test_loader_throughput_counts_images(jpeg_folder, decode):
    options = {"scale": [0.5, 1.0], "hflip": 0.5, "color_jitter": 0.0, "interpolation": "bilinear"}
    data = {"root": str(jpeg_folder), "generate": None, "train_split": "train", "transform": {"train": options}}
    rate = loader_throughput(data, decode=decode, workers=0, batch_size=2, image_size=16, batches=1, device=cpu)
    assert rate > 0


def test_an_empty_or_missing_file_is_named(tmp_path):
    empty = tmp_path / "empty.JPEG"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=f"image {empty} is an empty file"):
        read_bytes(str(empty))
    with pytest.raises(DataError, match=f"cannot read image {tmp_path / 'gone.JPEG'}"):
        read_bytes(str(tmp_path / "gone.JPEG"))
