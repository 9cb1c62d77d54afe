"""``solo-learn``: a solo-learn pretraining checkpoint, the Lightning ``.ckpt`` its ``Checkpointer`` writes.

``solo/methods/base.py`` (commit 9187ea3, lines 193-210): ``self.backbone`` is a torchvision ResNet
with ``fc = nn.Identity()``, the online linear classifier is ``self.classifier``; momentum methods
add ``momentum_backbone`` / ``momentum_classifier`` (lines 640-660) and each method its ``projector``
(and ``predictor``). Lightning stores them under ``state_dict`` beside ``epoch``, ``global_step``,
``pytorch-lightning_version``, ``optimizer_states``, ``lr_schedulers``, ``loops`` and ``callbacks``.
``downstream/object_detection/convert_model_to_detectron2.py`` keeps the keys starting with
``backbone``, as this importer does. solo-learn's CIFAR stem (3x3 convolution, stride 1, *padding 2*,
no max-pool; lines 198-203) is refused: SlimBench's small stem pads by 1, so features would differ.
``--encoder momentum`` takes ``momentum_backbone``, also from a file that holds it alone.
"""
from __future__ import annotations

from typing import Optional

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, encoder_checkpoint, has_resnet, held_copies, pick_copy, register_importer, state_dict_of
from pretrain.checkpoints.importers.formats import WeightsFile

PREFIX = "backbone."
COPIES = {"online": (PREFIX,), "momentum": ("momentum_backbone.",)}


@register_importer
class SoloLearnImporter(Importer):
    name = "solo-learn"
    defined_by = ("vturrisi/solo-learn: solo/methods/base.py lines 193-210, "
                  "downstream/object_detection/convert_model_to_detectron2.py")
    encoders = ("online", "momentum")

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        sd = state_dict_of(wf.obj)
        if not has_resnet(sd, PREFIX):
            if not held_copies(sd, COPIES):
                return None
            return Claim("momentum_backbone.* ResNet names alone (solo-learn's momentum backbone)", specific=False)
        lightning = isinstance(wf.obj, dict) and "pytorch-lightning_version" in wf.obj
        if lightning and "classifier.weight" in sd:
            return Claim("a Lightning checkpoint with backbone.* and solo-learn's online classifier.weight")
        return Claim("backbone.* ResNet names (solo-learn's BaseMethod.backbone)", specific=False)

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        sd = state_dict_of(wf.obj)
        if not held_copies(sd, COPIES):
            raise CheckpointError(f"{wf.path}: no ResNet under {PREFIX}: not a solo-learn checkpoint")
        copy, prefix = pick_copy(wf, sd, COPIES, options)
        conv1 = sd.get(prefix + "conv1.weight")
        if conv1 is not None and conv1.shape[-1] == 3:
            raise CheckpointError(f"{wf.path}: solo-learn's CIFAR stem (3x3 convolution with padding 2, "
                                  f"solo/methods/base.py lines 198-203); SlimBench's small stem pads by 1, "
                                  f"so this network cannot be held")
        return encoder_checkpoint(self, wf, sd, prefix, options, copy=copy)
