"""The MMSeg exporter: one extracted sub-network as a ``backbone.``-prefixed checkpoint.

MMSeg's ``ResNet`` (``type='ResNet'``, 7x7 stem) uses torchvision's module names, so the
network's state dict under ``backbone.`` loads through ``init_cfg=dict(type='Pretrained',
checkpoint=FILE, prefix='backbone.')`` with no missing or unexpected keys. The file holds
tensors and plain data only, so MMEngine reads it with torch's default ``weights_only=True``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch

from pretrain.checkpoints.format import atomic_torch_save
from pretrain.models.plain_resnet import PlainResNet
from transfer.exporters import torchvision_state_dict

PREFIX = "backbone."


def mmseg_state_dict(plain: PlainResNet) -> Dict[str, "torch.Tensor"]:
    """The backbone's tensors under ``backbone.`` (a classifier, if any, is left out)."""
    return {PREFIX + k: v for k, v in torchvision_state_dict(plain).items() if not k.startswith("fc.")}


def plan_meta(plain: PlainResNet) -> dict:
    """Plain-data description of the network's channel plan, stored beside the weights."""
    plan = plain.plan
    return {"block": plan.block, "stem_channels": plan.stem_channels, "small_stem": plan.small_stem,
            "blocks": [len(s) for s in plan.stages], "stage_channels": list(plan.stage_channels)}


def export_mmseg(plain: PlainResNet, out: Path) -> Path:
    """Write ``{'state_dict': backbone.* tensors, 'meta': plan}`` for MMEngine's checkpoint loader."""
    atomic_torch_save({"state_dict": mmseg_state_dict(plain), "meta": {"slimbench_plan": plan_meta(plain)}}, out)
    return Path(out)
