"""Shards on litdata: written in resumable parts and read back by index through litdata's own reader, from a
folder, a file:// URL and litdata's download path (local:); the built-in sets' shards give their folders' samples;
every bad input is one line naming the file and the fix."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from aaconv.data import build_data
from aaconv.data.shard_sources import coco_source, imagefolder_source
from aaconv.data.shard_writer import PENDING, SourceSplit, exclusive, write_shards
from aaconv.data.shards import MANIFEST, ShardDetection, ShardImages, ShardSplit, read_manifest, shard_location
from aaconv.engine.loaders import SeededSamples
from aaconv.errors import DataError
from helpers.config import TINY_OVERRIDES, compose_config
from helpers.images import write_tree

SHARD_PAIRS = [("shapes", "shapes_shards", "classification"), ("shapes_det", "shapes_det_shards", "detection")]


@pytest.fixture
def tree_shards(tmp_path: Path) -> tuple[Path, Path]:
    """(ImageFolder tree, its shards in parts of 4 samples and chunks of about 2 kB, 2 or 3 images)."""
    tree = write_tree(tmp_path / "tree")
    classes, splits = imagefolder_source(tree, ["train", "val"])
    write_shards(tmp_path / "shards", kind="classification", classes=classes, splits=splits, source="tree",
                 part_size=4, chunk_bytes="2KB", progress=False)  # fmt: skip
    return tree, tmp_path / "shards"


def folder_samples(tree: Path, split: str) -> list[tuple[bytes, int]]:
    classes = sorted(p.name for p in (tree / split).iterdir())
    return [(f.read_bytes(), label) for label, c in enumerate(classes) for f in sorted((tree / split / c).iterdir())]


def test_every_sample_reads_back_across_parts_and_chunks_in_the_folders_order(tree_shards) -> None:
    tree, shards = tree_shards
    manifest = read_manifest(shard_location(shards))
    assert manifest["classes"] == ["n01", "n02", "n03"] and manifest["splits"]["train"]["part_samples"] == [4, 4, 4, 3]
    assert len(list((shards / "train" / "part-00000").glob("chunk-*.bin"))) > 1
    split = ShardSplit(shard_location(shards), "train", manifest)
    expected = folder_samples(tree, "train")
    for index in torch.randperm(len(expected)).tolist():  # random access, as a shuffled epoch reads
        sample = split[index]
        assert (bytes(sample["image"]), sample["label"]) == expected[index]


@pytest.mark.parametrize("url", ["file://{}", "local:{}"])
def test_urls_read_the_same_samples_as_the_folder(tree_shards, url: str, tmp_path: Path) -> None:
    _, shards = tree_shards
    location = shard_location(url.format(shards))
    split = ShardSplit(location, "val", read_manifest(location), cache_dir=str(tmp_path / "cache"))
    local = ShardSplit(shard_location(shards), "val", read_manifest(shard_location(shards)))
    assert [bytes(split[i]["image"]) for i in range(len(split))] == [bytes(local[i]["image"]) for i in range(15)]
    if url.startswith("local:"):  # litdata's download path: the chunks were copied into the cache
        assert list((tmp_path / "cache").rglob("chunk-*.bin"))


@pytest.mark.parametrize(("folder_config", "shard_config", "task"), SHARD_PAIRS)
def test_builtin_shards_give_the_folders_samples_and_augmentations(
    folder_config: str, shard_config: str, task: str, data_cache: Path
) -> None:
    splits = {}
    for name in (folder_config, shard_config):
        cfg = compose_config(f"data={name}", f"data.root={data_cache}", *TINY_OVERRIDES)
        data = OmegaConf.to_container(cfg.data, resolve=True)
        splits[name] = build_data(data, task, **({"hflip": 0.5} if task == "detection" else {}))
    folder, shards = splits[folder_config], splits[shard_config]
    assert shards.classes == folder.classes and len(shards.train) == len(folder.train)
    for index in (0, len(folder.train) // 2, len(folder.train) - 1):
        key = (index, 1234 + index)  # the per-sample seed: the same random crop / flip on both
        assert_same_sample(SeededSamples(shards.train)[key], SeededSamples(folder.train)[key])
        assert_same_sample(shards.val[index % len(folder.val)], folder.val[index % len(folder.val)])
    if task == "detection":
        assert shards.train.aspect_ratios() == folder.train.aspect_ratios()
        assert shards.val.annotation_file == folder.val.annotation_file


def assert_same_sample(got: tuple, expected: tuple) -> None:
    assert torch.equal(got[0], expected[0])
    if isinstance(expected[1], dict):
        assert got[1].keys() == expected[1].keys() and all(torch.equal(got[1][k], expected[1][k]) for k in got[1])
    else:
        assert got[1] == expected[1]


def test_a_truncated_shard_is_named_with_the_fix(tree_shards) -> None:
    _, shards = tree_shards
    chunk = sorted((shards / "train" / "part-00001").glob("chunk-*.bin"))[0]
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(DataError, match=rf"shard {chunk} is truncated or altered \(100 bytes.*make_shards.py"):
        ShardSplit(shard_location(shards), "train", read_manifest(shard_location(shards)))


def test_an_index_that_disagrees_with_its_files_is_named_with_the_fix(tree_shards) -> None:
    _, shards = tree_shards
    index = shards / "val" / "part-00002" / "index.json"
    content = json.loads(index.read_text())
    content["chunks"][0]["chunk_size"] += 1
    index.write_text(json.dumps(content))
    with pytest.raises(DataError, match=rf"shard index {index} lists 5 samples, the manifest 4; rewrite"):
        ShardSplit(shard_location(shards), "val", read_manifest(shard_location(shards)))


def test_a_missing_chunk_and_a_missing_manifest_are_named(tree_shards) -> None:
    _, shards = tree_shards
    chunk = sorted((shards / "val" / "part-00000").glob("chunk-*.bin"))[-1]
    chunk.unlink()
    with pytest.raises(DataError, match=rf"shard {chunk} listed in .*index.json is missing"):
        ShardSplit(shard_location(shards), "val", read_manifest(shard_location(shards)))
    with pytest.raises(
        DataError, match=r"aaconv_shards.index.json not found .*written by python scripts/make_shards.py"
    ):
        read_manifest(shard_location(shards / "train"))
    (shards / MANIFEST).write_text('{"kind": "classification"')
    with pytest.raises(DataError, match=r"aaconv_shards.index.json is not JSON \(.*\); rewrite them"):
        read_manifest(shard_location(shards))
    (shards / MANIFEST).write_text('{"kind": "classification"}')
    with pytest.raises(DataError, match=r"aaconv_shards.index.json is not a shards manifest \(kind, classes, splits\)"):
        read_manifest(shard_location(shards))


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("ftp://host/shards", r"cannot open shards at ftp://host/shards: litdata reads s3://, gs://.*file://"),
        ("local:/nowhere/shards", r"cannot read local:/nowhere/shards/aaconv_shards.index.json \(.*\); check the URL"),
        ("file://host/shards", r"file://host/shards names a host; a file:// URL of this machine is file:///"),
    ],
)
def test_a_url_the_engine_cannot_open_is_one_line(root: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_manifest(shard_location(root))


def test_an_undecodable_image_is_named_or_skipped(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", per_class=2)
    (tree / "train" / "n02" / "0.JPEG").write_bytes(b"not an image")
    classes, splits = imagefolder_source(tree, ["train"])
    write_shards(tmp_path / "shards", kind="classification", classes=classes, splits=splits, source="t", progress=False)
    split = ShardSplit(shard_location(tmp_path / "shards"), "train", read_manifest(str(tmp_path / "shards")))
    with pytest.raises(DataError, match=r"cannot decode image train/n02/0.JPEG in the shards"):
        ShardImages(split, None)[2]
    assert ShardImages(split, None, skip_unreadable=True)[2] is None


def test_conversion_resumes_at_its_first_unfinished_part(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree")
    classes, (train,) = imagefolder_source(tree, ["train"])

    def failing(index: int) -> dict:
        if index == 9:
            raise KeyboardInterrupt  # the conversion is stopped while writing part 2
        return train.sample(index)

    options = dict(kind="classification", classes=classes, source="tree", part_size=4, progress=False)
    with pytest.raises(KeyboardInterrupt):
        write_shards(tmp_path / "out", splits=[SourceSplit("train", train.count, failing)], **options)
    kept = {p.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "train").glob("part-*/index.json")}
    assert sorted(kept) == ["part-00000", "part-00001"] and (tmp_path / "out" / PENDING).is_file()
    with pytest.raises(DataError, match=r"unfinished conversion with other settings"):
        write_shards(tmp_path / "out", splits=[train], **{**options, "part_size": 5})
    write_shards(tmp_path / "out", splits=[train], **options)
    assert {
        p.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "out/train").glob("part-0000[01]/index.json")
    } == kept
    assert (tmp_path / "out" / MANIFEST).is_file() and not (tmp_path / "out" / PENDING).exists()
    assert not list((tmp_path / "out" / "train").glob(".*.tmp"))  # the interrupted part's staging folder is gone
    with pytest.raises(DataError, match="already holds finished shards"):
        write_shards(tmp_path / "out", splits=[train], **options)


def detection_shards(tmp_path: Path, sizes: list[tuple[int, int]], boxes: list[int]) -> ShardSplit:
    """A val2017 split of one image per size, image i with id i + 1 and `boxes[i]` boxes."""

    def sample(index: int) -> dict:
        buffer = io.BytesIO()
        Image.new("RGB", sizes[index], (index * 50, 0, 0)).save(buffer, "PNG")
        box = {"bbox": [1, 1, 4, 4], "category_id": 1, "iscrowd": 0}
        return {"name": f"{index}.png", "image": buffer.getvalue(), "image_id": index + 1,
                "annotations": json.dumps([box] * boxes[index])}  # fmt: skip

    split = SourceSplit("val2017", len(sizes), sample)
    write_shards(tmp_path / "shards", kind="detection", classes=["__background__", "a"], splits=[split], source="t",
                 progress=False)  # fmt: skip
    location = shard_location(tmp_path / "shards")
    return ShardSplit(location, "val2017", read_manifest(location))


def test_detection_training_keeps_the_images_with_boxes_and_their_shapes(tmp_path: Path) -> None:
    sizes, boxes = [(20, 10), (10, 20), (30, 10)], [1, 0, 2]
    samples = detection_shards(tmp_path, sizes, boxes)
    summary = {"image_ids": [1, 2, 3], "image_sizes": [list(s) for s in sizes], "boxes": boxes}
    train = ShardDetection(samples, summary, train=True, hflip=0.0)
    assert len(train) == 2 and train.aspect_ratios() == [2.0, 3.0]
    image, target = train[1]  # the third image: the box-less second is left out
    assert image.shape == (3, 10, 30) and int(target["image_id"]) == 3 and len(target["boxes"]) == 2
    val = ShardDetection(samples, summary, train=False)
    assert len(val) == 3 and val.aspect_ratios() == [2.0, 0.5, 3.0] and len(val[1][1]["boxes"]) == 0
    with pytest.raises(DataError, match=r"val2017 has no image with a box \(3 images\): training needs"):
        ShardDetection(samples, {**summary, "boxes": [0, 0, 0]}, train=True)


def test_a_second_conversion_into_the_same_folder_is_refused(tree_shards, tmp_path: Path) -> None:
    tree, _ = tree_shards
    classes, splits = imagefolder_source(tree, ["val"])
    (tmp_path / "out").mkdir()
    with exclusive(tmp_path / "out"):  # another conversion holds the folder
        with pytest.raises(DataError, match=r"another conversion is writing .*out; wait for it"):
            write_shards(tmp_path / "out", kind="classification", classes=classes, splits=splits, source="t",
                         progress=False)  # fmt: skip


def test_a_coco_shard_without_annotations_is_named(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    Image.new("RGB", (20, 10)).save(image)
    split = SourceSplit("val2017", 1, lambda i: {"name": "val2017/a.jpg", "image": image.read_bytes(), "image_id": 1})
    write_shards(tmp_path / "shards", kind="detection", classes=["__background__"], splits=[split], source="t",
                 progress=False)  # fmt: skip
    location = shard_location(tmp_path / "shards")
    summary = {"image_ids": [1], "image_sizes": [[20, 10]], "boxes": [0]}
    samples = ShardSplit(location, "val2017", read_manifest(location))
    with pytest.raises(
        DataError,
        match=r"the shards at .*val2017 have no annotations field \(fields: name, image, image_id\); these are not COCO shards: .* --coco",
    ):
        ShardDetection(samples, summary, train=False)


def test_coco_shards_are_scored_against_the_annotation_file_they_came_from(data_cache: Path, tmp_path: Path) -> None:
    cfg = compose_config("data=shapes_det", f"data.root={data_cache}", *TINY_OVERRIDES)
    coco = build_data(OmegaConf.to_container(cfg.data, resolve=True), "detection").val.annotation_file.parents[1]
    classes, splits = coco_source(coco, ["train2017", "val2017"])
    write_shards(tmp_path / "shards", kind="detection", classes=classes, splits=splits, source="t", progress=False)
    data = {"name": "coco_shards", "format": "coco_shards", "root": f"file://{tmp_path / 'shards'}", "num_classes": 7,
            "train_split": "train2017", "val_split": "val2017"}  # fmt: skip
    with pytest.raises(DataError, match=r"data.annotations is not set: .*instances_val2017.json"):
        build_data(data, "detection")
    with pytest.raises(DataError, match=r"lists 48 images, the shards at .* 16 others; set data.annotations"):
        build_data({**data, "annotations": str(coco / "annotations" / "instances_train2017.json")}, "detection")
    shutil.copy(coco / "annotations" / "instances_val2017.json", tmp_path / "val.json")
    val = build_data({**data, "annotations": str(tmp_path / "val.json")}, "detection").val
    assert val.annotation_file == tmp_path / "val.json" and len(val) == 16


def test_gpu_decoding_gets_the_encoded_files_from_shards(data_cache: Path) -> None:
    cfg = compose_config("data=shapes_shards", f"data.root={data_cache}", "data.decode=gpu", *TINY_OVERRIDES)
    splits = build_data(OmegaConf.to_container(cfg.data, resolve=True), "classification")
    cfg = compose_config("data=shapes", f"data.root={data_cache}", "data.decode=gpu", *TINY_OVERRIDES)
    folder = build_data(OmegaConf.to_container(cfg.data, resolve=True), "classification")
    (data, label), (expected, expected_label) = splits.train[7], folder.train[7]
    assert data.dtype == torch.uint8 and torch.equal(data, expected) and label == expected_label
    assert splits.collate_fn is folder.collate_fn is not None
