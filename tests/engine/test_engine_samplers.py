"""Training / evaluation samplers, grouped batches, skipping, and per-sample seeded augmentation."""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils.data import BatchSampler, Dataset

from aaconv.engine.loaders import SeededSamples, build_eval_loader, build_train_loader
from aaconv.engine.samplers import GroupedBatchSampler, ShardSampler, SkipBatches, TrainSampler


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
