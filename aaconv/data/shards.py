"""Sharded data on litdata (Lightning's streaming engine), read by index so that aaconv's own samplers keep their
promises: every sample once per epoch across ranks and workers, exact mid-epoch resume, a changed world size.

Layout (scripts/make_shards.py writes it; aaconv/data/shard_writer.py):

    <root>/aaconv_shards.index.json                the manifest: kind, label names, each split's fields, parts, counts
    <root>/<split>/part-00000/index.json           one litdata dataset per part (litdata's own index and chunks)
    <root>/<split>/part-00000/chunk-0-0.bin ...

`<root>` is a local folder, a ``file://`` URL, or a URL litdata opens (s3://, gs://, azure://, hf://, r2://, and
``local:<folder>``, which reads a folder through litdata's download cache as a bucket would be read). Chunks of a
URL are downloaded into `data.cache_dir` (null: litdata's default, ~/.lightning/chunks) as samples need them.

Samples keep the source's encoded image bytes (no re-encode) and are opened as the folder path opens a file
(aaconv.data.draft: a JPEG is decoded by the transform, at the scale its crop allows); the transforms are the
folder path's, so a split read from shards gives what its folder gives, sample for sample (the writer keeps the
folder's order).
"""

from __future__ import annotations

import bisect
import importlib
import io
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from aaconv.data.coco import detection_sample, load_coco
from aaconv.data.draft import open_rgb
from aaconv.errors import ConfigError, DataError

log = logging.getLogger("aaconv")
# Named to end in index.json: litdata fetches such keys of a bucket without starting obstore's runtime, which in
# the process that forks the loader workers would leave every worker without it.
MANIFEST = "aaconv_shards.index.json"
URL_SCHEMES = ("s3://", "gs://", "azure://", "hf://", "r2://", "local:")
REWRITE = "rewrite them with python scripts/make_shards.py"


def import_litdata() -> Any:
    """litdata, or a ConfigError naming the extra that installs it."""
    try:
        return importlib.import_module("litdata")
    except ImportError as e:
        raise ConfigError(
            'shards are read and written through litdata, which is not installed: pip install -e ".[shards]"'
        ) from e


def shard_location(root: str | Path) -> str:
    """`data.root` as litdata reads it: a local folder (absolute), a ``file://`` URL as its folder, a URL of a
    scheme litdata opens unchanged; DataError for any other URL."""
    text = str(root)
    if text.startswith("file://"):
        if not text.startswith("file:///"):
            raise DataError(f"{text} names a host; a file:// URL of this machine is file:///<absolute path>")
        return str(Path(text.removeprefix("file://")).resolve())
    if text.startswith(URL_SCHEMES):
        return text.rstrip("/")
    if "://" in text:
        raise DataError(
            f"cannot open shards at {text}: litdata reads {', '.join(URL_SCHEMES)} URLs, file:// and local folders; "
            "copy the shards to one of those"
        )
    return str(Path(text).expanduser().resolve())


def is_url(location: str) -> bool:
    return location.startswith(URL_SCHEMES)


def read_manifest(location: str) -> dict[str, Any]:
    """The manifest of the shards at `location` (downloaded first for a URL); DataError naming the fix."""
    if is_url(location):
        text, where = _download(f"{location}/{MANIFEST}"), f"{location}/{MANIFEST}"
    else:
        path = Path(location) / MANIFEST
        if not path.is_file():
            found = sorted(p.name for p in Path(location).iterdir())[:5] if Path(location).is_dir() else "no folder"
            raise DataError(
                f"{path} not found ({found}): data.root must be a folder written by python scripts/make_shards.py"
            )
        text, where = path.read_bytes(), str(path)
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{where} is not JSON ({e}); {REWRITE}") from e
    if not isinstance(manifest, dict) or not {"kind", "classes", "splits"} <= manifest.keys():
        raise DataError(f"{where} is not a shards manifest (kind, classes, splits); {REWRITE}")
    return manifest


