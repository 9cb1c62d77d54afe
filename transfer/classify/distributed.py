"""DDP plumbing for classification protocols: the same code on one CPU process or N GPUs under torchrun."""
from __future__ import annotations

import os
from typing import List

import torch
import torch.distributed as dist


def init_from_env() -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1); return this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return torch.device(f"cuda:{local_rank}" if cuda else "cpu")


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """True on the process that logs and writes results."""
    return rank() == 0


def shard(n: int) -> List[int]:
    """This process's share of ``range(n)`` (every index exactly once across processes, no padding)."""
    return list(range(rank(), n, world_size()))


def sum_across(values: List[float], device: torch.device) -> List[float]:
    """Element-wise sum of ``values`` over every process."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel when a process group is up, else unchanged."""
    if not dist.is_initialized():
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
