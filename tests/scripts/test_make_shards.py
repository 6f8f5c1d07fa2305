"""scripts/make_shards.py: an ImageFolder tree, Hugging Face imagenet-1k parquet files and a COCO folder become
shards that read back equal to their source; bad sources and settings are one line."""

from __future__ import annotations

import io
import json
import re
import runpy
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from aaconv.data import build_data
from aaconv.data.shards import MANIFEST, ShardSplit, read_manifest, shard_location
from helpers.config import REPO, TINY_OVERRIDES, compose_config

SCRIPT = str(REPO / "scripts" / "make_shards.py")


def make_shards(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Runs the script as `python scripts/make_shards.py ARGS` does, in this process: (exit status, out, err)."""
    argv = sys.argv
    sys.argv = [SCRIPT, *args]
    try:
        runpy.run_path(SCRIPT, run_name="__main__")
        status = 0
    except SystemExit as e:
        status = int(e.code or 0)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return status, out, err


def jpeg(color: tuple[int, int, int], size: tuple[int, int] = (30, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_hf_parquet(folder: Path, names: list[str] | None) -> dict[str, list[tuple[bytes, int]]]:
    """Hugging Face's imagenet-1k layout in miniature: data/{train,validation}-00000-of-00001.parquet with an
    `image` {bytes, path} struct, a `label` and the ClassLabel `names` in the schema's metadata (None: no metadata,
    3 labels)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()} if names else {}
    rows = {}
    for split, count in (("train", 7), ("validation", 4)):
        rows[split] = [(jpeg((30 * i, 10, 200 - 20 * i)), i % 3) for i in range(count)]
        table = pa.table(
            {
                "image": [{"bytes": data, "path": f"{split}_{i}.JPEG"} for i, (data, _) in enumerate(rows[split])],
                "label": [label for _, label in rows[split]],
            }
        ).replace_schema_metadata(metadata)
        (folder / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "data" / f"{split}-00000-of-00001.parquet", row_group_size=3)
    return rows


@pytest.mark.parametrize("names", [["tench", "goldfish", "shark"], None])
def test_hf_parquet_files_become_shards_with_their_label_names(tmp_path: Path, capsys, names) -> None:
    rows = write_hf_parquet(tmp_path / "hf", names)
    status, out, _ = make_shards("--hf-parquet", str(tmp_path / "hf"), "--out", str(tmp_path / "shards"),
                                 "--part-size", "3", "--no-progress", capsys=capsys)  # fmt: skip
    assert status == 0 and "classification: train 7, val 4 samples, 3 labels" in out
    location = shard_location(tmp_path / "shards")
    manifest = read_manifest(location)
    assert manifest["classes"] == (names or ["0", "1", "2"]) and set(manifest["splits"]) == {"train", "val"}
    for split, hf_split in (("train", "train"), ("val", "validation")):
        written = ShardSplit(location, split, manifest)
        assert [(bytes(written[i]["image"]), written[i]["label"]) for i in range(len(written))] == rows[hf_split]


def test_an_imagefolder_tree_trains_from_its_shards(tmp_path: Path, capsys, data_cache: Path) -> None:
    cfg = compose_config("data=shapes", f"data.root={data_cache}", *TINY_OVERRIDES)
    folder = build_data(OmegaConf.to_container(cfg.data, resolve=True), "classification").train.root
    status, out, _ = make_shards("--imagefolder", str(Path(folder).parent), "--out", str(tmp_path / "shards"),
                                 "--no-progress", capsys=capsys)  # fmt: skip
    assert status == 0 and "train 240, val 60 samples, 6 labels" in out
    cfg = compose_config("data=imagenet_shards", f"data.root=file://{tmp_path / 'shards'}", "data.num_classes=6")
    splits = build_data(OmegaConf.to_container(cfg.data, resolve=True), "classification")
    image, label = splits.train[100]
    assert image.shape == (3, 224, 224) and label == 2 and splits.classes[0] == "circle"


def test_a_coco_folder_becomes_shards_scored_against_its_annotation_file(tmp_path: Path, capsys, data_cache) -> None:
    cfg = compose_config("data=shapes_det", f"data.root={data_cache}", *TINY_OVERRIDES)
    coco = Path(build_data(OmegaConf.to_container(cfg.data, resolve=True), "detection").val.annotation_file).parents[1]
    status, out, _ = make_shards("--coco", str(coco), "--out", str(tmp_path / "shards"), "--no-progress", capsys=capsys)
    assert status == 0 and "detection: train2017 48, val2017 16 samples, 7 labels" in out
    annotations = coco / "annotations" / "instances_val2017.json"
    cfg = compose_config("data=coco_shards", f"data.root={tmp_path / 'shards'}", f"data.annotations={annotations}")
    splits = build_data(OmegaConf.to_container(cfg.data, resolve=True), "detection", hflip=0.0)
    image, target = splits.val[3]
    truth = splits.val.coco.imgToAnns[int(target["image_id"])]
    assert image.shape[0] == 3 and len(target["boxes"]) == len([a for a in truth if not a.get("iscrowd", 0)])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hf-parquet", "{tmp}"], r"error: no train-\*.parquet or validation-\*.parquet files in .*--hf-parquet"),
        (["--hf-parquet", "{tmp}", "--splits", "train"], r"error: --hf-parquet converts .*leave out --splits"),
        (["--imagefolder", "{tmp}/nowhere"], r"error: data root .*nowhere does not exist"),
        (["--coco", "{tmp}"], r"error: COCO annotations .*instances_train2017.json not found"),
    ],
)
def test_a_bad_source_is_one_line(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    status, _, err = make_shards(*(a.format(tmp=tmp_path) for a in args), "--out", str(tmp_path / "s"), capsys=capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "s" / MANIFEST).exists()