def _download(url: str) -> bytes:
    """One file of a litdata URL, through litdata's own downloader for its scheme."""
    import_litdata()
    from litdata.streaming.downloader import get_downloader

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / Path(url).name
        try:
            source = url.removeprefix("local:")
            get_downloader(url.rsplit("/", 1)[0], folder, chunks=[]).download_file(source, str(target))
        except Exception as e:  # every downloader has its own errors; the user needs the URL and the cause
            raise DataError(f"cannot read {url} ({type(e).__name__}: {e}); check the URL and its credentials") from e
        if not target.is_file():  # some downloaders pass over a missing file in silence
            raise DataError(f"cannot read {url} (not found); check the URL and its credentials")
        return target.read_bytes()


def check_local_part(folder: Path) -> None:
    """A part written on this machine: index.json present and every chunk file of the size it records."""
    index = folder / "index.json"
    if not index.is_file():
        raise DataError(f"shard index {index} is missing; {REWRITE}")
    for chunk in json.loads(index.read_text())["chunks"]:
        path = folder / chunk["filename"]
        if not path.is_file():
            raise DataError(f"shard {path} listed in {index} is missing; copy it again or {REWRITE}")
        if path.stat().st_size != chunk["chunk_bytes"]:
            raise DataError(
                f"shard {path} is truncated or altered ({path.stat().st_size} bytes, its index says "
                f"{chunk['chunk_bytes']}); copy it again or {REWRITE}"
            )


