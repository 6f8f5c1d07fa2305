"""Writing shards in the layout aaconv/data/shards.py reads, from any source of samples.

A split is written in parts of `part_size` samples, each a litdata dataset written into a temporary folder and
renamed into place when whole, so an interrupted conversion resumes at its first missing part (the settings it
was started with are kept in `<out>/.aaconv_shards_pending.json` and a rerun with others is refused). The manifest
comes last, after a read-back check: every part's sample count, and a sample of images spread over each split
read back through `ShardSplit`, their bytes and decoded pixels equal to the source's.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from aaconv.data.shards import MANIFEST, ShardSplit, import_litdata, shard_location
from aaconv.errors import DataError
from aaconv.utils.atomic import write_json_atomic

PENDING = ".aaconv_shards_pending.json"
LOCK = ".lock"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class SourceSplit:
    """One split of a source: `count` samples, `sample(i)` the i-th as the dict the shards store (`name`: where it
    came from, `image`: its encoded bytes, and the kind's fields: `label`, or COCO's `image_id` and `annotations`),
    and `summary`, per-sample facts the manifest keeps so a reader needs no sample to know them (COCO: image ids,
    sizes and box counts)."""

    name: str
    count: int
    sample: Callable[[int], dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def part_samples(folder: Path) -> int | None:
    """Samples of the finished part in `folder` (from its litdata index), None when there is none."""
    index = folder / "index.json"
    if not index.is_file():
        return None
    return sum(chunk["chunk_size"] for chunk in json.loads(index.read_text())["chunks"])


def write_part(
    folder: Path, split: SourceSplit, fields: list[str], begin: int, end: int, chunk_bytes: str, bar: tqdm
) -> None:
    """Samples [begin, end) of `split` as one litdata dataset in `folder`, renamed into place when whole. Samples
    are stored as tuples in `fields` order: a dict row gets an Arrow footer that litdata reads a window of rows at a
    time, several times slower by index than a tuple."""
    import_litdata()
    from litdata.streaming.writer import BinaryWriter

    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    writer = BinaryWriter(str(staging), chunk_bytes=chunk_bytes)
    for index in range(begin, end):
        sample = split.sample(index)
        writer.add_item(index - begin, tuple(sample[field] for field in fields))
        bar.update(1)
    writer.done()
    writer.merge()
    os.replace(staging, folder)


def write_split(out: Path, split: SourceSplit, part_size: int, chunk_bytes: str, progress: bool) -> dict[str, Any]:
    """Every part of `split` under out/<split.name>, the finished ones kept; returns its manifest entry (fields,
    samples, parts, part_samples and the source's summary)."""
    fields = list(split.sample(0)) if split.count else []
    bounds = [(b, min(b + part_size, split.count)) for b in range(0, split.count, part_size)]
    done = {i for i, (b, e) in enumerate(bounds) if part_samples(out / split.name / part_name(i)) == e - b}
    with tqdm(total=split.count, desc=split.name, unit="img", disable=not progress) as bar:
        bar.update(sum(e - b for i, (b, e) in enumerate(bounds) if i in done))
        for i, (begin, end) in enumerate(bounds):
            if i not in done:
                folder = out / split.name / part_name(i)
                for stale in [folder, *folder.parent.glob(f".{folder.name}.*.tmp")]:  # an interrupted run's
                    shutil.rmtree(stale, ignore_errors=True)
                write_part(folder, split, fields, begin, end, chunk_bytes, bar)
    return {
        "fields": fields,
        "samples": split.count,
        "parts": [part_name(i) for i in range(len(bounds))],
        "part_samples": [end - begin for begin, end in bounds],
        **split.summary,
    }


def check_read_back(out: Path, manifest: dict[str, Any], splits: list[SourceSplit], samples: int) -> None:
    """Reads the written shards back: counts (ShardSplit checks every part's), and `samples` samples per split
    (spread evenly) whose image bytes and fields equal the source's (so their images decode to the source's pixels)."""
    for split in splits:
        written = ShardSplit(shard_location(out), split.name, manifest)
        for index in np.linspace(0, split.count - 1, min(samples, split.count), dtype=int).tolist():
            source, shard = split.sample(index), written[index]
            if bytes(shard["image"]) != source["image"]:
                raise DataError(f"read-back check: sample {index} ({source['name']}) of {out / split.name} differs")
            if any(shard[k] != v for k, v in source.items() if k != "image"):
                raise DataError(f"read-back check: the fields of sample {index} ({source['name']}) differ")


def write_shards(
    out: str | Path,
    *,
    kind: str,
    classes: list[str],
    splits: list[SourceSplit],
    source: str,
    part_size: int = 25_000,
    chunk_bytes: str = "64MB",
    check_samples: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Writes (or finishes) the shards of `splits` into `out` and returns the manifest written last.

    Args:
        kind: "classification" or "detection" (which format reads them).
        classes: the label names (classification: index = label; detection: index = category id).
        source: what was converted (recorded in the manifest).
        part_size: samples per part, the unit a rerun resumes at.
        chunk_bytes: litdata's chunk size, the unit a URL is downloaded in.
        check_samples: images per split read back and compared with the source.
    """
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    settings = {"kind": kind, "source": source, "part_size": part_size, "chunk_bytes": chunk_bytes, "classes": classes}
    settings["splits"] = {split.name: split.count for split in splits}
    with exclusive(out):
        check_resumable(out, settings)
        write_json_atomic(settings, out / PENDING)
        manifest = {"version": MANIFEST_VERSION, "kind": kind, "source": source, "classes": classes, "splits": {}}
        for split in splits:
            manifest["splits"][split.name] = write_split(out, split, part_size, chunk_bytes, progress)
        check_read_back(out, manifest, splits, check_samples)
        write_json_atomic(manifest, out / MANIFEST)
        (out / PENDING).unlink()
        (out / LOCK).unlink()
    return manifest


def check_resumable(out: Path, settings: dict[str, Any]) -> None:
    """DataError when `out` holds finished shards, or an unfinished conversion started with other settings."""
    if (out / MANIFEST).is_file():
        raise DataError(f"{out} already holds finished shards ({MANIFEST}); write into a new folder")
    pending = out / PENDING
    if pending.is_file() and json.loads(pending.read_text()) != settings:
        raise DataError(
            f"{out} holds an unfinished conversion with other settings ({pending}); rerun it with the same "
            "source and options, or delete the folder"
        )


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Holds `out` for one conversion (an advisory lock on out/.lock, released when the process ends, killed or
    not); DataError when another process holds it."""
    with open(out / LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"another conversion is writing {out}; wait for it, or write into another folder") from None
        yield
