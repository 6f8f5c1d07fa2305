"""Data loaders for training (sharded, resumable, reproducible augmentation) and evaluation (each sample once)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from aaconv.data import SkipUnreadable
from aaconv.engine.samplers import (
    GroupedBatchSampler,
    RepeatAugSampler,
    SampleKey,
    ShardSampler,
    SkipBatches,
    TrainSampler,
)
from aaconv.errors import ConfigError


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seeds Python's, NumPy's and torch's CPU generators for the block, then puts their states back (the CPU
    generator alone: `torch.manual_seed` would also queue a seed for every CUDA device, with a stack trace each
    time CUDA is not initialised yet, as in a loader worker: 0.1 ms per sample or more)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class SeededSamples(Dataset):
    """`dataset[index]` drawn under its own seed: `SeededSamples(ds)[(index, seed)]`.

    Random augmentations then depend only on (seed, epoch, index), not on which worker or process loads the
    sample nor on what was loaded before, which makes mid-epoch resume exact and leaves the caller's
    random state untouched when loading in the main process (workers=0).
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey) -> Any:
        index, seed = key
        with seeded_rng(seed):
            return self.dataset[index]


def _loader_kwargs(data: Mapping[str, Any], collate_fn: Callable | None) -> dict[str, Any]:
    """DataLoader keywords from the `data` config (workers; `skip_unreadable` leaves None samples out)."""
    workers = int(data["workers"])
    if data.get("skip_unreadable"):
        collate_fn = SkipUnreadable(collate_fn)
    return dict(
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        collate_fn=collate_fn,
    )


def _train_sampler(dataset_size: int, aug_repeats: int, rank: int, world_size: int, seed: int) -> TrainSampler:
    """The plain training order, or with aug_repeats > 1 (0 and 1: off, as timm's `--aug-repeats`) the
    repeated-augmentation one."""
    if aug_repeats > 1:
        return RepeatAugSampler(dataset_size, repeats=aug_repeats, rank=rank, world_size=world_size, seed=seed)
    return TrainSampler(dataset_size, rank=rank, world_size=world_size, seed=seed)


def build_train_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    data: Mapping[str, Any],
    collate_fn: Callable | None,
    rank: int,
    world_size: int,
    seed: int,
    group_ids: list[int] | None = None,
) -> tuple[DataLoader, TrainSampler, SkipBatches]:
    """Loader over this rank's shuffled shard, `batch_size` per process, incomplete last batch dropped.

    Returns the loader, its `TrainSampler` (call `set_epoch`) and its `SkipBatches` (set `skip` to resume
    mid-epoch). With `group_ids` (a task's aspect-ratio groups) batches are grouped by id. With
    `data.aug_repeats` > 1 each sample comes that many times, differently augmented (`RepeatAugSampler`).
    """
    size = len(dataset)  # type: ignore[arg-type]
    sampler = _train_sampler(size, int(data.get("aug_repeats") or 0), rank, world_size, seed)
    batches: Any = (
        GroupedBatchSampler(sampler, group_ids, batch_size)
        if group_ids is not None
        else BatchSampler(sampler, batch_size, drop_last=True)
    )
    skipper = SkipBatches(batches)
    if len(batches) == 0:
        raise ConfigError(
            f"{len(sampler)} training samples per process make no batch of data.batch_size={batch_size}; "
            "lower data.batch_size or use fewer processes"
        )
    loader = DataLoader(
        SeededSamples(dataset),
        batch_sampler=skipper,
        generator=torch.Generator().manual_seed(seed),  # the loader's own seed draw leaves the global RNG alone
        **_loader_kwargs(data, collate_fn),
    )
    return loader, sampler, skipper


def build_eval_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    data: Mapping[str, Any],
    collate_fn: Callable | None,
    rank: int,
    world_size: int,
    max_batches: int | None = None,
) -> DataLoader:
    """Loader over this rank's share of `dataset` in order; every sample is on exactly one rank. With
    `max_batches` (smoke runs), max_batches x batch_size x world_size samples spread evenly over the dataset
    are shared out (`ShardSampler`): a class-ordered split is scored on every class, not on its first ones."""
    size = len(dataset)  # type: ignore[arg-type]
    max_samples = int(max_batches) * batch_size * world_size if max_batches else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(size, rank=rank, world_size=world_size, max_samples=max_samples),
        drop_last=False,
        **_loader_kwargs(data, collate_fn),
    )
