"""``slimclr``: the upstream SlimCLR pretraining release (mzhaoshuai/SlimCLR), every width in one file.

SlimCLR's slimmable ResNet (``models/backbones/s_resnet.py``, ``Model.__init__`` lines 114-134): a stem
``conv1`` / ``bn1``, the blocks stored flat as ``features.{k}`` (``Block``: ``conv1..3``, ``bn1..3``,
``shortcut.{0,1}``), every BatchNorm switchable (``bn.{i}``, ``i`` indexing the width list sorted
descending, line 100). The MoCo v2 release keeps it under ``module.encoder_q.`` (beside
``encoder_k``, the queue and the MLP ``fc``), the MoCo v3 one under ``module.base_encoder.``. The
widths are read from the tensors: width ``i`` of a bottleneck network has ``int(2048 * w)`` channels
in the last block's ``bn3.bn.{i}``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.models.resnet import ARCHS, SlimResNet
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, other_entries, register_importer, state_dict_of, under
from pretrain.checkpoints.importers.formats import WeightsFile, read_weights

PREFIXES = ("module.encoder_q.", "module.base_encoder.", "encoder_q.", "base_encoder.")


def find_prefix(sd: Optional[Mapping[str, torch.Tensor]], prefixes: Sequence[str]) -> Optional[str]:
    """The first of ``prefixes`` under which ``sd`` holds SlimCLR's flat blocks (``features.0.``)."""
    return next((p for p in prefixes if sd and any(k.startswith(p + "features.0.") for k in sd)), None)


def widths_from_tensors(enc: Mapping[str, torch.Tensor], src) -> List[float]:
    """The stored width list, in its stored order, from the last block's switchable BN sizes."""
    n_blocks = len({int(m.group(1)) for k in enc for m in [re.match(r"features\.(\d+)\.", k)] if m})
    bottleneck = "features.0.conv3.weight" in enc
    last = f"features.{n_blocks - 1}.{'bn3' if bottleneck else 'bn2'}.bn."
    sizes = {int(k[len(last):].split(".")[0]): v.shape[0] for k, v in enc.items()
             if k.startswith(last) and k.endswith(".weight")}
    if not sizes:
        raise CheckpointError(f"{src}: no switchable BatchNorm {last}{{i}}.weight: not a SlimCLR slimmable ResNet")
    full = 2048 if bottleneck else 512
    return [round(sizes[i] / full, 4) for i in sorted(sizes)]


def slimclr_encoder(enc: Mapping[str, torch.Tensor], src, widths: Optional[Sequence[float]] = None
                    ) -> Tuple[SlimResNet, List[str]]:
    """The SlimResNet of SlimCLR's encoder keys (prefix removed), and the non-backbone keys it dropped."""
    n_blocks = len({int(m.group(1)) for k in enc for m in [re.match(r"features\.(\d+)\.", k)] if m})
    bottleneck = "features.0.conv3.weight" in enc
    depth = next((d for d, (kind, b) in ARCHS.items() if sum(b) == n_blocks and (kind == "bottleneck") == bottleneck),
                 None)
    if depth is None:
        raise CheckpointError(f"{src}: {n_blocks} blocks under features.* match no ResNet depth")
    found = widths_from_tensors(enc, src)
    if widths is not None and list(widths) != found:
        raise CheckpointError(f"{src}: widths {list(widths)} were given but the tensors hold {found}")
    names = [f"layer{s + 1}.{b}" for s, n in enumerate(ARCHS[depth][1]) for b in range(n)]
    mapped, dropped = {}, []
    for k, v in enc.items():
        m = re.match(r"features\.(\d+)\.(.*)$", k)
        if m:
            rest = m.group(2).replace("shortcut.0.", "downsample.0.").replace("shortcut.1.", "downsample.1.")
            mapped[f"{names[int(m.group(1))]}.{rest}"] = v
        elif k.startswith(("conv1.", "bn1.")):
            mapped[k] = v
        else:
            dropped.append(k)  # projection heads and classifiers are not part of the backbone
    model = SlimResNet(depth, widths=found)
    expected = model.state_dict()
    missing = [k for k in expected if k not in mapped]
    unexpected = [k for k in mapped if k not in expected]
    wrong = [k for k in mapped if k in expected and mapped[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{src}: {len(missing)} keys missing (e.g. {missing[:4]}), {len(unexpected)} "
                              f"unexpected (e.g. {unexpected[:4]}), {len(wrong)} of wrong shape (e.g. {wrong[:3]})")
    model.load_state_dict(mapped)
    return model, dropped


@register_importer
class SlimCLRImporter(Importer):
    name = "slimclr"
    defined_by = "mzhaoshuai/SlimCLR: models/backbones/s_resnet.py lines 100-134 (Model), models/s_moco.py"

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        prefix = find_prefix(state_dict_of(wf.obj), PREFIXES)
        return Claim(f"SlimCLR's flat blocks {prefix}features.* with switchable BN") if prefix else None

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        sd = state_dict_of(wf.obj)
        prefix = find_prefix(sd, PREFIXES)
        if prefix is None:
            raise CheckpointError(f"{wf.path}: no keys under any of {[p + 'features.' for p in PREFIXES]}: not a "
                                  f"SlimCLR release (first keys: {list(sd or {})[:3]})")
        model, dropped = slimclr_encoder(under(sd, prefix), wf.path)
        outside = [k for k in sd if not k.startswith(prefix)]
        method = "import:slimclr-" + ("mocov2" if "encoder_q" in prefix else "mocov3")
        return Checkpoint.from_model(model, method=method,
                                     config={"source": str(wf.path), "layout": self.name, "format": wf.format},
                                     extra={"dropped_keys": dropped, "dropped_outside_encoder": outside,
                                            "dropped_entries": other_entries(wf.obj),
                                            "not_unpickled": list(wf.placeholders)})


def import_slimclr(src, state_dict: Optional[dict] = None, widths: Optional[Sequence[float]] = None) -> Checkpoint:
    """The upstream SlimCLR release (a file, or ``state_dict`` given directly) as a slimmable checkpoint."""
    wf = WeightsFile(Path(src), state_dict, "zip") if state_dict is not None else read_weights(src, "SlimCLR file")
    ckpt = SlimCLRImporter().convert(wf, ImportOptions())
    if widths is not None and list(widths) != ckpt.widths:
        raise CheckpointError(f"{src}: widths {list(widths)} were given but the tensors hold {ckpt.widths}")
    return ckpt
