"""``vissl``: a VISSL checkpoint (facebookresearch/vissl) of a ResNet trunk.

VISSL's checkpoint nests the model: ``classy_state_dict -> base_model -> model -> {trunk, heads}``;
the trunk's keys are torchvision's under ``_feature_blocks.`` (``extra_scripts/convert_vissl_to_detectron2.py``:
``vissl_state_dict["base_model"]["model"]["trunk"]`` for ``classy_state_dict``, lines 111-112, and the
``_feature_blocks.conv1.`` / ``.bn1.`` / ``.layerN.`` names it maps, lines 26-31). A converted file
holds the trunk under ``model_state_dict`` (that script's default key) instead; both are read.
"""
from __future__ import annotations

from typing import Mapping, Optional, Tuple

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, encoder_checkpoint, has_resnet, register_importer, tensors_only
from pretrain.checkpoints.importers.formats import WeightsFile

PREFIX = "_feature_blocks."


def _trunk(obj) -> Tuple[Optional[dict], str]:
    """(trunk state dict, where it was found) of a VISSL checkpoint."""
    if not isinstance(obj, Mapping):
        return None, ""
    node = obj.get("classy_state_dict")
    for key in ("base_model", "model", "trunk"):
        node = node.get(key) if isinstance(node, Mapping) else None
    if tensors_only(node):
        return dict(node), "classy_state_dict.base_model.model.trunk"
    node = obj.get("model_state_dict")
    if tensors_only(node):
        return dict(node), "model_state_dict"
    return None, ""


@register_importer
class VisslImporter(Importer):
    name = "vissl"
    defined_by = "facebookresearch/vissl: extra_scripts/convert_vissl_to_detectron2.py lines 26-31, 111-112"

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        trunk, where = _trunk(wf.obj)
        if has_resnet(trunk, PREFIX):
            return Claim(f"a ResNet trunk under {where} ({PREFIX}layer1.0.*)")
        return None

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        trunk, where = _trunk(wf.obj)
        if not has_resnet(trunk, PREFIX):
            raise CheckpointError(f"{wf.path}: no ResNet trunk (classy_state_dict.base_model.model.trunk or "
                                  f"model_state_dict with {PREFIX}*): not a VISSL checkpoint")
        ckpt = encoder_checkpoint(self, wf, trunk, PREFIX, options)
        heads = wf.obj.get("classy_state_dict", {}).get("base_model", {}).get("model", {}).get("heads", {}) \
            if isinstance(wf.obj.get("classy_state_dict"), Mapping) else {}
        ckpt.extra["dropped_keys"] += [f"heads.{k}" for k in heads] if isinstance(heads, Mapping) else []
        ckpt.config["found_at"] = where
        return ckpt
