"""The shard formats in training: two processes, each with two loader workers reading through litdata's download
cache, see every sample once per epoch; a run from shards stopped mid-epoch and resumed ends with the weights of an
uninterrupted run from the folder; the paper's ImageNet row trains from shards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aaconv.data.shard_sources import imagefolder_source
from aaconv.data.shard_writer import write_shards
from aaconv.engine.trainer import Trainer
from aaconv.tasks import build_task
from helpers.config import REPO, compose_config
from helpers.images import write_tree
from helpers.processes import entry_env


def fit(cfg, run_dir: Path) -> Trainer:
    trainer = Trainer(cfg, build_task(cfg), run_dir)
    trainer.fit()
    return trainer


def test_two_processes_see_every_sample_once_per_epoch(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", per_class=4)  # 12 training images: 6 per rank, 3 batches of 2
    classes, splits = imagefolder_source(tree, ["train", "val"])
    write_shards(tmp_path / "shards", kind="classification", classes=classes, splits=splits, source="tree",
                 part_size=5, chunk_bytes="2KB", progress=False)  # fmt: skip
    env = {**entry_env(), "PYTHONPATH": f"{REPO / 'tests'}:{REPO}"}
    ranks = [
        subprocess.Popen(
            # local: reads the folder through litdata's download cache, as a bucket, one cache for the node
            [
                sys.executable,
                "-m",
                "helpers.shard_epoch",
                f"local:{tmp_path / 'shards'}",
                str(rank),
                "2",
                "2",
                str(tmp_path / "cache"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    seen = []
    for rank in ranks:
        out, err = rank.communicate(timeout=120)
        assert rank.returncode == 0, err[-2000:]
        seen.append(json.loads(out))
    everything = sorted(f"train/{c}/{i}.JPEG" for c in classes for i in range(4))
    for epoch in (0, 1):
        assert [len(ranks_epochs[epoch]) for ranks_epochs in seen] == [6, 6]
        assert sorted(seen[0][epoch] + seen[1][epoch]) == everything
    assert seen[0][0] != seen[0][1]  # a new order each epoch
    assert list((tmp_path / "cache").rglob("chunk-*.bin"))  # the chunks came through the cache


@pytest.mark.slow
def test_a_run_from_shards_resumed_mid_epoch_ends_as_an_uninterrupted_run_from_the_folder(
    tiny_config, tmp_path: Path
) -> None:
    shards = ("data=shapes_shards", "trainer.epochs=2", "trainer.deterministic=true")
    stopped = fit(tiny_config(*shards, "trainer.max_steps=3"), tmp_path / "shards")  # 15 steps an epoch
    assert (stopped.epoch, stopped.batch_in_epoch) == (0, 3)
    resumed = fit(tiny_config(*shards, "trainer.max_steps=16"), tmp_path / "shards")
    folder = fit(tiny_config("trainer.epochs=2", "trainer.deterministic=true", "trainer.max_steps=16"), tmp_path / "f")
    assert resumed.global_step == folder.global_step == 16 and (resumed.epoch, resumed.batch_in_epoch) == (1, 1)
    for key, value in folder.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


@pytest.mark.slow
def test_the_paper_imagenet_row_trains_from_shards(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", per_class=2)
    classes, splits = imagefolder_source(tree, ["train", "val"])
    write_shards(tmp_path / "shards", kind="classification", classes=classes, splits=splits, source="t", progress=False)
    cfg = compose_config(
        "experiment=paper/imagenet_resnet50_aa",
        "data=imagenet_shards",
        f"data.root={tmp_path / 'shards'}",
        "data.num_classes=3",  # the tree's classes; the recipe is ImageNet's otherwise
        "data.batch_size=2",
        "data.workers=0",
        "trainer.max_steps=1",
        "trainer.max_eval_batches=1",
        "logger.progress_bar=false",
    )
    trainer = fit(cfg, tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert trainer.global_step == 1 and results["data"] == "imagenet_shards" and results["attention"] == "aa"
