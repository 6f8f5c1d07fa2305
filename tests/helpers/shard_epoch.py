"""One rank's training epochs over shards, loaded as train.py loads them (aaconv's sampler, 2 loader workers):
prints the names of the samples it saw in each epoch, as JSON (a list per epoch).

    python -m helpers.shard_epoch SHARDS RANK WORLD_SIZE EPOCHS CACHE_DIR
"""

from __future__ import annotations

import json
import sys

from torch.utils.data import Dataset

from aaconv.data.shards import ShardSplit, read_manifest, shard_location
from aaconv.engine.loaders import build_train_loader


class SampleNames(Dataset):
    """The source file name of each sample of a shard split."""

    def __init__(self, split: ShardSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> str:
        return self.split[index]["name"]


def main(root: str, rank: int, world_size: int, epochs: int, cache_dir: str) -> list[list[str]]:
    location = shard_location(root)
    names = SampleNames(ShardSplit(location, "train", read_manifest(location), cache_dir))
    loader, sampler, _ = build_train_loader(
        names, batch_size=2, data={"workers": 2}, collate_fn=None, rank=rank, world_size=world_size, seed=0
    )
    seen = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        seen.append([name for batch in loader for name in batch])
    return seen


if __name__ == "__main__":
    root, rank, world_size, epochs, cache_dir = sys.argv[1:]
    print(json.dumps(main(root, int(rank), int(world_size), int(epochs), cache_dir)))
