"""Process-group helpers for one process or ``torchrun`` (detectron2's ``utils/comm.py``): training and
evaluation both use them, so neither imports the other.

Every helper is a no-op (or the identity) in a single process, so callers need no ``world > 1`` checks.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment (1 process otherwise)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """Start the process group under torchrun (nccl on GPU, gloo on CPU); returns (rank, world, device)."""
    rank, world, local = dist_info()
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but CUDA is not available")
        dev = torch.device("cuda", local if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def shutdown(world: int) -> None:
    """End the process group that :func:`init_distributed` started (if any)."""
    if world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(world: int) -> None:
    """Wait for every rank."""
    if world > 1:
        torch.distributed.barrier()


def all_gather_object(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if world == 1:
        return [obj]
    parts: list[Any] = [None] * world
    torch.distributed.all_gather_object(parts, obj)
    return parts


def all_reduce_sum_(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place; returns it."""
    if world > 1:
        torch.distributed.all_reduce(tensor)
    return tensor


def broadcast_(tensor: torch.Tensor, world: int, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` with rank ``src``'s, in place; returns it."""
    if world > 1:
        torch.distributed.broadcast(tensor, src)
    return tensor
