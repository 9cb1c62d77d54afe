"""``SlimBenchResNet``: any extracted sub-network as an MMSeg backbone.

MMSeg's own ``ResNet`` expresses a width-w network only when every stage has ``64·w·2^i``
planes and the full block count with the 7x7 stem. DSPNet's depth variants (fewer blocks per
stage), small-stem networks and widths whose rounded channels do not follow that rule go through
this backbone instead: it builds ``PlainResNet`` from ``plan_resnet`` (the one place channel
counts are computed), keeps torchvision's module names (so the ``backbone.`` export loads into
it unchanged) and returns multi-level features like MMSeg's ``ResNet``, with the same
stride/dilation semantics (``contract_dilation`` included) for the dilated FCN configs.

Importing this module registers the backbone in MMSeg's ``MODELS`` registry; configs SlimBench
writes name it in ``custom_imports`` so MMSeg's own tools can rebuild them.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from pretrain.models.plain_resnet import PlainResNet
from pretrain.models.resnet import plan_resnet

from .compat import install_mmcv_ops

install_mmcv_ops()  # before any MMSeg import (see compat.py)

from mmengine.model import BaseModule  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402

_STEM = ("conv1", "bn1", "relu", "maxpool")


def _set_conv(conv: nn.Conv2d, stride: Optional[int] = None, dilation: Optional[int] = None) -> None:
    if stride is not None:
        conv.stride = (stride, stride)
    if dilation is not None and conv.kernel_size == (3, 3):
        conv.dilation = (dilation, dilation)
        conv.padding = (dilation, dilation)


@MODELS.register_module()
class SlimBenchResNet(BaseModule):
    """An extracted SlimBench sub-network (any width, depth and stem) returning res2..res5 features."""

    def __init__(self, depth: int, width: float = 1.0, blocks: Optional[Sequence[int]] = None,
                 stem: str = "imagenet", strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1), contract_dilation: bool = False,
                 out_indices: Sequence[int] = (0, 1, 2, 3), norm_cfg: Optional[dict] = None,
                 norm_eval: bool = False, init_cfg=None):
        super().__init__(init_cfg)
        if len(strides) != 4 or len(dilations) != 4:
            raise ValueError(f"SlimBenchResNet: strides and dilations need 4 entries, got {strides}, {dilations}")
        plain = PlainResNet(plan_resnet(int(depth), float(width), blocks, stem))
        self.plan = plain.plan
        self.out_indices = tuple(out_indices)
        self.norm_eval = norm_eval
        for name in _STEM:
            self.add_module(name, getattr(plain, name))
        for s in range(4):
            layer = getattr(plain, f"layer{s + 1}")
            self._dilate(layer, strides[s], dilations[s], contract_dilation)
            self.add_module(f"layer{s + 1}", layer)
        norm_type = (norm_cfg or {}).get("type", "BN")
        if norm_type in ("SyncBN", "MMSyncBN"):
            nn.SyncBatchNorm.convert_sync_batchnorm(self)
        elif norm_type != "BN":
            raise ValueError(f"SlimBenchResNet: norm_cfg type {norm_type!r} is not supported; expected BN or SyncBN")

    @staticmethod
    def _dilate(layer: nn.Sequential, stride: int, dilation: int, contract: bool) -> None:
        # MMSeg's ResLayer: the first block may carry half the dilation; the stride sits on the
        # 3x3 (conv2 of a bottleneck, conv1 of a basic block, whose conv2 stays undilated).
        for b, block in enumerate(layer):
            d = dilation // 2 if b == 0 and contract and dilation > 1 else dilation
            strided = block.conv2 if hasattr(block, "conv3") else block.conv1
            _set_conv(strided, stride if b == 0 else None, d)
            if b == 0 and block.downsample is not None:
                block.downsample[0].stride = (stride, stride)

    def output_channels(self) -> Tuple[int, ...]:
        """Channels of the returned feature maps, in ``out_indices`` order."""
        return tuple(self.plan.stage_channels[i] for i in self.out_indices)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for s in range(4):
            x = getattr(self, f"layer{s + 1}")(x)
            if s in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True):
        """Keep BatchNorm in eval mode when ``norm_eval`` (frozen statistics), as MMSeg's ResNet does."""
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self
