"""``mmselfsup``: an MMSelfSup / MMPretrain checkpoint (open-mmlab/mmselfsup).

An MMEngine checkpoint is ``{'meta', 'state_dict', 'message_hub', 'optimizer', ...}``;
``tools/model_converters/publish_model.py`` removes ``optimizer`` and saves the rest in torch's legacy
format (lines 21-30). Its state dict holds the algorithm's modules: ``backbone.*`` (MMPretrain's
``ResNet``, torchvision's names: conv1, bn1, layerS.B.conv1/bn1..., downsample.0/.1), ``neck.*``,
``head.*``, and for MoCo ``encoder_k.*``, ``queue``, ``queue_ptr`` (``mmselfsup/models/algorithms/moco.py``
lines 65-72). ``tools/model_converters/extract_backbone_weights.py`` instead writes
``{'state_dict': <backbone keys without 'backbone.'>, 'author': 'MMSelfSup'}`` (lines 20-26); both are read.
``ResNetV1c``/``ResNetV1d`` (deep ``stem.*``, average-pool shortcuts) are refused: SlimBench's ResNet
has torchvision's 7x7 stem. ``--encoder momentum`` takes the backbone of the EMA copy of
``Sequential(backbone, neck)``: MoCo's ``encoder_k.module.0.*``, BYOL's ``target_net.module.0.*``
(``algorithms/byol.py`` lines 55-56), MoCo v3's ``momentum_encoder.module.0.*`` (``algorithms/mocov3.py``
lines 55-56), or MMSelfSup 0.x's plain ``encoder_k.0.*`` / ``target_net.0.*``.
"""
from __future__ import annotations

from typing import Optional

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, encoder_checkpoint, has_resnet, held_copies, pick_copy, register_importer, state_dict_of
from pretrain.checkpoints.importers.formats import WeightsFile

PREFIX = "backbone."
MOMENTUM = ("encoder_k.module.0.", "target_net.module.0.", "momentum_encoder.module.0.", "encoder_k.0.", "target_net.0.")


def _extracted(obj) -> bool:
    return isinstance(obj, dict) and obj.get("author") == "MMSelfSup"


def _has_backbone(sd, prefix: str) -> bool:
    return has_resnet(sd, prefix) or any(k.startswith(prefix + "stem.") for k in sd or {})


@register_importer
class MMSelfSupImporter(Importer):
    name = "mmselfsup"
    defined_by = ("open-mmlab/mmselfsup: tools/model_converters/extract_backbone_weights.py lines 20-26, "
                  "tools/model_converters/publish_model.py lines 21-30")
    encoders = ("online", "momentum")

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        sd = state_dict_of(wf.obj)
        if _extracted(wf.obj) and _has_backbone(sd, ""):
            return Claim("author 'MMSelfSup' beside a backbone state dict (extract_backbone_weights.py)")
        if not _has_backbone(sd, PREFIX):
            held = held_copies(sd, {"momentum": MOMENTUM})
            return Claim(f"{held['momentum']}* alone (an MMSelfSup momentum encoder)") if held else None
        if isinstance(wf.obj, dict) and "meta" in wf.obj:
            return Claim("backbone.* beside an MMEngine/MMCV 'meta' entry")
        if any(k.startswith(("neck.", "encoder_k.module.")) for k in sd):
            return Claim("backbone.* beside MMSelfSup's neck.* / encoder_k.module.*")
        return Claim("backbone.* ResNet names (MMSelfSup's algorithm.backbone)", specific=False)

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        sd = state_dict_of(wf.obj)
        online = "" if _extracted(wf.obj) else PREFIX
        copies = {"online": (online,), "momentum": () if _extracted(wf.obj) else MOMENTUM}
        if not held_copies(sd, copies):
            raise CheckpointError(f"{wf.path}: no ResNet under {online or 'the state dict'}: not an MMSelfSup checkpoint")
        copy, prefix = pick_copy(wf, sd, copies, options)
        return encoder_checkpoint(self, wf, sd, prefix, options, copy=copy)
