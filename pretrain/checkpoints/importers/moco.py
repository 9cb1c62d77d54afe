"""``moco``: a MoCo v1/v2 pretraining checkpoint (facebookresearch/moco).

Layout, as ``main_moco.py`` saves it: ``{'epoch', 'arch', 'state_dict', 'optimizer'}``, the state dict
of the DistributedDataParallel-wrapped ``MoCo`` module (``moco/builder.py``): ``module.encoder_q.*``
(a torchvision ResNet whose ``fc`` is the projection head), ``module.encoder_k.*`` (the momentum
encoder), ``module.queue``, ``module.queue_ptr``. The encoder is what ``main_lincls.py`` keeps
("retain only encoder_q up to before the embedding layer": keys under ``module.encoder_q`` but not
``module.encoder_q.fc``, lines 252-260 at commit 132aea9) and ``detection/convert-pretrain-to-detectron2.py``
converts. The released files (2020) are in torch's legacy format.
"""
from __future__ import annotations

from typing import Optional

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, encoder_checkpoint, has_resnet, register_importer, state_dict_of
from pretrain.checkpoints.importers.formats import WeightsFile

PREFIX = "module.encoder_q."


@register_importer
class MocoImporter(Importer):
    name = "moco"
    defined_by = "facebookresearch/moco: main_lincls.py lines 252-260, detection/convert-pretrain-to-detectron2.py"

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        sd = state_dict_of(wf.obj)
        if has_resnet(sd, PREFIX):
            return Claim(f"torchvision ResNet names under {PREFIX} (MoCo's query encoder)")
        return None

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        sd = state_dict_of(wf.obj)
        if not has_resnet(sd, PREFIX):
            raise CheckpointError(f"{wf.path}: no ResNet under {PREFIX}: not a MoCo v1/v2 checkpoint")
        return encoder_checkpoint(self, wf, sd, PREFIX, options, heads=("fc.",))
