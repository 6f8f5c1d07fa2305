"""Samplers: a resumable, sharded training order; an evaluation shard without padded duplicates;
aspect-ratio grouped batches.

The training order is a pure function of (seed, epoch): a resumed run replays the same epoch and skips the
batches it has already trained on. Each training index comes with a per-sample seed (drawn from the same
generator) so that random augmentations too are the same whichever worker, process or resume draws them
(see `aaconv.engine.loaders.SeededSamples`). `RepeatAugSampler` is the same order with each sample repeated
(repeated augmentation, timm's `--aug-repeats`), each copy with its own seed.
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

    def _draw(self, copies: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's order of the dataset indices and a (dataset_size, copies) table of per-sample seeds (one
        per index and copy), both from one generator seeded by (seed, epoch): the same on every rank."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.dataset_size, generator=g) if self.shuffle else torch.arange(self.dataset_size)
        return order, torch.randint(0, 2**62, (self.dataset_size, copies), generator=g)

    def __iter__(self) -> Iterator[SampleKey]:
        order, seeds = self._draw(copies=1)
        total = self.num_samples * self.world_size
        order = torch.cat([order, order[: total - self.dataset_size]])  # pad (a no-op when it divides)
        shard = order[self.rank : total : self.world_size]
        return iter(zip(shard.tolist(), seeds[shard, 0].tolist(), strict=True))

    def __len__(self) -> int:
        return self.num_samples


def repeat_aug_samples(dataset_size: int, world_size: int, selected_round: int = 256) -> int:
    """Samples per rank and epoch under repeated augmentation: timm's `RepeatAugSampler.num_selected_samples`
    with its defaults (selected_round=256, selected_ratio=world_size): the dataset rounded down to a multiple of
    256 and shared out, or under 256 samples ceil(dataset_size / world_size). About the plain epoch's length."""
    if dataset_size >= selected_round:
        return dataset_size // selected_round * selected_round // world_size
    return -(-dataset_size // world_size)


class RepeatAugSampler(TrainSampler):
    """Repeated augmentation (Hoffer et al. 2020, "Augment your batch"; Berman et al. 2019, "MultiGrain"),
    ordered as timm's `RepeatAugSampler` (timm/data/distributed_sampler.py, taken from DeiT's `RASampler`).

    The epoch's permutation with each index repeated `repeats` times in a row ([a, a, a, b, b, b, ...]) is dealt
    out to the ranks in turn (position p to rank p % world_size), so the copies of a sample land on different
    ranks (all of them when world_size >= repeats; in one process they are neighbours in a batch). Every rank
    takes its first `repeat_aug_samples(dataset_size, world_size)` positions: the epoch keeps about its plain
    length and so holds about dataset_size / repeats distinct samples, each `repeats` times.

    Yields `(index, sample_seed)`, the seed drawn per (seed, epoch, index, copy): each copy is augmented
    differently, and identically whichever rank, worker or resume loads it. Call `set_epoch(epoch)`.
    """

    def __init__(
        self,
        dataset_size: int,
        *,
        repeats: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ):
        if repeats < 2:
            raise ValueError(f"repeats={repeats}: repeated augmentation needs 2 or more (TrainSampler is 1)")
        super().__init__(dataset_size, rank=rank, world_size=world_size, seed=seed, shuffle=shuffle)
        self.repeats = repeats
        self.num_samples = repeat_aug_samples(dataset_size, world_size)

    def __iter__(self) -> Iterator[SampleKey]:
        order, seeds = self._draw(copies=self.repeats)
        positions = torch.arange(self.rank, self.num_samples * self.world_size, self.world_size)
        positions %= self.dataset_size * self.repeats  # timm wraps around the repeated order to pad
        indices, copies = order[positions // self.repeats], positions % self.repeats
        return iter(zip(indices.tolist(), seeds[indices, copies].tolist(), strict=True))


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
