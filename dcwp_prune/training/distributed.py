"""DistributedDataParallel plumbing for runs started by ``torchrun`` (no home-made launcher)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["DistEnv", "all_reduce_sum", "barrier", "init_distributed", "wrap_ddp"]


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistEnv(rank, world, local)


def wrap_ddp(model: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    if not env.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)


def all_reduce_sum(t: Tensor, env: DistEnv) -> Tensor:
    """Sum ``t`` over ranks (returns it unchanged outside distributed runs)."""
    if env.enabled:
        backend = dist.get_backend()
        work = t.cuda() if backend == "nccl" else t.cpu()
        dist.all_reduce(work)
        return work.to(t.device)
    return t


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()
