"""``vissl``: a VISSL checkpoint (facebookresearch/vissl) of a ResNet trunk.

VISSL's checkpoint nests the model: ``classy_state_dict -> base_model -> model -> {trunk, heads}``;
the trunk's keys are torchvision's under ``_feature_blocks.`` (``extra_scripts/convert_vissl_to_detectron2.py``:
``vissl_state_dict["base_model"]["model"]["trunk"]`` for ``classy_state_dict``, lines 111-112, and the
``_feature_blocks.conv1.`` / ``.bn1.`` / ``.layerN.`` names it maps, lines 26-31). A converted file
holds the trunk under ``model_state_dict`` (that script's default key) instead; both are read.

A linear-evaluation checkpoint (``MODEL.FEATURE_EVAL_SETTINGS``) keeps the trunk as a ``FeatureExtractorModel``
(``vissl/models/trunks/feature_extractor.py`` line 30: ``self.base_model``), so its keys are
``base_model._feature_blocks.*``; VISSL's own loader strips ``base_model.`` when it reads such a trunk
into a plain model (``vissl/utils/checkpoint.py`` lines 926-933 and 970-978, commit 09270ed), as this
importer does. Its heads (``eval_mlp``: ``channel_bn``, ``clf``) are the linear probes, dropped like any head.
"""
from __future__ import annotations

from typing import Mapping, Optional, Tuple

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, encoder_checkpoint, has_resnet, register_importer, tensors_only
from pretrain.checkpoints.importers.formats import WeightsFile

PREFIX = "_feature_blocks."
PREFIXES = (PREFIX, "base_model." + PREFIX)   # a pretraining trunk, a linear-evaluation FeatureExtractorModel


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
    defined_by = ("facebookresearch/vissl: extra_scripts/convert_vissl_to_detectron2.py lines 26-31, 111-112, "
                  "vissl/utils/checkpoint.py lines 926-933, 970-978")

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        trunk, where = _trunk(wf.obj)
        prefix = next((p for p in PREFIXES if has_resnet(trunk, p)), None)
        if prefix == PREFIX:
            return Claim(f"a ResNet trunk under {where} ({PREFIX}layer1.0.*)")
        if prefix:
            return Claim(f"a linear-evaluation trunk (FeatureExtractorModel) under {where} ({prefix}layer1.0.*)")
        return None

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        trunk, where = _trunk(wf.obj)
        prefix = next((p for p in PREFIXES if has_resnet(trunk, p)), None)
        if prefix is None:
            raise CheckpointError(f"{wf.path}: no ResNet trunk (classy_state_dict.base_model.model.trunk or "
                                  f"model_state_dict with {PREFIX}* or base_model.{PREFIX}*): not a VISSL checkpoint")
        ckpt = encoder_checkpoint(self, wf, trunk, prefix, options)
        heads = wf.obj.get("classy_state_dict", {}).get("base_model", {}).get("model", {}).get("heads", {}) \
            if isinstance(wf.obj.get("classy_state_dict"), Mapping) else {}
        ckpt.extra["dropped_keys"] += [f"heads.{k}" for k in heads] if isinstance(heads, Mapping) else []
        ckpt.config["found_at"] = where
        return ckpt
