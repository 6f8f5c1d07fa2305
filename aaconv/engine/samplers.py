"""Samplers: a resumable, sharded training order; an evaluation shard without padded duplicates;
aspect-ratio grouped batches.

The training order is a pure function of (seed, epoch): a resumed run replays the same epoch and skips the
batches it has already trained on. Each training index comes with a per-sample seed (drawn from the same
generator) so that random augmentations too are the same whichever worker, process or resume draws them
(see `aaconv.engine.loaders.SeededSamples`).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

SampleKey = tuple[int, int]  # (dataset index, per-sample augmentation seed)


class TrainSampler(Sampler[SampleKey]):
    """Shuffled training shard of rank `rank` out of `world_size`, like `DistributedSampler` (the shards are
    padded with the first indices to equal length, so every rank takes the same number of steps).

    Yields `(index, sample_seed)`. Call `set_epoch(epoch)` before each epoch.
    """

    def __init__(self, dataset_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.dataset_size, self.rank, self.world_size = dataset_size, rank, world_size
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0
        self.num_samples = -(-dataset_size // world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[SampleKey]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.dataset_size, generator=g) if self.shuffle else torch.arange(self.dataset_size)
        seeds = torch.randint(0, 2**62, (self.dataset_size,), generator=g)
        total = self.num_samples * self.world_size
        order = torch.cat([order, order[: total - self.dataset_size]])  # pad (a no-op when it divides)
        shard = order[self.rank : total : self.world_size].tolist()
        return iter([(i, int(seeds[i])) for i in shard])

    def __len__(self) -> int:
        return self.num_samples


def evenly_spaced(size: int, count: int) -> range | list[int]:
    """`count` distinct indices spread evenly over range(size), in order (all of them when count >= size):
    i * size // count. On a class-ordered dataset (an ImageFolder) every class gets its share."""
    if count >= size:
        return range(size)
    return [i * size // count for i in range(count)]


class ShardSampler(Sampler[int]):
    """Every rank-th of the evaluation indices, starting at `rank`: every sample on exactly one rank, none twice
    (torch's DistributedSampler pads with duplicates, which biases distributed evaluation). The indices are
    the whole dataset, or with `max_samples` that many spread evenly over it (evenly_spaced): the same on
    every rank and every run."""

    def __init__(self, dataset_size: int, *, rank: int = 0, world_size: int = 1, max_samples: int | None = None):
        self.dataset_size, self.rank, self.world_size = dataset_size, rank, world_size
        self.indices = evenly_spaced(dataset_size, max_samples) if max_samples else range(dataset_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices[self.rank :: self.world_size])

    def __len__(self) -> int:
        return len(self.indices[self.rank :: self.world_size])


class GroupedBatchSampler(Sampler[list[SampleKey]]):
    """Batches whose samples share a group id (e.g. landscape vs portrait images, for detection).

    Samples are batched per group in sampler order; the leftovers of all groups at the end are batched
    together, so there are always exactly len(sampler) // batch_size batches (equal on every rank, which
    DDP needs) and no sample is repeated.
    """

    def __init__(self, sampler: Sampler[SampleKey], group_ids: Sequence[int], batch_size: int):
        self.sampler, self.group_ids, self.batch_size = sampler, list(group_ids), batch_size

    def __iter__(self) -> Iterator[list[SampleKey]]:
        buckets: dict[int, list[SampleKey]] = defaultdict(list)
        emitted = 0
        for key in self.sampler:
            bucket = buckets[self.group_ids[key[0]]]
            bucket.append(key)
            if len(bucket) == self.batch_size:
                yield list(bucket)
                bucket.clear()
                emitted += 1
        leftovers = list(itertools.chain.from_iterable(buckets.values()))
        for start in range(0, (len(self) - emitted) * self.batch_size, self.batch_size):
            yield leftovers[start : start + self.batch_size]

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size


class SkipBatches(Sampler[list]):
    """A batch sampler that leaves out the first `skip` batches of `batch_sampler` (mid-epoch resume).
    Set `skip` before iterating; `len` counts only the batches left."""

    def __init__(self, batch_sampler: Sampler[list]):
        self.batch_sampler, self.skip = batch_sampler, 0

    def __iter__(self) -> Iterator[list]:
        return itertools.islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)
