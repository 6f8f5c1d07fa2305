"""Training / evaluation samplers, repeated augmentation, grouped batches, skipping, and per-sample seeded
augmentation."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from timm.data.distributed_sampler import RepeatAugSampler as TimmRepeatAugSampler
from torch.utils.data import BatchSampler, Dataset

from aaconv.engine.loaders import SeededSamples, build_eval_loader, build_train_loader
from aaconv.engine.samplers import GroupedBatchSampler, RepeatAugSampler, ShardSampler, SkipBatches, TrainSampler


class Noisy(Dataset):
    """Index plus a draw from the global torch RNG (a stand-in for a random augmentation)."""

    def __len__(self) -> int:
        return 30

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([float(index), torch.rand(()).item()])


def test_train_shards_partition_one_permutation_per_epoch():
    shards = [list(TrainSampler(10, rank=r, world_size=3, seed=1)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1  # 4 each: 10 padded to 12
    indices = [i for s in shards for i, _ in s]
    assert set(indices) == set(range(10)) and len(indices) == 12
    sampler = TrainSampler(10, seed=1)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    sampler.set_epoch(0)
    assert list(sampler) == epoch0  # a pure function of (seed, epoch): what resume relies on


@pytest.mark.parametrize(("size", "world", "repeats"), [(12, 2, 3), (50, 3, 2), (7, 4, 3), (1000, 2, 3), (300, 1, 4)])
def test_repeat_aug_order_is_timms(size: int, world: int, repeats: int):
    # with seed 0 our generator is timm's (seeded by the epoch alone): the same indices, rank by rank
    for rank in range(world):
        ours = RepeatAugSampler(size, repeats=repeats, rank=rank, world_size=world, seed=0)
        timm = TimmRepeatAugSampler(range(size), num_replicas=world, rank=rank, num_repeats=repeats)
        ours.set_epoch(5), timm.set_epoch(5)
        assert [i for i, _ in ours] == list(timm) and len(ours) == len(timm)


def test_repeat_aug_over_two_ranks_repeats_each_sample_on_both_with_its_own_seeds():
    def epoch(epoch: int) -> list[list[tuple[int, int]]]:
        samplers = [RepeatAugSampler(30, repeats=3, rank=r, world_size=2, seed=7) for r in range(2)]
        for sampler in samplers:
            sampler.set_epoch(epoch)
        return [list(sampler) for sampler in samplers]

    shards = epoch(0)
    assert [len(s) for s in shards] == [15, 15]  # 30 / 2 per rank, as without repeats
    keys = [key for shard in shards for key in shard]
    copies = Counter(i for i, _ in keys)
    assert len(copies) == 10 and set(copies.values()) == {3}  # 10 samples, 3 copies each
    for index in copies:
        assert all(any(i == index for i, _ in shard) for shard in shards)  # on both ranks
    assert len({seed for _, seed in keys}) == 30  # each copy augmented differently
    assert epoch(0) == shards  # a pure function of (seed, epoch): what resume relies on
    assert set(Counter(i for shard in epoch(1) for i, _ in shard)) != set(copies)  # another epoch, other samples


def test_grouped_batches_take_repeated_samples():
    group_ids = [i % 3 == 0 for i in range(60)]
    sampler = RepeatAugSampler(60, repeats=3, seed=0)
    batches = list(GroupedBatchSampler(sampler, group_ids, 4))
    assert len(batches) == 15 and all(len(b) == 4 for b in batches)
    assert sum(len({group_ids[i] for i, _ in b}) > 1 for b in batches) <= 1
    assert Counter(i for b in batches for i, _ in b).most_common(1)[0][1] == 3


def test_eval_shards_cover_each_sample_exactly_once():
    for size, world in [(45, 2), (7, 3), (2, 4)]:
        seen = [i for r in range(world) for i in ShardSampler(size, rank=r, world_size=world)]
        assert sorted(seen) == list(range(size))
        assert sum(len(ShardSampler(size, rank=r, world_size=world)) for r in range(world)) == size


def test_grouped_batches_share_a_group_and_count_is_fixed():
    group_ids = [i % 3 == 0 for i in range(50)]
    sampler = TrainSampler(50, seed=0)
    batches = list(GroupedBatchSampler(sampler, group_ids, 4))
    assert len(batches) == len(GroupedBatchSampler(sampler, group_ids, 4)) == 12
    indices = [i for b in batches for i, _ in b]
    assert len(indices) == len(set(indices)) == 48
    mixed = sum(len({group_ids[i] for i, _ in b}) > 1 for b in batches)
    assert mixed <= 1  # only the leftovers batch may mix groups


def test_skip_batches_resumes_at_the_right_batch():
    batches = BatchSampler(TrainSampler(20, seed=0), 4, drop_last=True)
    skipper = SkipBatches(batches)
    skipper.skip = 3
    assert list(skipper) == list(batches)[3:] and len(skipper) == 2


def test_seeded_samples_do_not_depend_on_workers_or_touch_the_global_rng():
    dataset = Noisy()
    assert torch.equal(SeededSamples(dataset)[(5, 42)], SeededSamples(dataset)[(5, 42)])
    state = torch.get_rng_state()
    epochs = {}
    for workers in (0, 2):
        loader, sampler, _ = build_train_loader(
            dataset, batch_size=4, data={"workers": workers}, collate_fn=None, rank=0, world_size=1, seed=3
        )
        sampler.set_epoch(2)
        epochs[workers] = torch.cat(list(loader))
    assert torch.equal(epochs[0], epochs[2])
    assert torch.equal(torch.get_rng_state(), state)


def test_aug_repeats_loads_each_copy_with_its_own_augmentation():
    def first_batch(aug_repeats: int) -> torch.Tensor:
        data = {"workers": 0, "aug_repeats": aug_repeats}
        loader, _, _ = build_train_loader(
            Noisy(), batch_size=6, data=data, collate_fn=None, rank=0, world_size=1, seed=3
        )
        return next(iter(loader))

    batch = first_batch(3)  # in one process a sample's copies are neighbours: 2 samples x 3 copies
    assert batch[:, 0].tolist() == [batch[0, 0]] * 3 + [batch[3, 0]] * 3
    assert len(set(batch[:, 1].tolist())) == 6
    assert torch.equal(first_batch(1), first_batch(0))  # 0 and 1: off


def test_eval_loader_keeps_every_sample():
    loaders = [
        build_eval_loader(Noisy(), batch_size=4, data={"workers": 0}, collate_fn=None, rank=r, world_size=4)
        for r in range(4)
    ]
    indices = sorted(int(x[0]) for loader in loaders for batch in loader for x in batch)
    assert indices == list(range(30))


def test_a_short_evaluation_spans_every_class_and_gives_each_index_to_one_rank():
    labels = [c for c in range(10) for _ in range(37)]  # an ImageFolder split: sorted by class, 37 images each
    world = 3

    def shards() -> list[list[int]]:
        loaders = [
            build_eval_loader(
                labels, batch_size=4, data={"workers": 0}, collate_fn=None, rank=r, world_size=world, max_batches=2
            )
            for r in range(world)
        ]
        assert all(len(loader) == 2 for loader in loaders)  # max_batches per rank
        return [list(loader.sampler) for loader in loaders]

    indices = [i for shard in shards() for i in shard]
    assert len(indices) == len(set(indices)) == 2 * 4 * world  # 24 of 370, none on two ranks
    per_class = Counter(labels[i] for i in indices)
    assert set(per_class) == set(range(10)) and max(per_class.values()) - min(per_class.values()) <= 1
    assert shards() == shards()  # fixed: the same subset on every rerun
