"""Data-parallel training of one run across several GPUs (``torchrun``).

Every rank builds the same algorithm from the same seed, takes its slice of each step's
minibatches, and gradients are averaged across ranks by a pre-step hook on the algorithm's
optimizer, so any algorithm that owns ``self.optimizer`` trains data-parallel unchanged.
Rank 0 evaluates, writes records and checkpoints; the others wait at a barrier.

    torchrun --nproc_per_node 4 -m moebench.cli.dg.train --dataset pacs ... --device cuda
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def init_world(device: torch.device) -> World:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, CUDA rank r uses GPU LOCAL_RANK."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def average_gradients(optimizer: torch.optim.Optimizer, world: World) -> Any:
    """Register a pre-step hook that all-reduces (averages) every gradient of ``optimizer``."""
    if world.size == 1:
        return None

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad.div_(world.size)

    return optimizer.register_step_pre_hook(hook)
