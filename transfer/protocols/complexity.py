"""``complexity``: parameters and MACs of every sub-network at the suite's resolution."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch.nn as nn

from pretrain.checkpoints.format import Checkpoint
from pretrain.models.complexity import default_resolution, measure, subnet_network
from pretrain.models.plain_resnet import PlainResNet
from pretrain.checkpoints.extract import extract, stores_statistics

from .base import Protocol, Result, RunContext, register_protocol


def subnet_module(checkpoint: Checkpoint, spec) -> PlainResNet:
    """The extracted sub-network; without stored BN statistics (an unlisted width, a depth variant),
    the same architecture untrained (counting and timing do not depend on the weights)."""
    if stores_statistics(checkpoint.widths, spec):
        return extract(checkpoint, spec)
    return subnet_network(checkpoint.build_model(), spec).eval()


@dataclass
class ComplexityParams:
    resolution: Optional[int] = None   # None: by the checkpoint's stem (default_resolution)
    num_classes: Optional[int] = None  # count a classifier of this size too (1000 for ImageNet figures)

    def validate(self) -> None:
        if self.resolution is not None and self.resolution < 8:
            raise ValueError(f"resolution must be at least 8, got {self.resolution}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")


@dataclass
class NoData:
    """Protocols that need no images have an empty dataset block."""

    def check(self, data_root) -> None:
        return None


@register_protocol
class ComplexityProtocol(Protocol):
    name = "complexity"
    Params = ComplexityParams
    Dataset = NoData
    description = "parameters and MACs per sub-network (torch.utils.flop_counter)"

    def run(self, ctx: RunContext) -> Iterator[Result]:
        p = ctx.params
        resolution = p.resolution or default_resolution(ctx.checkpoint.arch.get("stem", "imagenet"))
        ctx.info.update(resolution=resolution, num_classes=p.num_classes)
        for spec in ctx.subnets:
            net = subnet_module(ctx.checkpoint, spec)
            if p.num_classes:
                net.fc = nn.Linear(net.num_features, p.num_classes)
            c = measure(net, resolution)
            yield Result(str(spec), "params", float(c.params))
            yield Result(str(spec), "macs", float(c.macs))
