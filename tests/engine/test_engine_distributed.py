"""launch_store against a real TCPStore: every launch of the processes agrees on one fresh prefix, whatever
the previous launch left in the store and whoever comes late."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import torch.distributed as dist

from aaconv.engine.distributed import elastic_store_warning, launch_store
from aaconv.errors import DistributedError


def join_all(store: dist.TCPStore, world_size: int, late: dict[int, float] | None = None) -> dict[int, int]:
    """Each rank in a thread with its own client, as separate processes would; rank -> launch number."""
    launches: dict[int, int] = {}

    def join(rank: int) -> None:
        time.sleep((late or {}).get(rank, 0.0))
        client = dist.TCPStore(store.host, store.port, world_size, is_master=False, timeout=timedelta(seconds=20))
        prefixed, launches[rank] = launch_store(client, rank, world_size, timeout_s=20)
        prefixed.set(f"address/{rank}", str(launches[rank]))  # what gloo would publish under the prefix

    threads = [threading.Thread(target=join, args=(rank,)) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return launches


def test_each_launch_agrees_on_a_new_prefix_despite_the_previous_launchs_keys():
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=20), wait_for_workers=False)
    assert join_all(store, 3) == {0: 1, 1: 1, 2: 1}
    # the restarted rank 2 comes late: its token from launch 1 is still in the store, and rank 0 answers it
    # first; rank 2 must still take launch 2, and launch 2's keys must not see launch 1's
    assert join_all(store, 3, late={2: 0.5}) == {0: 2, 1: 2, 2: 2}
    assert dist.PrefixStore("aaconv/launch2", store).get("address/2") == b"2"
    # a launch with fewer processes (a smaller world after a restart) agrees too
    assert join_all(store, 2, late={0: 0.3}) == {0: 3, 1: 3}


def test_rank_0_gives_up_with_one_line_when_a_rank_never_joins():
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=5), wait_for_workers=False)
    with pytest.raises(DistributedError, match=r"rank 0: ranks \[1\] did not join within 0.3 s"):
        launch_store(store, 0, 2, timeout_s=0.3)


def test_the_shared_store_warning_names_the_setting_only_for_elastic_multi_node_runs():
    elastic = {"TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_MAX_RESTARTS": "2", "GROUP_WORLD_SIZE": "2"}
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in elastic_store_warning(elastic)
    assert elastic_store_warning({**elastic, "TORCHELASTIC_USE_AGENT_STORE": "False"}) is None  # the setting is on
    assert elastic_store_warning({**elastic, "GROUP_WORLD_SIZE": "1"}) is None  # one node: nothing to replace
    assert elastic_store_warning({**elastic, "TORCHELASTIC_MAX_RESTARTS": "0"}) is None
