"""``torchrun`` processes: join the process group once (NCCL on GPUs, gloo on CPUs) and say which rank this is."""

from __future__ import annotations

import os

import torch


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; joins the process group when ``WORLD_SIZE`` > 1 (``torchrun``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world
