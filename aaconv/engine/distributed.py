"""Process groups: set up from torchrun's or Slurm's environment, torn down at the end.

Under torchrun's c10d rendezvous the processes meet in the store of torchrun's agent
(TORCHELASTIC_USE_AGENT_STORE), which outlives them. After an elastic restart (`--max-restarts`) it still holds
the keys of the processes that died (gloo's and NCCL's addresses), and a new process that reads one connects to
a dead peer and fails or hangs in `init_process_group` (pytorch/pytorch#135712). TORCHELASTIC_RESTART_COUNT
cannot tell launches apart: each agent counts for itself, and a replaced agent, or one that restarted its
workers for another node's failure, counts differently. So every launch of the processes joins through its
own prefix of that store, numbered by rank 0 (`launch_store`).

That store cannot take back a node that was lost and started again, nor a node that joins later
(`--nnodes=MIN:MAX`): torchrun's rank-0 agent never republishes the store's address for a newcomer, whose agent
waits for it until its rendezvous times out. Such runs need TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for torchrun
on every node (each launch then meets in a new store); rank 0 says so when it starts (`elastic_store_warning`).

The collectives that work with and without a process group are in `aaconv.utils.distributed`.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from aaconv.errors import DistributedError
from aaconv.utils.distributed import is_distributed

log = logging.getLogger("aaconv")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: global rank, processes in total, rank on its node, and the rendezvous."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"  # "torchrun", "slurm" or "single"


def _first_slurm_host(nodelist: str) -> str:
    """First host of a Slurm node list: "gpu[003-005,010],cpu1" -> "gpu003" (what `scontrol show hostnames` prints first)."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
        if match is None:
            return "127.0.0.1"
        prefix, ranges = match.groups()
        return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def detect_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) win; else Slurm's
    (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, first host of SLURM_JOB_NODELIST, a port from the job id)
    when Slurm started one task per GPU (`srun python train.py`); else a single process."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
            source="torchrun",
        )
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        job_id = int(env.get("SLURM_JOB_ID", "0"))
        return DistEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            master_addr=env.get("MASTER_ADDR") or _first_slurm_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")),
            master_port=int(env.get("MASTER_PORT", 20000 + job_id % 20000)),
            source="slurm",
        )
    return DistEnv()


def launch_store(store: dist.Store, rank: int, world_size: int, timeout_s: float) -> tuple[dist.PrefixStore, int]:
    """`store` under a prefix that only this launch of the processes uses, and the launch's number.

    Rank 0 takes the next number from a counter in `store`. Every other rank posts a fresh random token and
    waits for rank 0's answer to that token, then confirms under the new prefix; rank 0 answers each token it
    finds until all ranks confirmed. A token left by a dead process is answered too, but nobody waits for it,
    so no rank ever takes a previous launch's number. Raises DistributedError after `timeout_s`."""
    if rank == 0:
        launch = store.add("aaconv/launches", 1)
        waiting, answered = set(range(1, world_size)), {}
        deadline = time.monotonic() + timeout_s
        while True:
            for other in sorted(waiting):
                if store.check([f"aaconv/launch{launch}/joined/{other}"]):
                    waiting.discard(other)
                elif store.check([f"aaconv/token/{other}"]):
                    token = store.get(f"aaconv/token/{other}").decode()
                    if answered.get(other) != token:
                        store.set(f"aaconv/answer/{token}", str(launch))
                        answered[other] = token
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"rank 0: ranks {sorted(waiting)} did not join within {timeout_s:g} s "
                    "(trainer.dist_timeout_s); their logs say why"
                )
            time.sleep(0.02)
    else:
        token = uuid.uuid4().hex
        store.set(f"aaconv/token/{rank}", token)
        try:
            launch = int(store.get(f"aaconv/answer/{token}"))  # blocks up to the store's timeout
        except dist.DistError as e:
            raise DistributedError(
                f"rank {rank}: rank 0 did not answer within {timeout_s:g} s (trainer.dist_timeout_s); its log says why"
            ) from e
        store.set(f"aaconv/launch{launch}/joined/{rank}", "")
    return dist.PrefixStore(f"aaconv/launch{launch}", store), launch


def elastic_store_warning(environ: Mapping[str, str]) -> str | None:
    """The line for a multi-node torchrun with restarts on its shared store (module docstring), else None."""
    shared = environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    elastic = int(environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0 and int(environ.get("GROUP_WORLD_SIZE", "1")) > 1
    if not (shared and elastic):
        return None
    return (
        "torchrun shares its store with the processes: a restarted process rejoins, but a node that is lost and "
        "started again, or joins later, cannot; set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for torchrun on every "
        "node (docs/training.md)"
    )


def init_distributed(backend: str = "auto", timeout_min: float = 30.0) -> DistEnv:
    """Joins the process group described by the environment (NCCL when CUDA is present, gloo otherwise)
    and pins this process to GPU `local_rank`. Returns the environment; a single process needs nothing.
    Under torchrun's agent store the group meets under this launch's prefix (the module docstring)."""
    env = detect_env()
    if env.world_size == 1 or is_distributed():
        return env
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    timeout = datetime.timedelta(minutes=timeout_min)
    where = env.source
    if env.source == "torchrun" and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        agent_store = dist.TCPStore(env.master_addr, env.master_port, env.world_size, is_master=False, timeout=timeout)
        store, launch = launch_store(agent_store, env.rank, env.world_size, timeout.total_seconds())
        dist.init_process_group(backend, store=store, rank=env.rank, world_size=env.world_size, timeout=timeout)
        where = f"torchrun launch {launch}"
        if env.rank == 0 and (warning := elastic_store_warning(os.environ)):
            log.warning(warning)
    else:
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://{env.master_addr}:{env.master_port}",
            rank=env.rank,
            world_size=env.world_size,
            timeout=timeout,
        )
    log.info(
        "distributed: rank %d of %d (local rank %d, %s, %s)",
        env.rank,
        env.world_size,
        env.local_rank,
        backend,
        where,
    )
    return env


def destroy_distributed(barrier: bool = True) -> None:
    """Leaves the process group; with `barrier`, first waits for every rank (none exits while others still
    talk to it). Leave it out on error paths, where the other ranks may never arrive."""
    if is_distributed():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()
