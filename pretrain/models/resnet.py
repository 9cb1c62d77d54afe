"""The slimmable ResNet family (S-ResNet-18/34/50/101) and its channel plan.

``plan_resnet`` is the one place where the channel rule of DESIGN.md becomes channel counts;
the slimmable network, the extracted plain network and the complexity table all read it.
Module names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``downsample.0``),
so width 1.0 of an extracted network is a torchvision ResNet state dict.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from pretrain.models.slim_ops import SlimConv2d, SlimLinear, SwitchableBatchNorm2d, channels
from pretrain.models.spec import SubnetSpec, check_contained

# depth -> (block kind, blocks per stage)
ARCHS: Dict[int, Tuple[str, Tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
STAGE_PLANES = (64, 128, 256, 512)
STEMS = ("imagenet", "small")


@dataclass(frozen=True)
class BlockPlan:
    """Channel counts of one residual block at one width."""

    in_channels: int
    inner: int
    out_channels: int
    stride: int
    downsample: bool


@dataclass(frozen=True)
class ResNetPlan:
    """Channel counts and strides of a whole ResNet at one sub-network spec."""

    block: str
    stem_channels: int
    small_stem: bool
    stages: Tuple[Tuple[BlockPlan, ...], ...]

    @property
    def stage_channels(self) -> Tuple[int, ...]:
        """Output channels of res2..res5."""
        return tuple(stage[-1].out_channels for stage in self.stages)

    @property
    def stage_strides(self) -> Tuple[int, ...]:
        """Total strides of res2..res5 relative to the input."""
        stride = 1 if self.small_stem else 4
        out = []
        for stage in self.stages:
            stride *= stage[0].stride
            out.append(stride)
        return tuple(out)

    @property
    def num_features(self) -> int:
        """Size of the pooled feature vector."""
        return self.stage_channels[-1]


def arch_name(depth: int) -> str:
    """Architecture name of a slimmable ResNet, e.g. ``slim_resnet50``."""
    return f"slim_resnet{depth}"


def parse_arch(name: str) -> int:
    """Depth of an architecture name ``slim_resnet{18,34,50,101}``."""
    known = ", ".join(arch_name(d) for d in ARCHS)
    if not name.startswith("slim_resnet") or not name[len("slim_resnet"):].isdigit():
        raise ValueError(f"unknown architecture {name!r}; expected one of {known}")
    depth = int(name[len("slim_resnet"):])
    if depth not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; expected one of {known}")
    return depth


def plan_resnet(depth: int, width: float = 1.0, blocks: Optional[Sequence[int]] = None,
                stem: str = "imagenet") -> ResNetPlan:
    """Channel plan of ResNet-``depth`` at ``width`` keeping ``blocks`` leading blocks per stage.

    Basic blocks: out = int(planes*w). Bottlenecks (SlimCLR): out = int(4*planes*w), inner = out // 4.
    """
    kind, full_blocks = ARCHS[depth]
    blocks = tuple(full_blocks if blocks is None else blocks)
    expansion = 4 if kind == "bottleneck" else 1
    stem_ch = channels(64, width)
    in_ch, full_in = stem_ch, 64
    stages = []
    for s, (planes, n) in enumerate(zip(STAGE_PLANES, blocks)):
        out = channels(planes * expansion, width)
        inner = out // expansion
        stride = 1 if s == 0 else 2
        stage = []
        for b in range(n):
            # Whether a block has a projection shortcut is a property of the full network.
            ds = b == 0 and (stride != 1 or full_in != planes * expansion)
            stage.append(BlockPlan(in_ch, inner, out, stride if b == 0 else 1, ds))
            in_ch = out
        full_in = planes * expansion
        stages.append(tuple(stage))
    return ResNetPlan(kind, stem_ch, stem == "small", tuple(stages))


class SlimBasicBlock(nn.Module):
    """Basic residual block (two 3x3 convolutions) with slimmable layers."""

    def __init__(self, plans: Sequence[BlockPlan]):
        super().__init__()
        full = plans[0]
        self.conv1 = SlimConv2d(full.in_channels, full.inner, 3, full.stride, 1, bias=False)
        self.bn1 = SwitchableBatchNorm2d([p.inner for p in plans])
        self.conv2 = SlimConv2d(full.inner, full.out_channels, 3, 1, 1, bias=False)
        self.bn2 = SwitchableBatchNorm2d([p.out_channels for p in plans])
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _slim_downsample(plans)

    def set_plan(self, plan: BlockPlan, index: int) -> None:
        self.conv1.active_out = plan.inner
        self.conv2.active_out = plan.out_channels
        _set_bn(self, index)
        if self.downsample is not None:
            self.downsample[0].active_out = plan.out_channels

    def last_bn(self) -> SwitchableBatchNorm2d:
        return self.bn2

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class SlimBottleneck(nn.Module):
    """Bottleneck block, stride on the 3x3 (ResNet v1.5), with slimmable layers."""

    def __init__(self, plans: Sequence[BlockPlan]):
        super().__init__()
        full = plans[0]
        self.conv1 = SlimConv2d(full.in_channels, full.inner, 1, bias=False)
        self.bn1 = SwitchableBatchNorm2d([p.inner for p in plans])
        self.conv2 = SlimConv2d(full.inner, full.inner, 3, full.stride, 1, bias=False)
        self.bn2 = SwitchableBatchNorm2d([p.inner for p in plans])
        self.conv3 = SlimConv2d(full.inner, full.out_channels, 1, bias=False)
        self.bn3 = SwitchableBatchNorm2d([p.out_channels for p in plans])
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _slim_downsample(plans)

    def set_plan(self, plan: BlockPlan, index: int) -> None:
        self.conv1.active_out = plan.inner
        self.conv2.active_out = plan.inner
        self.conv3.active_out = plan.out_channels
        _set_bn(self, index)
        if self.downsample is not None:
            self.downsample[0].active_out = plan.out_channels

    def last_bn(self) -> SwitchableBatchNorm2d:
        return self.bn3

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _slim_downsample(plans: Sequence[BlockPlan]) -> Optional[nn.Sequential]:
    full = plans[0]
    if not full.downsample:
        return None
    return nn.Sequential(
        SlimConv2d(full.in_channels, full.out_channels, 1, full.stride, bias=False),
        SwitchableBatchNorm2d([p.out_channels for p in plans]),
    )


def _set_bn(module: nn.Module, index: int) -> None:
    for m in module.modules():
        if isinstance(m, SwitchableBatchNorm2d):
            m.active_index = index


class SlimResNet(nn.Module):
    """Slimmable ResNet: one weight-sharing network holding every listed width (and depth).

    ``set_subnet(spec)`` selects the sub-network that ``forward`` runs; ``forward`` returns the
    pooled features, or logits when the network has a classifier (``num_classes``).
    """

    def __init__(self, depth: int = 50, widths: Sequence[float] = (1.0, 0.75, 0.5, 0.25),
                 stem: str = "imagenet", num_classes: Optional[int] = None,
                 zero_init_residual: bool = False):
        super().__init__()
        if depth not in ARCHS:
            raise ValueError(f"unknown ResNet depth {depth}; expected one of {sorted(ARCHS)}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; expected one of {STEMS}")
        widths = [round(float(w), 6) for w in widths]
        if not widths or any(not 0 < w <= 1 for w in widths) or widths != sorted(set(widths), reverse=True):
            raise ValueError(f"widths must be distinct, in (0, 1] and descending, got {widths}")
        self.depth, self.stem, self.num_classes = depth, stem, num_classes
        self.widths = widths
        self.block_kind, self.stage_blocks = ARCHS[depth]
        self.zero_init_residual = zero_init_residual
        plans = [plan_resnet(depth, w, stem=stem) for w in widths]
        full = plans[0]

        if stem == "small":
            self.conv1 = SlimConv2d(3, full.stem_channels, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = SlimConv2d(3, full.stem_channels, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = SwitchableBatchNorm2d([p.stem_channels for p in plans])
        self.relu = nn.ReLU(inplace=True)
        block_cls = SlimBottleneck if self.block_kind == "bottleneck" else SlimBasicBlock
        for s in range(4):
            blocks = [block_cls([p.stages[s][b] for p in plans]) for b in range(self.stage_blocks[s])]
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = SlimLinear(full.num_features, num_classes) if num_classes else None
        self._init_weights()
        self.set_subnet(SubnetSpec(widths[0]))

    @property
    def arch(self) -> str:
        return arch_name(self.depth)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.zero_init_residual:
            for layer in self.stages():
                for block in layer:
                    for bn in block.last_bn().bn:
                        nn.init.zeros_(bn.weight)

    def stages(self) -> List[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    # -- sub-network selection -------------------------------------------------------------
    def check_subnet(self, spec, allow_any_width: bool = False) -> SubnetSpec:
        """Parse ``spec`` and check that this network contains it."""
        return check_contained(SubnetSpec.parse(spec), self.widths, self.stage_blocks, allow_any_width)

    def width_index(self, width: float) -> int:
        return [round(w, 6) for w in self.widths].index(round(float(width), 6))

    def plan(self, spec) -> ResNetPlan:
        spec = SubnetSpec.parse(spec)
        return plan_resnet(self.depth, spec.width, spec.full_depth(self.stage_blocks), self.stem)

    def set_subnet(self, spec) -> SubnetSpec:
        """Make ``forward`` run the sub-network ``spec`` (a listed width, any contained depth)."""
        spec = self.check_subnet(spec)
        index = self.width_index(spec.width)
        plan = self.plan(spec)
        self.conv1.active_out = plan.stem_channels
        self.bn1.active_index = index
        for layer, stage in zip(self.stages(), plan.stages):
            for block, block_plan in zip(layer, stage):
                block.set_plan(block_plan, index)
        self.active_spec = spec
        self._active_blocks = spec.full_depth(self.stage_blocks)
        return spec

    @contextlib.contextmanager
    def subnet(self, spec) -> Iterator[SubnetSpec]:
        """Run a block of code at ``spec``, then restore the previous sub-network."""
        previous = self.active_spec
        try:
            yield self.set_subnet(spec)
        finally:
            self.set_subnet(previous)

    def subnets(self, depths: Sequence[Sequence[int]] = ()) -> List[SubnetSpec]:
        """Every listed width, and each width at every given depth."""
        out = [SubnetSpec(w) for w in self.widths]
        out += [SubnetSpec(w, tuple(d)).canonical(self.stage_blocks) for d in depths for w in self.widths]
        return list(dict.fromkeys(out))

    # -- forward ---------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map after the last stage at the active sub-network."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for layer, n in zip(self.stages(), self._active_blocks):
            for block in layer[:n]:
                x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.forward_features(x)), 1)
        return self.fc(x) if self.fc is not None else x

    def num_features(self, spec=None) -> int:
        """Pooled feature size of ``spec`` (default: the active sub-network)."""
        return self.plan(spec if spec is not None else self.active_spec).num_features

    def arch_config(self) -> dict:
        """The constructor arguments, as stored in a checkpoint."""
        return {"arch": self.arch, "depth": self.depth, "widths": list(self.widths), "stem": self.stem,
                "num_classes": self.num_classes, "zero_init_residual": self.zero_init_residual}

    @classmethod
    def from_arch_config(cls, cfg: dict) -> "SlimResNet":
        return cls(depth=int(cfg["depth"]), widths=cfg["widths"], stem=cfg.get("stem", "imagenet"),
                   num_classes=cfg.get("num_classes"), zero_init_residual=cfg.get("zero_init_residual", False))
