"""aaconv.data.device_normalize: uint8 batches normalised as timm's ToTensor + Normalize would have."""

import torch
from PIL import Image
from timm.data import create_transform

from aaconv.data.device_normalize import DeviceNormalize, uint8_output
from aaconv.data.transforms import classification_transform


def test_uint8_batch_normalised_as_in_the_workers():
    image = Image.fromarray(torch.randint(0, 256, (40, 50, 3), dtype=torch.uint8).numpy())
    in_workers = create_transform(32, is_training=False, crop_pct=1.0)(image)
    pixels = classification_transform(32, False, {"crop_pct": 1.0})(image)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 32, 32)
    normalised = DeviceNormalize()(pixels[None], torch.device("cpu"))
    assert normalised.dtype == torch.float32
    torch.testing.assert_close(normalised[0], in_workers, atol=1e-5, rtol=1e-5)


def test_float_batches_are_only_moved():
    images = torch.randn(2, 3, 8, 8)
    assert DeviceNormalize(mean=(0.5,) * 3, std=(0.1,) * 3)(images, torch.device("cpu")) is images


def test_random_erasing_keeps_the_normalised_float_output():
    assert uint8_output({"re_prob": 0.0}) and not uint8_output({"re_prob": 0.25})
    image = Image.new("RGB", (40, 40))
    assert classification_transform(32, True, {"re_prob": 0.25})(image).dtype == torch.float32
    assert classification_transform(32, True, {"re_prob": 0.0})(image).dtype == torch.uint8
