"""torch.distributed plumbing: initialise from torchrun's environment, gather across ranks.

Everything degrades to a single process when no process group is running, so the same
trainer code runs on one CPU process and under ``torchrun --nproc_per_node N`` unchanged.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_initialized() -> bool:
    """True when a process group is running."""
    return dist.is_available() and dist.is_initialized()


def init_from_env(timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group described by torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    Uses NCCL when CUDA is available and gloo otherwise; without WORLD_SIZE > 1 it starts nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    if is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, local_rank, device)


def shutdown() -> None:
    """Leave the process group if one is running."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_initialized():
        dist.barrier()


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, in rank order (no gradient, as in MoCo)."""
    if not is_initialized() or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def gather_with_local_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``concat_all_gather``, but this rank's slice is ``tensor`` itself, so it keeps its gradient."""
    if world_size() == 1:
        return tensor
    everyone = concat_all_gather(tensor.detach())
    start = rank() * tensor.shape[0]
    return torch.cat([everyone[:start], tensor, everyone[start + tensor.shape[0]:]], dim=0)


@torch.no_grad()
def batch_shuffle(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> "tuple[torch.Tensor, torch.Tensor]":
    """MoCo's shuffle: this rank's share of a random permutation of the global batch, and the inverse.

    The permutation is drawn on rank 0 (from ``generator``, a CPU generator) and broadcast, so every
    rank agrees; each rank must hold the same number of samples (the sampler drops the last uneven batch).
    """
    gathered = concat_all_gather(x)
    perm = torch.randperm(gathered.shape[0], generator=generator).to(x.device)
    if is_initialized():
        dist.broadcast(perm, src=0)
    return gathered[perm.view(world_size(), -1)[rank()]], torch.argsort(perm)


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, unshuffle: torch.Tensor) -> torch.Tensor:
    """Undo ``batch_shuffle``: this rank's original samples, in their original order."""
    return concat_all_gather(x)[unshuffle.view(world_size(), -1)[rank()]]


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


@torch.no_grad()
def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (a copy; the input is unchanged)."""
    out = tensor.detach().clone()
    if is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out)
        out /= dist.get_world_size()
    return out


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """Minimum of ``tensor`` over ranks (a copy; the input is unchanged)."""
    out = tensor.detach().clone()
    if is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.MIN)
    return out
