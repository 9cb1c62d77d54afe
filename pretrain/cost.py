"""What a pretraining run cost: wall time, devices, images, steps and training FLOPs.

The papers' claim is that one slimmable run is cheaper than pretraining each width on its own,
so every checkpoint carries its cost. FLOPs are counted by ``torch.utils.flop_counter`` on real
training steps (forward and backward of every network the step runs, heads and momentum/target
encoders included; 2 FLOPs per multiply-add). A step's FLOPs depend only on what the method runs
in it (its ``step_signature``: the slow start, DSPNet's sampled sub-networks), so each signature
is counted once, on the first step that has it, and reused for the others. Costs of resumed
segments add up; an imported checkpoint has none (``unknown``).
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode


def device_kind(device: torch.device) -> str:
    """``cpu`` or the accelerator's name, e.g. ``cuda (NVIDIA A100-SXM4-80GB)``."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


@dataclass
class Segment:
    """One uninterrupted stretch of a run (a start or a resumption)."""

    device: str
    devices: int
    steps: int = 0
    wall_time_s: float = 0.0


@dataclass
class TrainingCost:
    """The cost of a run so far, summed over its segments."""

    images_seen: int = 0
    steps: int = 0
    train_flops: float = 0.0
    flops_per_step: Dict[str, float] = field(default_factory=dict)   # step signature -> FLOPs (all ranks)
    segments: List[Segment] = field(default_factory=list)

    @property
    def wall_time_s(self) -> float:
        return sum(s.wall_time_s for s in self.segments)

    @property
    def device_seconds(self) -> float:
        """Wall time times the devices that ran it, per segment."""
        return sum(s.wall_time_s * s.devices for s in self.segments)

    def start_segment(self, device: str, devices: int) -> Segment:
        """Begin a new segment on ``devices`` processes of kind ``device``."""
        self.segments.append(Segment(device, devices))
        return self.segments[-1]

    def add_step(self, signature: str, images: int) -> None:
        """Account one finished optimizer step of ``signature`` over ``images`` images (all ranks)."""
        self.steps += 1
        self.images_seen += images
        self.train_flops += self.flops_per_step[signature]
        self.segments[-1].steps += 1

    def to_dict(self) -> Dict[str, Any]:
        """Plain data, stored in the checkpoint's ``extra['cost']`` and in the training state."""
        d = asdict(self)
        d.update(wall_time_s=self.wall_time_s, device_seconds=self.device_seconds,
                 devices=sorted({s.devices for s in self.segments}),
                 device=sorted({s.device for s in self.segments}))
        return d

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "TrainingCost":
        """Read back ``to_dict``; ``None`` (a run from before costs were kept) is an empty cost."""
        if not d:
            return cls()
        return cls(images_seen=int(d["images_seen"]), steps=int(d["steps"]), train_flops=float(d["train_flops"]),
                   flops_per_step={str(k): float(v) for k, v in d["flops_per_step"].items()},
                   segments=[Segment(**s) for s in d["segments"]])


@contextlib.contextmanager
def count_flops(enabled: bool) -> Iterator[Optional[FlopCounterMode]]:
    """A ``FlopCounterMode`` around a step when ``enabled`` (its total is read after the block)."""
    if not enabled:
        yield None
        return
    counter = FlopCounterMode(display=False)
    with counter:
        yield counter


def describe_cost(cost: Optional[Mapping[str, Any]]) -> str:
    """One line for ``bench list subnets``: ``unknown`` when the checkpoint has no cost record."""
    if not cost:
        return "training cost: unknown (no cost record, e.g. an imported or random-init checkpoint)"
    devices = "/".join(str(d) for d in cost["devices"])
    return (f"training cost: {cost['train_flops'] / 1e15:.3f} PFLOPs, {cost['steps']} steps, "
            f"{cost['images_seen']} images, {cost['wall_time_s']:.0f} s wall on {devices} x "
            f"{'/'.join(cost['device'])} ({cost['device_seconds']:.0f} device-s), "
            f"{len(cost['segments'])} segment(s)")
