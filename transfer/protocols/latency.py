"""``latency``: batch-1 latency and batch-N throughput of every sub-network on the current device.

Median of ``repeats`` timed calls after ``warmup`` calls; the device, thread count and dtype are
stored with the run.
"""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Optional

import torch

from pretrain.models.complexity import default_resolution

from .base import Protocol, Result, RunContext, register_protocol
from .complexity import NoData, subnet_module

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LatencyParams:
    resolution: Optional[int] = None  # None: by the checkpoint's stem (224, or 32 for the small stem)
    batch_size: int = 64             # the N of the throughput measurement
    repeats: int = 20
    warmup: int = 5
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    threads: Optional[int] = None    # torch CPU threads; default: leave torch's setting
    channels_last: bool = False

    def validate(self) -> None:
        if min(self.resolution or 1, self.batch_size, self.repeats) < 1 or self.warmup < 0:
            raise ValueError("resolution, batch_size and repeats must be positive, warmup >= 0")


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` (synchronising CUDA so the kernel time is counted)."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@register_protocol
class LatencyProtocol(Protocol):
    name = "latency"
    Params = LatencyParams
    Dataset = NoData
    description = "batch-1 latency (ms) and batch-N throughput (images/s) per sub-network"

    def run(self, ctx: RunContext) -> Iterator[Result]:
        p, device = ctx.params, ctx.device
        if p.threads is not None:
            torch.set_num_threads(p.threads)
        dtype = DTYPES[p.dtype]
        res = p.resolution or default_resolution(ctx.checkpoint.arch.get("stem", "imagenet"))
        fmt = torch.channels_last if p.channels_last else torch.contiguous_format
        ctx.info.update(device=str(device), threads=torch.get_num_threads(), dtype=p.dtype,
                        channels_last=p.channels_last, batch_size=p.batch_size, resolution=res,
                        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
        for spec in ctx.subnets:
            net = subnet_module(ctx.checkpoint, spec).to(device=device, dtype=dtype, memory_format=fmt).eval()
            one = torch.randn(1, 3, res, res, device=device, dtype=dtype).to(memory_format=fmt)
            many = torch.randn(p.batch_size, 3, res, res, device=device,
                               dtype=dtype).to(memory_format=fmt)
            with torch.inference_mode():
                latency = median_seconds(lambda: net(one), p.repeats, p.warmup, device)
                batch = median_seconds(lambda: net(many), max(3, p.repeats // 4), min(p.warmup, 2), device)
            log.info("latency %s: %.2f ms, %.0f img/s", spec, latency * 1e3, p.batch_size / batch)
            yield Result(str(spec), "latency_ms", latency * 1e3)
            yield Result(str(spec), "throughput_img_s", p.batch_size / batch)
