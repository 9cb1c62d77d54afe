"""``timm``: a timm ResNet, as the Hugging Face hub ships it (``model.safetensors``).

timm's ``ResNet`` (``timm/models/resnet.py``, ``ResNet.__init__``: ``self.conv1``, ``self.bn1``, stages
added as ``layer1``..``layer4`` by ``make_blocks``, classifier ``fc``; ``Bottleneck``: ``conv1..3``,
``bn1..3``, ``downsample`` = Sequential(conv, norm)) uses torchvision's names, so a plain timm ResNet
converts exactly as a torchvision one and SlimBench never needs timm. Its variants with a deep stem
(``stem_type='deep'``: ``conv1.0/.3/.6``) or an average-pool shortcut (``avg_down``) are refused.
``auto`` takes a ``.safetensors`` file of ResNet names, or a deep-stem file, as timm's.
"""
from __future__ import annotations

from typing import Optional

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, other_entries, register_importer
from pretrain.checkpoints.importers.formats import WeightsFile
from pretrain.checkpoints.importers.torchvision import plain_state_dict


@register_importer
class TimmImporter(Importer):
    name = "timm"
    defined_by = "huggingface/pytorch-image-models: timm/models/resnet.py (ResNet.__init__, Bottleneck)"
    takes_width = True

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        sd = plain_state_dict(wf.obj)
        if not sd:
            return None
        if "conv1.0.weight" in sd:
            return Claim("a timm deep stem (conv1.0.weight ... conv1.6.weight, stem_type='deep')")
        if wf.format == "safetensors" and "conv1.weight" in sd:
            return Claim("ResNet names (conv1.weight, layer1.0.*) in a .safetensors file, as timm's hub weights")
        return None

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        from pretrain.checkpoints.importers.resnet_state import resnet_checkpoint

        sd = plain_state_dict(wf.obj)
        if sd is None:
            raise CheckpointError(f"{wf.path}: no ResNet names (conv1.*, layer1.0.*): not a timm ResNet")
        return resnet_checkpoint(sd, wf.path, "import:timm", options.width, options.blocks,
                                 config={"layout": self.name, "format": wf.format},
                                 extra={"dropped_entries": other_entries(wf.obj), "not_unpickled": list(wf.placeholders)})
