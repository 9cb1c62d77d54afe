"""The Detectron2 exporter: one extracted sub-network in the MoCo key convention, as a ``.pkl``.

The self-supervised community hands backbones to Detectron2 as a pickle of numpy arrays named
like Detectron2's ResNet (MoCo's ``convert-pretrain-to-detectron2.py``): ``stem.conv1``,
``stem.conv1.norm``, ``res2``-``res5`` blocks with ``convK`` / ``convK.norm`` and
``shortcut`` / ``shortcut.norm``. ``matching_heuristics`` lets Detectron2's
``DetectionCheckpointer`` place them under ``backbone.bottom_up.`` (FPN), ``backbone.`` and
``roi_heads.res5.`` (C4) by suffix. This module imports no Detectron2 code.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Dict

import numpy as np

from pretrain.checkpoints.format import atomic_write_bytes
from pretrain.models.plain_resnet import PlainResNet
from transfer.exporters import torchvision_state_dict

AUTHOR = "SlimBench"


def detectron2_key(torchvision_key: str) -> str:
    """Rename one torchvision ResNet key to Detectron2's (``layer1.0.bn1.weight`` -> ``res2.0.conv1.norm.weight``)."""
    k = torchvision_key
    if not k.startswith("layer"):
        k = "stem." + k
    k = re.sub(r"^layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", k)
    k = re.sub(r"\bbn(\d)\b", r"conv\1.norm", k)
    k = k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
    return k


def detectron2_state_dict(plain: PlainResNet) -> Dict[str, np.ndarray]:
    """The backbone's weights and BN buffers as numpy arrays under Detectron2 names (no classifier)."""
    return {detectron2_key(k): v.numpy() for k, v in torchvision_state_dict(plain).items()
            if not k.startswith("fc.")}


def export_detectron2(plain: PlainResNet, out: Path) -> Path:
    """Write ``{"model": arrays, "__author__": "SlimBench", "matching_heuristics": True}`` to ``out``."""
    payload = {"model": detectron2_state_dict(plain), "__author__": AUTHOR, "matching_heuristics": True}
    atomic_write_bytes(out, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    return Path(out)
