"""Detectron2 backbones and the C4 head for sub-networks Detectron2's own ResNet cannot express.

Detectron2's ``build_resnet_backbone`` scales every stage from ``RES2_OUT_CHANNELS`` and
``WIDTH_PER_GROUP``, insists on 64 channels for basic blocks and has only the 7x7 stem. Narrow
R18/R34, depth variants (DSPNet's ``w1.0-d2.2.2.2``), small-image stems and widths whose channels
do not scale by exact powers of two are built here instead, from the same channel plan the
extracted network was built from (``pretrain.models.resnet.plan_resnet``), with Detectron2's own blocks
and module names, so an exported ``.pkl`` loads into them by Detectron2's checkpointer.

``cfg.MODEL.SLIMBENCH`` names the plan (depth, width, blocks per stage, stem).
"""
from __future__ import annotations

from typing import List, Sequence

from transfer.detection.compat import import_detectron2

import_detectron2()

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from detectron2.config import CfgNode  # noqa: E402
from detectron2.layers import Conv2d, ShapeSpec, get_norm  # noqa: E402
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY  # noqa: E402
from detectron2.modeling.backbone import FPN  # noqa: E402
from detectron2.modeling.backbone.fpn import LastLevelMaxPool  # noqa: E402
from detectron2.modeling.backbone.resnet import (BasicBlock, BasicStem, BottleneckBlock,  # noqa: E402
                                                 CNNBlockBase, ResNet)
from detectron2.modeling.roi_heads import Res5ROIHeads  # noqa: E402

from pretrain.errors import ConfigError  # noqa: E402
from pretrain.models.resnet import BlockPlan, ResNetPlan, plan_resnet  # noqa: E402

BACKBONE_NAME = "build_slimbench_resnet_backbone"
FPN_BACKBONE_NAME = "build_slimbench_resnet_fpn_backbone"
SLIMBENCH_BACKBONES = (BACKBONE_NAME, FPN_BACKBONE_NAME)


def add_slimbench_config(cfg: CfgNode) -> CfgNode:
    """Add ``MODEL.SLIMBENCH`` (the channel plan of the sub-network) to a Detectron2 config."""
    cfg.MODEL.SLIMBENCH = CfgNode()
    cfg.MODEL.SLIMBENCH.DEPTH = 50
    cfg.MODEL.SLIMBENCH.WIDTH = 1.0
    cfg.MODEL.SLIMBENCH.BLOCKS = []          # blocks kept per stage; empty keeps every block
    cfg.MODEL.SLIMBENCH.STEM = "imagenet"    # "imagenet" (7x7/2 + max-pool) or "small" (3x3/1)
    cfg.MODEL.SLIMBENCH.WIDTHS = []          # the slimmable detector's widths (transfer.detection.slimmable)
    return cfg


def plan_from_cfg(cfg: CfgNode) -> ResNetPlan:
    """The channel plan ``cfg.MODEL.SLIMBENCH`` names."""
    s = cfg.MODEL.SLIMBENCH
    return plan_resnet(s.DEPTH, s.WIDTH, tuple(s.BLOCKS) or None, s.STEM)


