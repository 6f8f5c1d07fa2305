"""aaconv.data.draft: crop boxes drawn as timm draws them, draft-decoded crops close to decode-then-crop."""

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform
from timm.data.transforms import RandomResizedCropAndInterpolation

from aaconv.data.draft import DraftRandomResizedCrop, DraftResize, draft, open_rgb, with_draft

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
DRAWS = 4000


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory):
    """A 2000x1500 JPEG of smooth random content (natural-image-like spectrum)."""
    small = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("draft") / "large.jpg"
    Image.fromarray(small).resize((2000, 1500), Image.BICUBIC).save(path, quality=90)
    return str(path)


def boxes(draw, seed: int) -> np.ndarray:
    """(DRAWS, 2): area fraction and aspect ratio (w / h) of DRAWS crop boxes of a 500x375 image."""
    random.seed(seed)
    out = []
    for _ in range(DRAWS):
        _, _, h, w = draw()
        out.append((w * h / (500 * 375), w / h))
    return np.array(out)


def test_crop_box_statistics_match_timm():
    image = Image.new("RGB", (500, 375))
    crop = DraftRandomResizedCrop(224, scale=SCALE, ratio=RATIO)
    ours = boxes(lambda: crop.get_params(image, crop.scale, crop.ratio), seed=1)
    timm = boxes(lambda: RandomResizedCropAndInterpolation.get_params(image, SCALE, RATIO), seed=2)
    for column in range(2):  # independent seeds: means within 5 standard errors of their difference
        a, b = ours[:, column], timm[:, column]
        assert abs(a.mean() - b.mean()) < 5 * math.sqrt((a.var() + b.var()) / DRAWS)
    # histograms: each bin's share within 5 binomial standard errors of the difference
    for column, edges in ((0, np.linspace(0, 1, 11)), (1, np.geomspace(RATIO[0], RATIO[1], 11))):
        p = np.histogram(ours[:, column], edges)[0] / DRAWS
        q = np.histogram(timm[:, column], edges)[0] / DRAWS
        assert np.all(np.abs(p - q) <= 5 * np.sqrt((p * (1 - p) + q * (1 - q)) / DRAWS) + 1 / DRAWS)


def test_same_seed_same_boxes_and_interpolations_as_timm(jpeg):
    """The draft crop makes timm's random calls in timm's order: under one seed, the same boxes, flips after it."""
    plain = create_transform(64, is_training=True, interpolation="random", use_prefetcher=True)
    ours = with_draft(plain)
    assert type(ours.transforms[0]) is DraftRandomResizedCrop
    drawn = {}
    for name, transform in (("timm", plain.transforms[0]), ("ours", ours.transforms[0])):
        random.seed(3)
        drawn[name] = [(transform.get_params(open_rgb(jpeg), SCALE, RATIO), random.random()) for _ in range(50)]
    assert drawn["timm"] == drawn["ours"]


def mean_abs_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def test_draft_crops_equal_decode_then_crop(jpeg):
    """Crops decoded at 1/2 to 1/8 scale differ from full decode + timm's crop by < 1 grey level on average
    (of 255; 0.2 to 0.45 measured: libjpeg's scaled IDCT in place of part of PIL's bicubic filter)."""
    plain = RandomResizedCropAndInterpolation(224, scale=SCALE, interpolation="bicubic")
    crop = DraftRandomResizedCrop(224, scale=SCALE, interpolation="bicubic")
    drafted = 0
    for seed in range(12):
        random.seed(seed)
        expected = plain(Image.open(jpeg).convert("RGB"))
        random.seed(seed)
        image = open_rgb(jpeg)
        top, left, h, w = crop.get_params(image, SCALE, RATIO)
        drafted += min(h, w) >= 448
        random.seed(seed)
        got = crop(open_rgb(jpeg))
        assert got.size == expected.size == (224, 224)
        assert mean_abs_difference(got, expected) < 1.0
    assert drafted >= 6


def test_draft_resize_equals_resize(jpeg):
    plain = create_transform(224, is_training=False, crop_pct=0.875, interpolation="bicubic", use_prefetcher=True)
    ours = with_draft(plain)
    assert type(ours.transforms[0]) is DraftResize
    expected, got = plain(Image.open(jpeg).convert("RGB")), ours(open_rgb(jpeg))
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape == (3, 224, 224)
    assert (got.float() - expected.float()).abs().mean() < 1.0


def test_draft_scale(jpeg):
    image = open_rgb(jpeg)
    assert draft(image, (500, 375)) == 4 and image.size == (500, 375)
    assert draft(image, (100, 100)) == 1 and image.size == (500, 375)  # decoded already: left as it is
    assert draft(open_rgb(jpeg), (1999, 10)) == 1  # a crop that would not shrink 2x: full decode
    assert draft(Image.new("RGB", (40, 30)), (5, 5)) == 1  # not a JPEG


def test_open_rgb_converts_other_modes(tmp_path):
    Image.new("L", (20, 10), 7).save(tmp_path / "gray.jpg")
    Image.new("RGBA", (20, 10)).save(tmp_path / "alpha.png")
    for name in ("gray.jpg", "alpha.png"):
        assert open_rgb(str(tmp_path / name)).mode == "RGB"
