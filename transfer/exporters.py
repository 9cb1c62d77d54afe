"""Exporters: one extracted sub-network written in a downstream library's key convention.

Exporters are registered by name with the module that implements them, so that
``bench export --to torchvision`` never imports Detectron2 or MMSeg.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Dict

from pretrain.checkpoints.format import atomic_torch_save
from pretrain.models.plain_resnet import PlainResNet

# name -> "module:function"; each function is (plain network, output path) -> output path
EXPORTERS: Dict[str, str] = {
    "torchvision": "transfer.exporters:export_torchvision",
    "detectron2": "transfer.detection.export:export_detectron2",
    "mmseg": "transfer.segmentation.export:export_mmseg",
}


def get_exporter(name: str) -> Callable[[PlainResNet, Path], Path]:
    """The exporter registered as ``name``."""
    if name not in EXPORTERS:
        raise ValueError(f"unknown export target {name!r}; expected one of {sorted(EXPORTERS)}")
    module, fn = EXPORTERS[name].split(":")
    return getattr(importlib.import_module(module), fn)


def torchvision_state_dict(plain: PlainResNet) -> dict:
    """The network's state dict in torchvision's key names (no classifier when it has none)."""
    return {k: v.detach().cpu().clone() for k, v in plain.state_dict().items()}


def export_torchvision(plain: PlainResNet, out: Path) -> Path:
    """Write a torchvision-named ``.pth`` state dict; width 1.0 loads into ``torchvision.models.resnetN``."""
    atomic_torch_save(torchvision_state_dict(plain), out)
    return Path(out)
