"""``lightly``: a checkpoint of lightly's ImageNet ResNet-50 benchmark modules (lightly-ai/lightly).

``benchmarks/imagenet/resnet50/*.py`` (e.g. ``mocov2.py`` lines 30-45 at commit e8d317f): a
``LightningModule`` whose ``self.backbone`` is torchvision's ``resnet50()`` with ``fc = Identity()``
(its ``forward`` returns ``self.backbone(x)``), beside ``projection_head``, ``prediction_head``,
momentum copies (``key_backbone``, ``teacher_backbone``, ``student_backbone``, ...) and
``online_classifier`` (an ``OnlineLinearClassifier``: ``classification_head``,
``lightly/utils/benchmarking/online_linear_classifier.py`` line 22). Lightning saves them under
``state_dict``; ``main.py`` reloads them with ``torch.load(ckpt_path)["state_dict"]`` (line 151).
"""
from __future__ import annotations

from typing import Optional

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, encoder_checkpoint, has_resnet, register_importer, state_dict_of
from pretrain.checkpoints.importers.formats import WeightsFile

PREFIX = "backbone."
MARKER = "online_classifier.classification_head.weight"


@register_importer
class LightlyImporter(Importer):
    name = "lightly"
    defined_by = ("lightly-ai/lightly: benchmarks/imagenet/resnet50/mocov2.py lines 30-45, "
                  "lightly/utils/benchmarking/online_linear_classifier.py line 22")

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        sd = state_dict_of(wf.obj)
        if not has_resnet(sd, PREFIX):
            return None
        if MARKER in sd:
            return Claim(f"backbone.* with lightly's {MARKER}")
        return Claim("backbone.* ResNet names (lightly's benchmark module backbone)", specific=False)

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        sd = state_dict_of(wf.obj)
        if not has_resnet(sd, PREFIX):
            raise CheckpointError(f"{wf.path}: no ResNet under {PREFIX}: not a lightly benchmark checkpoint")
        return encoder_checkpoint(self, wf, sd, PREFIX, options)
