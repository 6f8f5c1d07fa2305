"""What scripts/make_shards.py converts: each source gives its label names and, per split, a `SourceSplit` whose
samples are the source's encoded image bytes (never re-encoded) with their fields.

- an ImageFolder tree (ImageNet's layout, the built-in sets): the folder path's order (sorted classes, then files),
  so index i of the shards is index i of the folder;
- Hugging Face's imagenet-1k parquet files (`data/{train,validation}-*.parquet`, columns `image` {bytes, path}
  and `label`; the label names from the files' ClassLabel metadata): `validation` is written as `val`;
- a COCO 2017 folder (aaconv/data/coco.py's layout): each sample is one image with its annotations.
"""

from __future__ import annotations

import bisect
import itertools
import json
from pathlib import Path
from typing import Any

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from aaconv.data.coco import annotations_to_target, category_names, load_coco
from aaconv.data.imagefolder import LAYOUT_HINT, check_split_dir, class_mismatch
from aaconv.data.shard_writer import SourceSplit
from aaconv.errors import DataError

HF_SPLITS = {"train": "train", "validation": "val"}  # Hugging Face's split name -> ours


def imagefolder_source(root: Path, splits: list[str]) -> tuple[list[str], list[SourceSplit]]:
    """(class names, splits) of the ImageFolder tree <root>/<split>/<class>/<image>; the splits must hold the same
    class folders (as the folder path requires)."""
    folders = [check_split_dir(root, split) for split in splits]
    for other in folders[1:]:
        problem = class_mismatch(folders[0], other)
        if problem is not None:
            raise DataError(problem)
    classes, class_to_idx = find_classes(str(folders[0]))
    sources = []
    for split, folder in zip(splits, folders, strict=True):
        try:
            files = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as e:  # a class folder without images
            raise DataError(f"{e}; {LAYOUT_HINT.format(split=split)}") from e

        def sample(index: int, files: list[tuple[str, int]] = files, folder: Path = folder) -> dict[str, Any]:
            path, label = files[index]
            return {
                "name": str(Path(path).relative_to(folder.parent)),
                "image": Path(path).read_bytes(),
                "label": label,
            }

        sources.append(SourceSplit(split, len(files), sample))
    return classes, sources


class ParquetRows:
    """Rows of a list of parquet files by global index, one row group decoded at a time (the writer reads in order)."""

    def __init__(self, files: list[Path]):
        import pyarrow.parquet as pq

        self.files = [pq.ParquetFile(f) for f in files]
        self.groups = [(f, g) for f in range(len(files)) for g in range(self.files[f].num_row_groups)]
        sizes = [self.files[f].metadata.row_group(g).num_rows for f, g in self.groups]
        self.starts = [0, *itertools.accumulate(sizes)]
        self.names = [str(f) for f in files]
        self.cached: tuple[int, list[dict[str, Any]]] | None = None

    def __len__(self) -> int:
        return self.starts[-1]

    def row(self, index: int) -> tuple[str, dict[str, Any]]:
        """(file name, row as a dict) of row `index`."""
        group = bisect.bisect_right(self.starts, index) - 1
        if self.cached is None or self.cached[0] != group:
            f, g = self.groups[group]
            self.cached = (group, self.files[f].read_row_group(g, columns=["image", "label"]).to_pylist())
        return self.names[self.groups[group][0]], self.cached[1][index - self.starts[group]]


def parquet_label_names(path: Path) -> list[str] | None:
    """The ClassLabel names Hugging Face stores in a parquet file's metadata, or None."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    info = json.loads(metadata.get(b"huggingface", b"{}"))
    features = info.get("info", {}).get("features", {})
    return features.get("label", {}).get("names")


def hf_parquet_source(root: Path) -> tuple[list[str], list[SourceSplit]]:
    """(label names, splits) of Hugging Face parquet files <root>/data/{train,validation}-*.parquet (or <root>/*)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = root / "data" if (root / "data").is_dir() else root
    sources, names, labels = [], None, []
    for hf_split, split in HF_SPLITS.items():
        files = sorted(folder.glob(f"{hf_split}-*.parquet"))
        if not files:
            continue
        rows = ParquetRows(files)
        names = names or parquet_label_names(files[0])
        labels += [pq.read_table(f, columns=["label"]).column("label") for f in files] if names is None else []

        def sample(index: int, rows: ParquetRows = rows) -> dict[str, Any]:
            file, row = rows.row(index)
            image, label = row["image"], row["label"]
            if not isinstance(image, dict) or not image.get("bytes") or label is None:
                raise DataError(f"row {index} of {file} has no image bytes or no label; re-download that file")
            return {"name": f"{Path(file).name}:{image.get('path') or index}", "image": image["bytes"], "label": label}

        sources.append(SourceSplit(split, len(rows), sample))
    if not sources:
        raise DataError(
            f"no {' or '.join(f'{s}-*.parquet' for s in HF_SPLITS)} files in {folder}; point --hf-parquet at the "
            "folder of Hugging Face's imagenet-1k download (it holds data/train-00000-of-00257.parquet, ...)"
        )
    if names is None:  # no ClassLabel metadata: the labels' numbers, up to the largest of either split
        names = [str(i) for i in range(max(pc.max(column).as_py() for column in labels) + 1)]
    return list(names), sources


def coco_source(root: Path, splits: list[str]) -> tuple[list[str], list[SourceSplit]]:
    """(category names by id, splits) of a COCO folder: each sample one image of <root>/<split>/ with its
    annotations from <root>/annotations/instances_<split>.json (the JSON of its annotation entries, as written).
    The summary: every image's id, [width, height] and number of training boxes (CocoDetection's rules)."""
    cocos, sources = [], []
    for split in splits:
        coco = load_coco(root / "annotations" / f"instances_{split}.json")
        cocos.append(coco)
        ids = sorted(coco.imgs)

        def sample(index: int, coco: Any = coco, ids: list[int] = ids, split: str = split) -> dict[str, Any]:
            info = coco.imgs[ids[index]]
            path = root / split / info["file_name"]
            if not path.is_file():
                raise DataError(f"COCO image {path} of annotation file entry {info['id']} is missing")
            return {
                "name": f"{split}/{info['file_name']}",
                "image": path.read_bytes(),
                "image_id": int(info["id"]),
                "annotations": json.dumps(coco.imgToAnns[ids[index]]),
            }

        sources.append(SourceSplit(split, len(ids), sample, coco_summary(coco, ids)))
    return category_names(*cocos), sources


def coco_summary(coco: Any, ids: list[int]) -> dict[str, Any]:
    """Image ids, [width, height] and training-box counts of `ids`, in order."""
    sizes = [[coco.imgs[i]["width"], coco.imgs[i]["height"]] for i in ids]
    boxes = [
        len(annotations_to_target(coco.imgToAnns[i], w, h)[0]["boxes"]) for i, (w, h) in zip(ids, sizes, strict=True)
    ]
    return {"image_ids": ids, "image_sizes": sizes, "boxes": boxes}
