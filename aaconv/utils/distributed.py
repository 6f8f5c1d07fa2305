"""Collectives that are no-ops (or the identity) in a single process, so one code path serves both.

The process group itself is set up by `aaconv.engine.distributed`; tasks and models only need these.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
    """`op` over all processes into a new tensor (the input is left as it is); the input when not distributed."""
    if not is_distributed():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=op)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over all processes (a new tensor; the input is left as it is)."""
    return _all_reduce(tensor, dist.ReduceOp.SUM)


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of `tensor` over all processes (a new tensor)."""
    return _all_reduce(tensor, dist.ReduceOp.MAX)


def all_gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every process (picklable objects, e.g. COCO predictions)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every process (e.g. the run directory, so all ranks agree on it)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
