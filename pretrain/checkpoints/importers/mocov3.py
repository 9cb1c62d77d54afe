"""``mocov3``: a MoCo v3 ResNet pretraining checkpoint (facebookresearch/moco-v3).

``main_moco.py`` saves the DDP-wrapped ``MoCo_ResNet`` (``moco/builder.py``): ``module.base_encoder.*``
(a torchvision ResNet whose ``fc`` was replaced by the projection MLP, builder.py lines 100-106),
``module.momentum_encoder.*`` and ``module.predictor.*``. ``main_lincls.py`` keeps the keys under
``module.base_encoder`` except ``module.base_encoder.fc`` (lines 180-183; ``linear_keyword = 'fc'``
for ResNets, line 161). ViT checkpoints (``head``, ``patch_embed``) are not ResNets and are refused.
``--encoder momentum`` takes ``module.momentum_encoder`` (its ``fc`` dropped likewise).
"""
from __future__ import annotations

from typing import Optional

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, encoder_checkpoint, held_copies, pick_copy, register_importer, state_dict_of
from pretrain.checkpoints.importers.formats import WeightsFile

PREFIX = "module.base_encoder."
COPIES = {"online": (PREFIX,), "momentum": ("module.momentum_encoder.",)}


@register_importer
class MocoV3Importer(Importer):
    name = "mocov3"
    defined_by = "facebookresearch/moco-v3: main_lincls.py lines 156-189, moco/builder.py lines 100-109"
    encoders = ("online", "momentum")

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        sd = state_dict_of(wf.obj)
        held = held_copies(sd, COPIES)
        if "online" in held:
            return Claim(f"torchvision ResNet names under {PREFIX} (MoCo v3's base encoder)")
        if held:
            return Claim(f"torchvision ResNet names under {held['momentum']} alone (MoCo v3's momentum encoder)")
        if sd and any(k.startswith(PREFIX + "patch_embed.") for k in sd):
            return Claim(f"a ViT under {PREFIX} (MoCo v3)")
        return None

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        sd = state_dict_of(wf.obj)
        if sd and any(k.startswith(PREFIX + "patch_embed.") for k in sd):
            raise CheckpointError(f"{wf.path}: a MoCo v3 ViT ({PREFIX}patch_embed.*); SlimBench holds ResNets only")
        if not held_copies(sd, COPIES):
            raise CheckpointError(f"{wf.path}: no ResNet under {PREFIX}: not a MoCo v3 ResNet checkpoint")
        copy, prefix = pick_copy(wf, sd, COPIES, options)
        return encoder_checkpoint(self, wf, sd, prefix, options, heads=("fc.",), copy=copy)
