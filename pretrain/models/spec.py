"""Sub-network specification: a width multiplier and, optionally, blocks kept per stage.

The canonical string form (``w0.5``, ``w1.0-d2.2.2.2``) is used everywhere a sub-network is
named: CLI, file names, results rows and the leaderboard.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from pretrain.errors import SlimBenchError

_SPEC_RE = re.compile(r"^w(?P<width>\d+(?:\.\d+)?)(?:-d(?P<depth>\d+(?:\.\d+)*))?$")


class SubnetError(SlimBenchError):
    """A sub-network name that is malformed or not contained in a network."""


def format_width(width: float) -> str:
    """Canonical text of a width multiplier: ``1.0``, ``0.75``, ``0.5``."""
    return repr(round(float(width), 6))


@dataclass(frozen=True, order=True)
class SubnetSpec:
    """A sub-network: width multiplier plus, optionally, the leading blocks kept per stage."""

    width: float
    depth: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        w = float(self.width)
        if not (0.0 < w <= 1.0):
            raise SubnetError(f"width must be in (0, 1], got {self.width!r}")
        object.__setattr__(self, "width", round(w, 6))
        if self.depth is not None:
            depth = tuple(int(d) for d in self.depth)
            if not depth or min(depth) < 1:
                raise SubnetError(f"every stage keeps at least one block, got depth {self.depth!r}")
            object.__setattr__(self, "depth", depth)

    @classmethod
    def parse(cls, text: "str | SubnetSpec") -> "SubnetSpec":
        """Parse the canonical form (``w0.5``, ``w1.0-d2.2.2.2``)."""
        if isinstance(text, SubnetSpec):
            return text
        m = _SPEC_RE.match(str(text).strip())
        if not m:
            raise SubnetError(
                f"malformed sub-network {text!r}: expected 'w<width>' or "
                f"'w<width>-d<blocks>.<blocks>...' such as 'w0.5' or 'w1.0-d2.2.2.2'"
            )
        depth = m.group("depth")
        return cls(float(m.group("width")), tuple(int(d) for d in depth.split(".")) if depth else None)

    def __str__(self) -> str:
        s = f"w{format_width(self.width)}"
        if self.depth is not None:
            s += "-d" + ".".join(str(d) for d in self.depth)
        return s

    def full_depth(self, stage_blocks: Sequence[int]) -> Tuple[int, ...]:
        """Blocks kept per stage, with ``None`` meaning every block."""
        return tuple(stage_blocks) if self.depth is None else self.depth

    def canonical(self, stage_blocks: Sequence[int]) -> "SubnetSpec":
        """Drop a depth that keeps every block, so ``w1.0-d3.4.6.3`` and ``w1.0`` name one network."""
        if self.depth is not None and tuple(self.depth) == tuple(stage_blocks):
            return SubnetSpec(self.width)
        return self


def parse_subnets(text: str) -> list:
    """Parse a comma-separated list of sub-network names."""
    return [SubnetSpec.parse(t) for t in str(text).split(",") if t.strip()]


def check_contained(spec: SubnetSpec, widths: Sequence[float], stage_blocks: Sequence[int],
                    allow_any_width: bool = False) -> SubnetSpec:
    """Raise a SubnetError listing what the network contains if ``spec`` is not part of it."""
    listed = ", ".join(format_width(w) for w in widths)
    max_depth = ".".join(str(b) for b in stage_blocks)
    if not allow_any_width and round(spec.width, 6) not in [round(float(w), 6) for w in widths]:
        raise SubnetError(
            f"sub-network {spec} is not in this network: its widths are {listed} "
            f"(another width needs BN calibration data: --calib-data DIR, or calib_loader=); "
            f"depths go up to d{max_depth}"
        )
    if spec.width > max(widths) + 1e-9:
        raise SubnetError(f"width {format_width(spec.width)} exceeds the largest width {format_width(max(widths))}")
    if spec.depth is not None:
        if len(spec.depth) != len(stage_blocks) or any(d > b for d, b in zip(spec.depth, stage_blocks)):
            raise SubnetError(
                f"sub-network {spec} is not in this network: it has {len(stage_blocks)} stages "
                f"of at most d{max_depth} blocks; widths {listed}"
            )
    return spec.canonical(stage_blocks)
