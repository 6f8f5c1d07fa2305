"""The built-in "relations" set: is the shape on the left the same colour as the shape on the right?

A harder companion of the shapes set (aaconv.data.shapes) for comparing attention variants on a CPU.
Every image holds two random shapes on a noisy grey background, one in the left third and one in the right third,
so that they are at least a third of the image apart; the label is whether both have the same colour
(classes "different" and "same"), with colours from a palette of six. Shape kinds, sizes and positions are
random and carry no information: the answer needs the two far-apart colours compared, the kind of long-range
dependency that attention (Bello et al. 2019, Sec. 1) is meant to capture beyond a conv's receptive field.

    <root>/imagefolder/{train,val}/{different,same}/<index>.png     ImageFolder, as the shapes set
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from aaconv.data.shapes import CLASSES as SHAPES
from aaconv.data.shapes import SPLITS, draw_shape

CLASSES: tuple[str, ...] = ("different", "same")
FORMAT_VERSION = 3
PALETTE = np.array(  # saturated colours, each far from the grey background
    [(230, 40, 40), (40, 200, 40), (50, 80, 230), (240, 220, 40), (200, 60, 220), (40, 220, 220)]
)


@dataclass(frozen=True)
class RelationsSpec:
    """What to generate. Changing any field generates a new dataset in its own folder."""

    seed: int = 0
    image_size: int = 64
    train_per_class: int = 1000
    val_per_class: int = 250

    def folder_name(self) -> str:
        fields = "-".join(str(v) for v in asdict(self).values())
        return f"relations-v{FORMAT_VERSION}-{fields}"

    def write(self, folder: Path) -> None:
        """Draws the set into the empty `folder` (ImageFolder layout only)."""
        for split, per_class in (("train", self.train_per_class), ("val", self.val_per_class)):
            for name in CLASSES:
                (folder / "imagefolder" / split / name).mkdir(parents=True)
            for index in range(per_class * len(CLASSES)):
                image, label = relation_sample(self.seed, split, index, self.image_size)
                image.save(folder / "imagefolder" / split / CLASSES[label] / f"{index:06d}.png")


def _colour_pair(rng: np.random.Generator, same: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two PALETTE colours, equal or not."""
    first, second = (PALETTE[i] for i in rng.choice(len(PALETTE), size=2, replace=False))
    return first, first if same else second


def relation_sample(seed: int, split: str, index: int, image_size: int) -> tuple[Image.Image, int]:
    """One (image_size, image_size) image with a shape in the left and one in the right third; the label
    is 1 when both share a colour, else 0 (classes alternate with the index)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index, 2])
    label = index % len(CLASSES)
    base = np.full(3, 128)
    pixels = np.clip(base + rng.normal(0.0, 12.0, size=(image_size, image_size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    colours = _colour_pair(rng, same=label == 1)
    third = image_size // 3
    for region, colour in zip((0, 2 * third), colours, strict=True):
        side = int(rng.integers(image_size // 6, third))
        x0 = region + int(rng.integers(0, third - side))  # the box, edges included, stays inside the third
        y0 = int(rng.integers(0, image_size - side))
        kind = SHAPES[int(rng.integers(0, len(SHAPES)))]
        draw_shape(draw, kind, (x0, y0, x0 + side, y0 + side), tuple(int(c) for c in colour))
    return image, label
