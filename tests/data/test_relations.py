"""The built-in relations set: the label is exactly "both shapes share a colour", shapes lie a third apart."""

from __future__ import annotations

import numpy as np

from aaconv.data.relations import CLASSES, PALETTE, RelationsSpec, relation_sample
from aaconv.data.shapes import materialize


def palette_colours(pixels: np.ndarray) -> list[set[tuple[int, ...]]]:
    """The palette colours drawn in the left and in the right third (the grey noise never reaches them)."""
    found = []
    for part in (pixels[:, : pixels.shape[1] // 3], pixels[:, 2 * pixels.shape[1] // 3 :]):
        found.append({tuple(c) for c in PALETTE if (part == c).all(axis=-1).any()})
    return found


def test_label_is_whether_the_two_far_apart_shapes_share_a_colour() -> None:
    for index in range(40):
        image, label = relation_sample(0, "train", index, 48)
        left, right = palette_colours(np.asarray(image))
        assert len(left) == len(right) == 1, index  # one shape in each outer third, none in the middle
        assert label == int(left == right) == index % 2
        middle = np.asarray(image)[:, 16:32]  # the middle third
        assert not any((middle == c).all(axis=-1).any() for c in PALETTE)


def test_materialised_set_is_balanced_and_reproducible(tmp_path) -> None:
    spec = RelationsSpec(seed=1, image_size=32, train_per_class=3, val_per_class=2)
    root = materialize(tmp_path / "a", spec) / "imagefolder"
    again = materialize(tmp_path / "b", spec) / "imagefolder"
    for split, per_class in (("train", 3), ("val", 2)):
        for name in CLASSES:
            files = sorted((root / split / name).iterdir())
            assert len(files) == per_class
            assert [f.read_bytes() for f in files] == [f.read_bytes() for f in sorted((again / split / name).iterdir())]
