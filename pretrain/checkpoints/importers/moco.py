"""``moco``: a MoCo v1/v2 pretraining checkpoint (facebookresearch/moco).

Layout, as ``main_moco.py`` saves it: ``{'epoch', 'arch', 'state_dict', 'optimizer'}``, the state dict
of the DistributedDataParallel-wrapped ``MoCo`` module (``moco/builder.py``): ``module.encoder_q.*``
(a torchvision ResNet whose ``fc`` is the projection head), ``module.encoder_k.*`` (the momentum
encoder), ``module.queue``, ``module.queue_ptr``. The encoder is what ``main_lincls.py`` keeps
("retain only encoder_q up to before the embedding layer": keys under ``module.encoder_q`` but not
``module.encoder_q.fc``, lines 252-260 at commit 132aea9) and ``detection/convert-pretrain-to-detectron2.py``
converts. The released files (2020) are in torch's legacy format. ``--encoder momentum`` takes
``encoder_k`` (its ``fc`` dropped likewise), also from a file that holds it alone.
"""
from __future__ import annotations

from typing import Optional

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, encoder_checkpoint, held_copies, pick_copy, register_importer, state_dict_of
from pretrain.checkpoints.importers.formats import WeightsFile

PREFIX = "module.encoder_q."
COPIES = {"online": (PREFIX,), "momentum": ("module.encoder_k.",)}


@register_importer
class MocoImporter(Importer):
    name = "moco"
    defined_by = "facebookresearch/moco: main_lincls.py lines 252-260, detection/convert-pretrain-to-detectron2.py"
    encoders = ("online", "momentum")

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        held = held_copies(state_dict_of(wf.obj), COPIES)
        if "online" in held:
            return Claim(f"torchvision ResNet names under {PREFIX} (MoCo's query encoder)")
        if held:
            return Claim(f"torchvision ResNet names under {held['momentum']} alone (MoCo's key encoder)")
        return None

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        sd = state_dict_of(wf.obj)
        if not held_copies(sd, COPIES):
            raise CheckpointError(f"{wf.path}: no ResNet under {PREFIX}: not a MoCo v1/v2 checkpoint")
        copy, prefix = pick_copy(wf, sd, COPIES, options)
        return encoder_checkpoint(self, wf, sd, prefix, options, heads=("fc.",), copy=copy)
