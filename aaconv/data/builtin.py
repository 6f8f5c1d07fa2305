"""Where a `data` config's files are: the user's folder, or a built-in set generated into the cache on first use."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aaconv.data.relations import RelationsSpec
from aaconv.data.shapes import ShapesSpec, materialize
from aaconv.errors import DataError

BUILTIN = {"shapes": ShapesSpec, "relations": RelationsSpec}


def dataset_root(data: Mapping[str, Any], layout: str) -> Path:
    """The folder the loaders read.

    With `data.generate` set (a built-in set: `generate.kind` picks shapes, the default, or relations), the
    dataset is materialised into the cache folder `data.root` on first use and `layout` ("imagefolder" or
    "coco") picks its sub-folder; otherwise `data.root` is the user's dataset folder itself.
    """
    generate = data.get("generate")
    if generate:
        options = dict(generate)
        kind = options.pop("kind", "shapes")
        if kind not in BUILTIN:
            raise DataError(f"unknown data.generate.kind {kind!r}; the built-in sets are {', '.join(BUILTIN)}")
        return materialize(data["root"], BUILTIN[kind](**options)) / layout
    return Path(str(data["root"])).expanduser()
