"""``lightly``: a checkpoint of a lightly (lightly-ai/lightly) model: its benchmark modules, examples and tutorials.

Benchmark modules, ``benchmarks/imagenet/resnet50/*.py`` (e.g. ``mocov2.py`` lines 30-45 at commit e8d317f):
a ``LightningModule`` whose ``self.backbone`` is torchvision's ``resnet50()`` with ``fc = Identity()``
(torchvision names under ``backbone.``), beside ``projection_head``, ``prediction_head``, momentum copies
(``key_backbone``, ``teacher_backbone``, ...) and ``online_classifier`` (an ``OnlineLinearClassifier``:
``classification_head``, ``lightly/utils/benchmarking/online_linear_classifier.py`` line 22). Lightning saves
them under ``state_dict``; ``main.py`` reloads them with ``torch.load(ckpt_path)["state_dict"]`` (line 151).

Examples and tutorials (``examples/pytorch_lightning/moco.py`` lines 25-30, ``byol.py``, ``dino.py``):
``self.backbone = nn.Sequential(*list(resnet.children())[:-1])``, so the ResNet's children are numbered:
``0`` conv1, ``1`` bn1, ``4``-``7`` layer1-4 (2, 3 and 8 are ReLU, max-pool and average pool, without
tensors); the momentum copy is ``backbone_momentum`` (DINO: ``student_backbone`` / ``teacher_backbone``).
A Lightning checkpoint keeps them under ``state_dict``, prefixed by the attribute that holds the module
when it is wrapped (``model.backbone.0.*``); ``tutorial_simclr_clothing.py`` (lines 287-291) saves the
backbone alone as ``{"resnet18_parameters": backbone.state_dict()}``. The online backbone is imported,
its momentum copy dropped (or taken with ``--encoder momentum``).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional

import torch

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, choose_copy, encoder_checkpoint, has_resnet, register_importer, state_dict_of, tensors_only
from pretrain.checkpoints.importers.formats import WeightsFile

PREFIX = "backbone."
MARKER = "online_classifier.classification_head.weight"
TUTORIAL = "resnet18_parameters"
# the module attribute that holds each copy ("": the tutorial's bare backbone state dict)
COPIES = {"online": ("backbone", "student_backbone", ""), "momentum": ("backbone_momentum", "key_backbone", "teacher_backbone")}
CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def _state_dict(obj: Any) -> Optional[Dict[str, torch.Tensor]]:
    """The state dict of a lightly file: Lightning's ``state_dict``, or the tutorial's ``resnet18_parameters``."""
    if isinstance(obj, Mapping) and tensors_only(obj.get(TUTORIAL)):
        return dict(obj[TUTORIAL])
    return state_dict_of(obj)


def _sequential_roots(sd: Mapping[str, Any]) -> list:
    """Prefixes under which ``sd`` holds a torchvision ResNet's children as an ``nn.Sequential`` (``0.weight``,
    ``1.running_mean``, ``4.0.conv1.weight``)."""
    roots = [k[: -len("4.0.conv1.weight")] for k in sd if re.match(r"(.*\.)?4\.0\.conv1\.weight$", k)]
    return [r for r in roots if r + "0.weight" in sd and r + "1.running_mean" in sd]


def _copies(sd: Optional[Mapping[str, Any]]) -> Dict[str, tuple]:
    """``{kind: (prefix, sequential)}`` of the backbone copies ``sd`` holds, the shortest prefix per kind."""
    found = [(r, True) for r in _sequential_roots(sd or {})]
    found += [(f"{attr}.", False) for attrs in COPIES.values() for attr in attrs if attr and has_resnet(sd, f"{attr}.")]
    held: Dict[str, tuple] = {}
    for prefix, sequential in sorted(found, key=lambda f: len(f[0])):
        attr = prefix[:-1].rsplit(".", 1)[-1]   # a wrapping LightningModule's attribute path comes before it
        kind = next((k for k, attrs in COPIES.items() if attr in attrs), None)
        if kind is not None and kind not in held:
            held[kind] = (prefix, sequential)
    return held


def _renamed(sd: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """``sd`` with the ``nn.Sequential`` children under ``prefix`` given torchvision's names (``0.`` -> ``conv1.``)."""
    out = {}
    for k, v in sd.items():
        head, dot, rest = k[len(prefix):].partition(".")
        out[prefix + CHILDREN[head] + dot + rest if k.startswith(prefix) and head in CHILDREN else k] = v
    return out


@register_importer
class LightlyImporter(Importer):
    name = "lightly"
    defined_by = ("lightly-ai/lightly: benchmarks/imagenet/resnet50/mocov2.py lines 30-45, "
                  "lightly/utils/benchmarking/online_linear_classifier.py line 22, "
                  "examples/pytorch_lightning/moco.py lines 25-30, "
                  "docs/source/tutorials_source/package/tutorial_simclr_clothing.py lines 287-291")
    encoders = ("online", "momentum")

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        sd = _state_dict(wf.obj)
        held = _copies(sd)
        if not held:
            return None
        prefix, sequential = held.get("online", held.get("momentum"))
        if sequential:
            where = f"{TUTORIAL}: " if isinstance(wf.obj, Mapping) and TUTORIAL in wf.obj else ""
            return Claim(f"{where}{prefix}0.* / {prefix}4.*: a torchvision ResNet's children in an nn.Sequential "
                         f"(lightly's examples)")
        if MARKER in sd:
            return Claim(f"backbone.* with lightly's {MARKER}")
        if "momentum" in held:   # key_backbone, teacher_backbone, backbone_momentum: lightly's names
            return Claim(f"torchvision ResNet names under {held['momentum'][0]} (a lightly module's momentum copy)")
        if prefix != PREFIX:
            return Claim(f"torchvision ResNet names under {prefix} (a lightly module's backbone)")
        return Claim("backbone.* ResNet names (lightly's benchmark module backbone)", specific=False)

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        sd = _state_dict(wf.obj)
        held = _copies(sd)
        if not held:
            raise CheckpointError(f"{wf.path}: no ResNet under {PREFIX} (torchvision names, or an nn.Sequential of "
                                  f"its children: {PREFIX}0.*, {PREFIX}4.*): not a lightly checkpoint")
        copy = choose_copy(wf, {k: f"{p}*" for k, (p, _) in held.items()}, options)
        prefix, sequential = held[copy]
        ckpt = encoder_checkpoint(self, wf, _renamed(sd, prefix) if sequential else sd, prefix, options, copy=copy)
        ckpt.config["children_sequential"] = sequential
        if TUTORIAL in ckpt.extra["dropped_entries"]:
            ckpt.extra["dropped_entries"].remove(TUTORIAL)
        return ckpt
