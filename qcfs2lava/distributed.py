"""torchrun's process group: DDP training and sharded simulation (one shard per rank) join it here."""
from __future__ import annotations

import os

import torch

__all__ = ["world_size", "init"]


def world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(backend: str | None = None) -> tuple[int, int]:
    """(rank, world size), joining torchrun's process group on first use. ``backend``: gloo or nccl;
    by default nccl where CUDA is available (unless ``QCFS2LAVA_BACKEND=gloo``), else gloo."""
    world = world_size()
    if world > 1 and not torch.distributed.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() and os.environ.get("QCFS2LAVA_BACKEND") != "gloo" else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)