class SmallStem(CNNBlockBase):
    """The small-image stem: 3x3 stride-1 convolution, norm, ReLU, no max-pool (stride 1)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm="BN"):
        super().__init__(in_channels, out_channels, 1)
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))

    def forward(self, x):
        return F.relu_(self.conv1(x))


def build_stage(plans: Sequence[BlockPlan], block: str, norm) -> List[CNNBlockBase]:
    """Detectron2 blocks for one stage of a channel plan (stride on the 3x3, as torchvision)."""
    blocks = []
    for p in plans:
        if block == "bottleneck":
            b = BottleneckBlock(p.in_channels, p.out_channels, bottleneck_channels=p.inner, stride=p.stride,
                                num_groups=1, norm=norm, stride_in_1x1=False)
        else:
            b = BasicBlock(p.in_channels, p.out_channels, stride=p.stride, norm=norm)
        # Detectron2 adds a projection exactly when channels change; the plan decides it from the
        # full network. They agree for every width of the family; refuse a plan where they would not.
        if (b.shortcut is not None) != p.downsample:
            raise ConfigError(f"sub-network block {p} has {'a' if p.downsample else 'no'} projection shortcut, "
                              f"which Detectron2's {type(b).__name__} cannot express")
        blocks.append(b)
    return blocks


class SlimBenchResNet(ResNet):
    """Detectron2 ResNet built from a SlimBench channel plan (module names ``stem``, ``res2``-``res5``)."""

    def __init__(self, plan: ResNetPlan, out_features: Sequence[str], norm="BN", freeze_at: int = 0):
        stem = (SmallStem if plan.small_stem else BasicStem)(3, plan.stem_channels, norm=norm)
        stages = [build_stage(stage, plan.block, norm) for stage in plan.stages]
        super().__init__(stem, stages, out_features=list(out_features), freeze_at=freeze_at)
        self.plan = plan
        # The extracted network's declaration (PlainResNet.output_shape reads the same plan) is
        # what heads size themselves from; check Detectron2 computed the same before trusting it.
        declared = declared_shapes(plan)
        for name in self._out_features:
            if (self._out_feature_channels[name], self._out_feature_strides[name]) != declared[name]:
                raise ConfigError(f"backbone {name}: built ({self._out_feature_channels[name]}, "
                                  f"{self._out_feature_strides[name]}) but the plan declares {declared[name]}")

    def output_shape(self):
        declared = declared_shapes(self.plan)
        return {name: ShapeSpec(channels=declared[name][0], stride=declared[name][1]) for name in self._out_features}


def declared_shapes(plan: ResNetPlan):
    """``{res2..res5: (channels, stride)}`` of a plan, as ``PlainResNet.output_shape`` declares it."""
    return {f"res{s + 2}": (c, st) for s, (c, st) in enumerate(zip(plan.stage_channels, plan.stage_strides))}


@BACKBONE_REGISTRY.register()
def build_slimbench_resnet_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> SlimBenchResNet:
    """The sub-network of ``cfg.MODEL.SLIMBENCH`` with ``MODEL.RESNETS.OUT_FEATURES``, ``NORM``, ``FREEZE_AT``."""
    if input_shape.channels != 3:
        raise ConfigError(f"SlimBench backbones take RGB input, got {input_shape.channels} channels")
    return SlimBenchResNet(plan_from_cfg(cfg), cfg.MODEL.RESNETS.OUT_FEATURES, cfg.MODEL.RESNETS.NORM,
                           cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_slimbench_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """FPN over the SlimBench backbone; levels are named by stride, so a small stem gives ``p0``-``p4``."""
    bottom_up = build_slimbench_resnet_backbone(cfg, input_shape)
    top = LastLevelMaxPool()
    top.in_feature = fpn_level_name(bottom_up.output_shape()[cfg.MODEL.FPN.IN_FEATURES[-1]].stride)
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=top, fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


def fpn_level_name(stride: int) -> str:
    """Detectron2's FPN output name for a stride (``p{log2 stride}``)."""
    return f"p{stride.bit_length() - 1}"


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """The C4 head with a norm after res5, as MoCo fine-tunes it (BN-trained backbones need it).

    With a SlimBench backbone, res5 is the plan's last stage, so narrow, basic-block and depth
    variants keep the extracted network's own res5.
    """

    @classmethod
    def _build_res5_block(cls, cfg: CfgNode):
        norm = cfg.MODEL.RESNETS.NORM
        if cfg.MODEL.BACKBONE.NAME in SLIMBENCH_BACKBONES:
            plan = plan_from_cfg(cfg)
            res5, out_channels = nn.Sequential(*build_stage(plan.stages[3], plan.block, norm)), plan.stage_channels[3]
        else:
            res5, out_channels = super()._build_res5_block(cfg)
        res5.add_module("norm", get_norm(norm, out_channels))
        return res5, out_channels
