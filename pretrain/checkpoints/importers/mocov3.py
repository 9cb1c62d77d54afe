"""``mocov3``: a MoCo v3 ResNet pretraining checkpoint (facebookresearch/moco-v3).

``main_moco.py`` saves the DDP-wrapped ``MoCo_ResNet`` (``moco/builder.py``): ``module.base_encoder.*``
(a torchvision ResNet whose ``fc`` was replaced by the projection MLP, builder.py lines 100-106),
``module.momentum_encoder.*`` and ``module.predictor.*``. ``main_lincls.py`` keeps the keys under
``module.base_encoder`` except ``module.base_encoder.fc`` (lines 180-183; ``linear_keyword = 'fc'``
for ResNets, line 161). ViT checkpoints (``head``, ``patch_embed``) are not ResNets and are refused.
"""
from __future__ import annotations

from typing import Optional

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, encoder_checkpoint, has_resnet, register_importer, state_dict_of
from pretrain.checkpoints.importers.formats import WeightsFile

PREFIX = "module.base_encoder."


@register_importer
class MocoV3Importer(Importer):
    name = "mocov3"
    defined_by = "facebookresearch/moco-v3: main_lincls.py lines 156-189, moco/builder.py lines 100-109"

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        sd = state_dict_of(wf.obj)
        if has_resnet(sd, PREFIX):
            return Claim(f"torchvision ResNet names under {PREFIX} (MoCo v3's base encoder)")
        if sd and any(k.startswith(PREFIX + "patch_embed.") for k in sd):
            return Claim(f"a ViT under {PREFIX} (MoCo v3)")
        return None

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        sd = state_dict_of(wf.obj)
        if sd and any(k.startswith(PREFIX + "patch_embed.") for k in sd):
            raise CheckpointError(f"{wf.path}: a MoCo v3 ViT ({PREFIX}patch_embed.*); SlimBench holds ResNets only")
        if not has_resnet(sd, PREFIX):
            raise CheckpointError(f"{wf.path}: no ResNet under {PREFIX}: not a MoCo v3 ResNet checkpoint")
        return encoder_checkpoint(self, wf, sd, PREFIX, options, heads=("fc.",))
