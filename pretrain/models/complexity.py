"""Parameters and MACs of sub-networks, counted by ``torch.utils.flop_counter`` on a real forward."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from pretrain.models.plain_resnet import PlainResNet
from pretrain.models.resnet import SlimResNet
from pretrain.models.spec import SubnetSpec


@dataclass(frozen=True)
class Complexity:
    """Size and cost of one network at one input resolution."""

    params: int
    macs: int
    resolution: int


def default_resolution(stem: str) -> int:
    """224 for the ImageNet stem; 32 (the CIFAR convention) for the small stem of 28-32 px datasets."""
    return 32 if stem == "small" else 224


def count_params(model: nn.Module) -> int:
    """Number of parameters (not buffers)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, resolution: int = 224) -> int:
    """Multiply-accumulates of one forward of a single 3-channel image (flop counter's FLOPs / 2)."""
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, resolution, resolution, device=device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def measure(model: nn.Module, resolution: int = 224) -> Complexity:
    """Params and MACs of a plain network."""
    return Complexity(count_params(model), count_macs(model, resolution), resolution)


def subnet_network(model: SlimResNet, spec, num_classes=None) -> PlainResNet:
    """A plain, untrained network with the channel plan of ``spec`` (for counting only)."""
    spec = SubnetSpec.parse(spec)
    return PlainResNet(model.plan(spec), num_classes=model.num_classes if num_classes is None else num_classes)


def complexity_table(model: SlimResNet, subnets: Sequence, resolution: int = 224,
                     num_classes=None) -> List[tuple]:
    """Rows of (spec, Complexity) for each sub-network; ``num_classes`` adds a classifier to count."""
    rows = []
    for spec in subnets:
        spec = SubnetSpec.parse(spec)
        rows.append((spec, measure(subnet_network(model, spec, num_classes), resolution)))
    return rows