class ShardSplit(Dataset):
    """Random access to the samples (dicts of the writer's fields) of one split, across its parts.

    Args:
        location: `shard_location(data.root)`.
        split: the split's folder name.
        manifest: `read_manifest(location)`.
        cache_dir: where litdata keeps downloaded chunks of a URL (None: its default).
    """

    def __init__(self, location: str, split: str, manifest: dict[str, Any], cache_dir: str | None = None):
        streaming_dataset = import_litdata().StreamingDataset
        # litdata logs two INFO notes (how it reads, its cache size) for every dataset it opens: every part here
        logging.getLogger("litdata").setLevel(logging.WARNING)
        splits = manifest["splits"]
        if split not in splits:
            raise DataError(f"the shards at {location} have the splits {', '.join(splits)}, not {split!r}")
        self.where, self.fields = f"{location}/{split}", splits[split]["fields"]
        self.folders = [f"{self.where}/{name}" for name in splits[split]["parts"]]
        self.parts, self.offsets = [], [0]
        for folder, expected in zip(self.folders, splits[split]["part_samples"], strict=True):
            if not is_url(location):
                check_local_part(Path(folder))
            # batch_decode=False: one row per read; litdata's default decodes a window of rows, wasted on a random
            # order (0.15 -> 0.016 ms a sample)
            part = streaming_dataset(folder, cache_dir=cache_dir, batch_decode=False)
            if len(part) != expected:
                raise DataError(
                    f"shard index {folder}/index.json lists {len(part)} samples, the manifest {expected}; {REWRITE}"
                )
            self.parts.append(part)
            self.offsets.append(self.offsets[-1] + expected)

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(part, index within it) of sample `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {self.where} ({len(self)} samples)")
        part = bisect.bisect_right(self.offsets, index) - 1
        return part, index - self.offsets[part]

    def __getitem__(self, index: int) -> dict[str, Any]:
        part, offset = self.locate(index)
        try:
            # A one-sample slice: litdata then reads whole chunks into its cache, where an int index of a URL reads
            # byte ranges on demand (which litdata 0.2.76 answers with empty bytes for local: URLs).
            row = self.parts[part][offset : offset + 1][0]
            return dict(zip(self.fields, row, strict=True))
        except Exception as e:  # litdata's errors for a damaged chunk vary (IndexError, RuntimeError, timeouts)
            raise DataError(
                f"cannot read sample {offset} of {self.folders[part]} ({type(e).__name__}: {e}); {REWRITE}"
            ) from e


def undecodable(name: str, error: Exception) -> DataError:
    """The error for a sample whose image does not decode, named by its source file."""
    return DataError(f"cannot decode image {name} in the shards ({error}); fix the source and {REWRITE}")


def decode_rgb(data: bytes, name: str) -> Image.Image:
    """Encoded image bytes as an RGB image, decoded in full."""
    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except OSError as e:
        raise undecodable(name, e) from e


class ShardImages(Dataset):
    """(image, label) samples of a classification shard split: (transform(RGB image), label), the image as the
    folder path gives it (ImageNet's pipelines: (3, S, S) uint8, normalised on the device; CIFAR-style: float).

    Args:
        samples: the split.
        transform: applied to the image `open_rgb` opens (the folder path's transforms, which decode it).
        skip_unreadable: an image that cannot be decoded is None (logged) instead of a DataError.
        encoded: samples are (uint8 tensor of the encoded bytes, label) for aaconv.data.gpu_decode instead.
    """

    def __init__(
        self, samples: ShardSplit, transform: Callable | None, skip_unreadable: bool = False, encoded: bool = False
    ):
        self.samples, self.transform = samples, transform
        self.skip_unreadable, self.encoded = skip_unreadable, encoded

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        sample = self.samples[index]
        data, label = bytes(sample["image"]), int(sample["label"])
        if self.encoded:
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), label
        try:  # a JPEG is decoded inside the transform, at the scale its crop allows (aaconv.data.draft)
            image = open_rgb(io.BytesIO(data))
            return (self.transform(image) if self.transform else image), label
        except OSError as e:
            error = undecodable(sample["name"], e)
            if not self.skip_unreadable:
                raise error from e
            log.warning("skipped: %s", error)
            return None


class ShardDetection(Dataset):
    """(image, target) samples of a COCO shard split, as aaconv.data.coco.CocoDetection gives them: image (3, H, W)
    float in [0, 1], target {boxes (N, 4) xyxy, labels (N,), image_id}. Training keeps the images with a box (the
    manifest counts them), validation every image.

    Args:
        samples: the split.
        summary: the manifest's entry of the split (image_ids, image_sizes, boxes).
        train: drop images without boxes and flip with probability `hflip`.
        annotation_file: validation: the original instances_<split>.json, which evaluation scores against (its
            image ids must be the shards'); exposed as `coco` and `annotation_file`.
        skip_unreadable: an image that cannot be decoded is None (logged) instead of a DataError.
    """

    def __init__(
        self,
        samples: ShardSplit,
        summary: dict[str, Any],
        *,
        train: bool,
        hflip: float = 0.5,
        annotation_file: Path | None = None,
        skip_unreadable: bool = False,
    ):
        if "annotations" not in samples.fields:
            raise DataError(
                f"the shards at {samples.where} have no annotations field (fields: {', '.join(samples.fields)}); "
                f"these are not COCO shards: {REWRITE} --coco"
            )
        self.samples, self.train, self.hflip, self.skip_unreadable = samples, train, hflip, skip_unreadable
        self.sizes = summary["image_sizes"]
        self.indices = [i for i, n in enumerate(summary["boxes"]) if n or not train]
        if not self.indices:
            raise DataError(
                f"{samples.where} has no image with a box ({len(self.sizes)} images): training needs images with a "
                "non-crowd box of positive area"
            )
        if annotation_file is not None:
            self.annotation_file, self.coco = annotation_file, load_coco(annotation_file)
            if set(self.coco.imgs) != set(summary["image_ids"]):
                raise DataError(
                    f"{annotation_file} lists {len(self.coco.imgs)} images, the shards at {samples.where} "
                    f"{len(summary['image_ids'])} others; set data.annotations to the annotation file they were "
                    "written from"
                )

    def __len__(self) -> int:
        return len(self.indices)

    def aspect_ratios(self) -> list[float]:
        """width / height of every image, from the manifest (no image is read)."""
        return [self.sizes[i][0] / self.sizes[i][1] for i in self.indices]

    def __getitem__(self, index: int) -> Any:
        position = self.indices[index]
        sample = self.samples[position]
        try:
            image = decode_rgb(bytes(sample["image"]), sample["name"])
        except DataError as e:
            if not self.skip_unreadable:
                raise
            log.warning("skipped: %s", e)
            return None
        if list(image.size) != self.sizes[position]:
            raise DataError(
                f"image {sample['name']} in {self.samples.where} is {image.width}x{image.height}, its annotation "
                f"says {self.sizes[position][0]}x{self.sizes[position][1]}; {REWRITE}"
            )
        annotations = json.loads(sample["annotations"])
        return detection_sample(image, annotations, int(sample["image_id"]), self.hflip if self.train else 0.0)
