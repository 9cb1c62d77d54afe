"""``slimclr-linear``: SlimCLR's "-Linear" releases, a frozen slimmable encoder with its switchable probe.

``main_ssl_lincls.py`` trains ``s_resnet.Model(num_classes=1000, ...)`` with ``--slim_fc supervised_switch``
(``scripts/mocov2.sh`` line 166): the classifier is a ``SwitchableLinear`` (``fc.linears.{i}``, one
``nn.Linear(int(2048 * w), 1000)`` per width, ``models/backbones/slimmable_ops.py`` lines 58-76; ``i``
indexes the width list sorted descending). The DDP-wrapped model is saved as
``{'epoch', 'global_step', 'arch': 's_resnet', 'state_dict', 'best_acc1', 'optimizer'}`` (lines 272-279),
so every key starts with ``module.``. The encoder imports as ``slimclr`` does; the probe is stored with
it (``Checkpoint.probe``) and the ``stored-probe`` protocol evaluates it without training. The file's
``best_acc1`` (the widest width's best top-1 during training, line 262) is kept in ``extra``.
"""
from __future__ import annotations

import re
from typing import Optional

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.models.spec import SubnetSpec
from pretrain.checkpoints.importers.base import Claim, ImportOptions, Importer, other_entries, register_importer, state_dict_of, under
from pretrain.checkpoints.importers.formats import WeightsFile
from pretrain.checkpoints.importers.slimclr import find_prefix, slimclr_encoder

PREFIXES = ("module.", "")


def _linears(sd, prefix: str):
    return sorted({int(m.group(1)) for k in sd for m in [re.match(re.escape(prefix) + r"fc\.linears\.(\d+)\.weight$", k)] if m})


@register_importer
class SlimCLRLinearImporter(Importer):
    name = "slimclr-linear"
    defined_by = ("mzhaoshuai/SlimCLR: main_ssl_lincls.py lines 88-106 and 272-279, "
                  "models/backbones/slimmable_ops.py lines 58-76 (SwitchableLinear)")

    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        sd = state_dict_of(wf.obj)
        prefix = find_prefix(sd, PREFIXES)
        if prefix is not None and _linears(sd, prefix):
            return Claim(f"SlimCLR's flat blocks {prefix}features.* with a switchable probe {prefix}fc.linears.*")
        return None

    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        sd = state_dict_of(wf.obj)
        prefix = find_prefix(sd, PREFIXES)
        heads = _linears(sd, prefix) if prefix is not None else []
        if not heads:
            raise CheckpointError(f"{wf.path}: no SlimCLR encoder with fc.linears.{{i}} (a switchable probe): "
                                  f"not a SlimCLR -Linear release")
        enc = under(sd, prefix)
        model, dropped = slimclr_encoder({k: v for k, v in enc.items() if not k.startswith("fc.")}, wf.path)
        if heads != list(range(len(model.widths))):
            raise CheckpointError(f"{wf.path}: {len(heads)} probe layers fc.linears.* for {len(model.widths)} widths "
                                  f"{model.widths}")
        probe_sd = {}
        for i, w in enumerate(model.widths):
            weight, bias = enc[f"fc.linears.{i}.weight"], enc.get(f"fc.linears.{i}.bias")
            if weight.shape[1] != model.plan(SubnetSpec(w)).num_features:
                raise CheckpointError(f"{wf.path}: fc.linears.{i} reads {weight.shape[1]} features but width {w} "
                                      f"has {model.plan(SubnetSpec(w)).num_features}")
            probe_sd[f"heads.{i}.weight"] = weight.detach().clone()
            probe_sd[f"heads.{i}.bias"] = bias.detach().clone() if bias is not None else weight.new_zeros(weight.shape[0])
        probe = {"subnets": [str(SubnetSpec(w)) for w in model.widths], "num_classes": int(weight.shape[0]),
                 "feature_norm": False, "state_dict": probe_sd, "source": f"{wf.path} ({self.name})"}
        extra = {"dropped_keys": dropped + [k for k in sd if not k.startswith(prefix)],
                 "dropped_entries": other_entries(wf.obj), "not_unpickled": list(wf.placeholders)}
        if isinstance(wf.obj, dict) and isinstance(wf.obj.get("best_acc1"), (int, float)):
            extra["file_best_acc1"] = float(wf.obj["best_acc1"])
        return Checkpoint.from_model(model, method="import:slimclr-linear",
                                     config={"source": str(wf.path), "layout": self.name, "format": wf.format},
                                     extra=extra, probe=probe)
