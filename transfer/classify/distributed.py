"""DDP plumbing for classification protocols: the same code on one CPU process or N GPUs under torchrun."""
from __future__ import annotations

import os
from typing import List, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

GATHER_CHUNK_BYTES = 64 << 20   # per process and all_gather call


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


def barrier() -> None:
    """Wait for every process (no-op in one process)."""
    if dist.is_initialized():
        dist.barrier()


def all_agree(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on every process (one all_reduce MIN)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def shard_sampler(dataset) -> Optional[DistributedSampler]:
    """This process's slice of ``dataset`` in order, or None in one process.

    Process r gets items r, r + W, r + 2W, ... of the W processes; the last round is padded with the
    first items so every process holds the same count (``gather_shards`` drops the padding).
    """
    if world_size() == 1:
        return None
    return DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=False, drop_last=False)


def gather_shards(local: torch.Tensor, total: int, device: torch.device,
                  chunk_bytes: int = GATHER_CHUNK_BYTES) -> torch.Tensor:
    """Rows dealt by ``shard_sampler`` gathered on every process, in dataset order, padding dropped (on CPU).

    Gathers ``chunk_bytes`` of each process's rows at a time through ``device`` (NCCL needs the GPU),
    so an ImageNet-sized feature matrix never has to fit in GPU memory at once.
    """
    world = world_size()
    if world == 1:
        return local[:total]
    row_bytes = max(1, local[0].numel() * local.element_size()) if len(local) else 1
    step = max(1, chunk_bytes // row_bytes)
    pieces = []
    for start in range(0, len(local), step):   # every process holds the same number of rows
        mine = local[start:start + step].to(device).contiguous()
        parts = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(parts, mine)
        # row j of process r is item r + j * world: interleaving the parts restores dataset order
        pieces.append(torch.stack(parts, dim=1).flatten(0, 1).cpu())
    return torch.cat(pieces)[:total] if pieces else local[:0].cpu()


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel when a process group is up, else unchanged."""
    if not dist.is_initialized():
        return module
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
