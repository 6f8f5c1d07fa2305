"""Converts a dataset to shards that `data=imagenet_shards` / `data=coco_shards` read (locally or from a bucket).

    python scripts/make_shards.py --imagefolder /data/imagenet --out /data/imagenet-shards
    python scripts/make_shards.py --hf-parquet /data/hf-imagenet-1k --out /data/imagenet-shards
    python scripts/make_shards.py --coco /data/coco --out /data/coco-shards

- ``--imagefolder``: ``<dir>/<split>/<class>/<image>`` (``--splits``, default train val), in the folder path's order.
- ``--hf-parquet``: Hugging Face's imagenet-1k download (``data/train-*.parquet``, ``data/validation-*.parquet``;
  validation is written as ``val``), the label names from the files' metadata.
- ``--coco``: ``<dir>/<split>/`` images with ``<dir>/annotations/instances_<split>.json`` (``--splits``, default
  train2017 val2017): one sample per image, with its annotations. Evaluation still scores against the original
  annotation file (``data.annotations`` of ``configs/data/coco_shards.yaml``).

Images are stored as their source bytes (no re-encode), in parts of ``--part-size`` samples, each a litdata dataset
of ``--chunk-bytes`` chunks. A progress bar counts images; an interrupted run resumes at its first unfinished part
when rerun with the same arguments. The manifest (aaconv_shards.index.json) is written last,
after a read-back check: every part's count, and ``--check-samples`` samples per split whose image bytes and fields
equal the source's. A second conversion into a folder another one is writing is refused.
Copy the finished folder to a bucket as it is (``aws s3 sync OUT s3://bucket/imagenet-shards``) and train with
``data.root=s3://bucket/imagenet-shards``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from aaconv.data.shard_sources import coco_source, hf_parquet_source, imagefolder_source
from aaconv.data.shard_writer import write_shards
from aaconv.errors import DataError, exit_on_user_error
from aaconv.utils.cli import positive_int

DEFAULT_SPLITS = {"imagefolder": ["train", "val"], "coco": ["train2017", "val2017"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--imagefolder", type=Path, help="ImageFolder root: <dir>/<split>/<class>/<image>")
    source.add_argument("--hf-parquet", type=Path, help="Hugging Face imagenet-1k folder (data/*.parquet)")
    source.add_argument("--coco", type=Path, help="COCO root: <dir>/<split>/ and <dir>/annotations/")
    parser.add_argument("--out", type=Path, required=True, help="the shards' folder (created)")
    parser.add_argument(
        "--splits", nargs="+", help="splits to convert (imagefolder: train val; coco: train2017 val2017)"
    )
    parser.add_argument("--part-size", type=positive_int, default=25_000, help="samples per part (the resume unit)")
    parser.add_argument("--chunk-bytes", default="64MB", help="litdata chunk size (the unit a bucket is read in)")
    parser.add_argument("--check-samples", type=positive_int, default=16, help="images per split read back")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.hf_parquet is not None:
        if args.splits:
            raise DataError("--hf-parquet converts the train and validation files it finds; leave out --splits")
        kind, source = "classification", args.hf_parquet
        classes, splits = hf_parquet_source(source.expanduser())
    elif args.coco is not None:
        kind, source = "detection", args.coco
        classes, splits = coco_source(source.expanduser(), args.splits or DEFAULT_SPLITS["coco"])
    else:
        kind, source = "classification", args.imagefolder
        classes, splits = imagefolder_source(source.expanduser(), args.splits or DEFAULT_SPLITS["imagefolder"])
    begin = time.perf_counter()
    manifest = write_shards(
        args.out,
        kind=kind,
        classes=classes,
        splits=splits,
        source=str(source),
        part_size=args.part_size,
        chunk_bytes=args.chunk_bytes,
        check_samples=args.check_samples,
        progress=args.progress,
    )
    counts = ", ".join(f"{name} {split['samples']}" for name, split in manifest["splits"].items())
    print(f"wrote {args.out} ({kind}: {counts} samples, {len(classes)} labels) in {time.perf_counter() - begin:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
