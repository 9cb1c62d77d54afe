"""``torchvision``: a torchvision ResNet state dict (``torchvision/models/resnet.py`` names), of one width.

A plain narrow network (a ResNet-50 x0.5 pretrained elsewhere) imports at its width, read from the
channels (``--width`` states it instead), and a shallower one as a depth variant (``--blocks``
checks it); ``fc`` is kept as the classifier. A ``module.`` prefix (DataParallel) is removed.
"""
from __future__ import annotations

from typing import Optional, Sequence

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, has_resnet, other_entries, register_importer, state_dict_of
from pretrain.checkpoints.importers.formats import WeightsFile


# where timm's train.py keeps the model EMA beside ``state_dict`` (timm/utils/checkpoint_saver.py ``_save``):
# such a file is timm's (timm.py), whose importer can take either copy
EMA_KEYS = ("state_dict_ema", "model_ema")


def plain_state_dict(obj) -> Optional[dict]:
    """The state dict of a plain ResNet file (``module.`` removed), or None when it holds no top-level ResNet."""
    sd = state_dict_of(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd if sd and (has_resnet(sd) or "conv1.weight" in sd or "conv1.0.weight" in sd or
                         any(k.startswith("stem.") for k in sd)) else None


@register_importer
class TorchvisionImporter(Importer):
    name = "torchvision"
    defined_by = "pytorch/vision: torchvision/models/resnet.py (ResNet: conv1, bn1, layer1-4, fc; Bottleneck downsample.0/.1)"
    takes_width = True

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        sd = plain_state_dict(wf.obj)
        if wf.format == "safetensors" or not sd or not has_resnet(sd) or "conv1.weight" not in sd:
            return None
        if isinstance(wf.obj, dict) and (wf.obj.get("author") == "MMSelfSup" or any(k in wf.obj for k in EMA_KEYS)):
            return None
        return Claim("top-level torchvision ResNet names (conv1.weight, layer1.0.*) in a torch file")

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        from pretrain.checkpoints.importers.resnet_state import resnet_checkpoint

        sd = plain_state_dict(wf.obj)
        if sd is None:
            raise CheckpointError(f"{wf.path}: no 'conv1.weight': not a torchvision ResNet state dict")
        return resnet_checkpoint(sd, wf.path, "import:torchvision", options.width, options.blocks,
                                 config={"layout": self.name, "format": wf.format},
                                 extra={"dropped_entries": other_entries(wf.obj), "not_unpickled": list(wf.placeholders)})


def import_torchvision(src, state_dict: Optional[dict] = None, width: Optional[float] = None,
                       blocks: Optional[Sequence[int]] = None) -> Checkpoint:
    """A torchvision-layout ResNet (a file, or ``state_dict`` given directly) as a one-width checkpoint."""
    from pathlib import Path

    from pretrain.checkpoints.importers.formats import read_weights

    wf = WeightsFile(Path(src), state_dict, "zip") if state_dict is not None else read_weights(src, "torchvision file")
    return TorchvisionImporter().convert(wf, ImportOptions(width, tuple(blocks) if blocks else None))
