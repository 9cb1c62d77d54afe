"""``timm``: a timm ResNet, as the Hugging Face hub ships it (``model.safetensors``).

timm's ``ResNet`` (``timm/models/resnet.py``, ``ResNet.__init__``: ``self.conv1``, ``self.bn1``, stages
added as ``layer1``..``layer4`` by ``make_blocks``, classifier ``fc``; ``Bottleneck``: ``conv1..3``,
``bn1..3``, ``downsample`` = Sequential(conv, norm)) uses torchvision's names, so a plain timm ResNet
converts exactly as a torchvision one and SlimBench never needs timm. Its variants with a deep stem
(``stem_type='deep'``: ``conv1.0/.3/.6``) or an average-pool shortcut (``avg_down``) are refused.
``auto`` takes a ``.safetensors`` file of ResNet names, or a deep-stem file, as timm's.

A checkpoint of timm's ``train.py`` (``timm/utils/checkpoint_saver.py`` ``_save``, lines 89-110) holds
``state_dict`` and, with ``--model-ema``, ``state_dict_ema`` beside ``optimizer``, ``args`` (an
``argparse.Namespace``, read as a placeholder) and ``epoch``; timm's own ``load_state_dict`` also reads
``model_ema`` (``timm/models/_helpers.py`` lines 119-127). The online weights are imported unless
``--encoder ema`` asks for the EMA copy; a file holding the EMA copy alone says so.
"""
from __future__ import annotations

from typing import Mapping, Optional, Tuple

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, choose_copy, other_entries, register_importer
from pretrain.checkpoints.importers.formats import WeightsFile
from pretrain.checkpoints.importers.torchvision import EMA_KEYS, plain_state_dict


def _ema(obj) -> Tuple[Optional[dict], str]:
    """(the EMA copy's state dict, its entry) of a timm training checkpoint, or (None, "")."""
    for key in EMA_KEYS:
        sd = plain_state_dict(obj[key]) if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping) else None
        if sd:
            return sd, key
    return None, ""


@register_importer
class TimmImporter(Importer):
    name = "timm"
    defined_by = ("huggingface/pytorch-image-models: timm/models/resnet.py (ResNet.__init__, Bottleneck), "
                  "timm/utils/checkpoint_saver.py lines 89-110 (state_dict, state_dict_ema)")
    takes_width = True
    encoders = ("online", "ema")

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        ema, key = _ema(wf.obj)
        if ema:
            return Claim(f"ResNet names under {key} (the model EMA timm's train.py saves)")
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

        online, (ema, ema_key) = plain_state_dict(wf.obj), _ema(wf.obj)
        if online is None and ema is None:
            raise CheckpointError(f"{wf.path}: no ResNet names (conv1.*, layer1.0.*): not a timm ResNet")
        entry = next((k for k in ("state_dict", "model") if isinstance(wf.obj, Mapping) and k in wf.obj), "its tensors")
        held = {k: where for k, where, sd in (("online", entry, online), ("ema", ema_key, ema)) if sd is not None}
        copy = choose_copy(wf, held, options)
        return resnet_checkpoint(online if copy == "online" else ema, wf.path, "import:timm", options.width,
                                 options.blocks, config={"layout": self.name, "format": wf.format, "encoder": copy},
                                 extra={"dropped_entries": other_entries(wf.obj, kept=(held[copy],)),
                                        "not_unpickled": list(wf.placeholders)})
