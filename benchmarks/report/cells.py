"""A leaderboard cell: one value per seed, each with the run that measured it (board rows and published
reference rows are made of them)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Measurement:
    """One seed's value in a cell, and the run that measured it."""

    seed: int
    value: float
    run_id: str


@dataclass(frozen=True)
class Cell:
    """One leaderboard cell: a value per seed, each the latest finished measurement of that seed."""

    measurements: Tuple[Measurement, ...]   # by seed

    @property
    def n(self) -> int:
        return len(self.measurements)

    @property
    def mean(self) -> float:
        return statistics.fmean(m.value for m in self.measurements)

    @property
    def std(self) -> Optional[float]:
        """The sample standard deviation over seeds; None for one seed."""
        return statistics.stdev(m.value for m in self.measurements) if self.n > 1 else None
