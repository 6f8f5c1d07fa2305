"""Process groups: set up from torchrun's or Slurm's environment, torn down at the end.

The collectives that work with and without a process group are in `aaconv.utils.distributed`.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

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


def init_distributed(backend: str = "auto", timeout_min: float = 30.0) -> DistEnv:
    """Joins the process group described by the environment (NCCL when CUDA is present, gloo otherwise)
    and pins this process to GPU `local_rank`. Returns the environment; a single process needs nothing."""
    env = detect_env()
    if env.world_size == 1 or is_distributed():
        return env
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(minutes=timeout_min),
    )
    log.info(
        "distributed: rank %d of %d (local rank %d, %s, %s)",
        env.rank,
        env.world_size,
        env.local_rank,
        backend,
        env.source,
    )
    return env


def destroy_distributed(barrier: bool = True) -> None:
    """Leaves the process group; with `barrier`, first waits for every rank (none exits while others still
    talk to it). Leave it out on error paths, where the other ranks may never arrive."""
    if is_distributed():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()
