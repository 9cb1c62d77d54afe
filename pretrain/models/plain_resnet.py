"""An ordinary ResNet of arbitrary channel counts: what a sub-network becomes once extracted.

Plain ``nn.Conv2d`` / ``nn.BatchNorm2d``, torchvision module names, and a declared output
(``output_shape``) that every adapter reads instead of guessing channel counts.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from pretrain.models.resnet import BlockPlan, ResNetPlan


class BasicBlock(nn.Module):
    """torchvision-compatible basic block with explicit channel counts."""

    def __init__(self, p: BlockPlan):
        super().__init__()
        self.conv1 = nn.Conv2d(p.in_channels, p.inner, 3, p.stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(p.inner)
        self.conv2 = nn.Conv2d(p.inner, p.out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(p.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(p)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision-compatible bottleneck (stride on the 3x3) with explicit channel counts."""

    def __init__(self, p: BlockPlan):
        super().__init__()
        self.conv1 = nn.Conv2d(p.in_channels, p.inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(p.inner)
        self.conv2 = nn.Conv2d(p.inner, p.inner, 3, p.stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(p.inner)
        self.conv3 = nn.Conv2d(p.inner, p.out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(p.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(p)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(p: BlockPlan) -> Optional[nn.Sequential]:
    if not p.downsample:
        return None
    return nn.Sequential(nn.Conv2d(p.in_channels, p.out_channels, 1, p.stride, bias=False),
                         nn.BatchNorm2d(p.out_channels))


class PlainResNet(nn.Module):
    """A ResNet built from a channel plan; ``forward`` gives pooled features (or logits)."""

    def __init__(self, plan: ResNetPlan, num_classes: Optional[int] = None):
        super().__init__()
        self.plan = plan
        if plan.small_stem:
            self.conv1 = nn.Conv2d(3, plan.stem_channels, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, plan.stem_channels, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(plan.stem_channels)
        self.relu = nn.ReLU(inplace=True)
        block_cls = Bottleneck if plan.block == "bottleneck" else BasicBlock
        for s, stage in enumerate(plan.stages):
            self.add_module(f"layer{s + 1}", nn.Sequential(*(block_cls(p) for p in stage)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(plan.num_features, num_classes) if num_classes else nn.Identity()

    @property
    def num_features(self) -> int:
        return self.plan.num_features

    def output_shape(self) -> Dict[str, Tuple[int, int]]:
        """``{res2..res5: (channels, stride)}``, the declaration adapters size themselves from."""
        return {f"res{s + 2}": (c, st)
                for s, (c, st) in enumerate(zip(self.plan.stage_channels, self.plan.stage_strides))}

    def forward_stages(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Feature maps of res2..res5."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for s in range(4):
            x = getattr(self, f"layer{s + 1}")(x)
            out[f"res{s + 2}"] = x
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)["res5"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.forward_features(x)), 1)
        return self.fc(x)
