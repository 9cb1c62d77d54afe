"""The optimisation and runtime settings of one MMSeg training run.

Its own module, free of MMEngine imports, so that the suite's ``params:`` schema (``Params`` in
``protocol.py``) extends it without importing MMSeg, and ``runner_config`` reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal


@dataclass
class Schedule:
    """SGD with a poly or step schedule, checkpoints and logging (defaults: MMSeg's 20k-iteration recipe)."""

    iterations: int = 20000
    batch_size: int = 4                     # per process (MMSeg's convention); 4 processes x 4 = 16
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
