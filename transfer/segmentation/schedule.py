"""The optimisation and runtime settings of one MMSeg training run, and how its global batch is split.

Its own module, free of MMEngine imports, so that the suite's ``params:`` schema (``Params`` in
``protocol.py``) extends it without importing MMSeg, and ``runner_config`` reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional

from pretrain.errors import ConfigError


@dataclass
class Schedule:
    """SGD with a poly or step schedule, checkpoints and logging (defaults: MMSeg's 20k-iteration recipe).

    ``iterations``, ``checkpoint_interval`` and ``log_interval`` count optimizer updates; when a
    process accumulates gradients over several steps, MMEngine's loop counts every step, so
    ``runner_config`` multiplies them by the accumulation count.
    """

    iterations: int = 20000
    batch_size: int = 16                    # global: images per optimizer update over all processes
    max_batch_per_step: Optional[int] = None  # most images one process loads per step; more accumulate
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["poly", "step"] = "poly"
    power: float = 0.9
    min_lr: float = 1e-4
    steps: List[int] = field(default_factory=list)   # milestones of the step schedule
    checkpoint_interval: int = 4000
    log_interval: int = 50
    num_workers: int = 2


@dataclass(frozen=True)
class BatchSplit:
    """A global batch over processes: each loads ``per_step`` images ``accumulative_counts`` times per update."""

    global_batch: int
    processes: int
    per_step: int
    accumulative_counts: int

    @property
    def per_process(self) -> int:
        return self.per_step * self.accumulative_counts

    def as_dict(self) -> dict:
        return {"global": self.global_batch, "processes": self.processes, "per_process": self.per_process,
                "per_step": self.per_step, "accumulative_counts": self.accumulative_counts}


def split_batch(global_batch: int, processes: int, max_per_step: Optional[int] = None) -> BatchSplit:
    """Each process's share of ``global_batch``, in the fewest steps of at most ``max_per_step`` images.

    ConfigError when the processes cannot share the batch evenly (the published batch cannot be met).
    """
    if processes < 1 or global_batch % processes:
        raise ConfigError(f"params.batch_size {global_batch} (global) cannot be split evenly over {processes} "
                          f"processes; run on a number of processes that divides it, or set params.batch_size "
                          f"(this changes the protocol's batch)")
    per_process = global_batch // processes
    counts = 1
    if max_per_step is not None:
        # the fewest accumulation steps whose equal share fits max_per_step (a divisor of per_process)
        counts = next(c for c in range(1, per_process + 1) if per_process % c == 0 and per_process // c <= max_per_step)
    return BatchSplit(global_batch, processes, per_process // counts, counts)
