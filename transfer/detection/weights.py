"""Load an exported backbone into a Detectron2 model through Detectron2's own checkpointer, checked.

A backbone key that stays missing (or a weight left unused) means the config describes another
network than the file holds; Detectron2 only logs that and trains from random weights, so
SlimBench refuses it instead. Head layers (RPN, box/mask heads, FPN, the extra res5 norm) are
new and expected to be missing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

from transfer.detection.compat import import_detectron2

import_detectron2()

import torch.nn as nn  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402

from pretrain.errors import SlimBenchError  # noqa: E402

# a backbone tensor in any of Detectron2's placements: backbone.[bottom_up.]stem/resN.i..., roi_heads.res5.i...
BACKBONE_KEY = re.compile(r"(?:^|\.)(?:stem|res[2-5]\.\d+)\.")


class BackboneLoadError(SlimBenchError):
    """An exported backbone that does not fit the Detectron2 model built for it."""


@dataclass(frozen=True)
class LoadReport:
    """What Detectron2's checkpointer did with a backbone file."""

    loaded: int                           # backbone tensors of the model filled from the file
    missing: Tuple[str, ...]              # model keys with no value in the file (heads are expected here)
    unexpected: Tuple[str, ...]           # file keys the model did not use
    incorrect_shapes: Tuple[Tuple[str, tuple, tuple], ...]

    @property
    def missing_backbone(self) -> List[str]:
        return [k for k in self.missing if BACKBONE_KEY.search(k)]


class _RecordingCheckpointer(DetectionCheckpointer):
    """Detectron2's checkpointer, keeping the incompatible keys it otherwise only logs."""

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def load_backbone(model: nn.Module, path: "str | Path", strict: bool = True) -> LoadReport:
    """Load ``path`` (an exported ``.pkl``) into ``model``; with ``strict``, refuse any backbone mismatch."""
    path = Path(path)
    if not path.is_file():
        raise BackboneLoadError(f"backbone weights {path}: no such file (write it with `bench export --to detectron2`)")
    checkpointer = _RecordingCheckpointer(model, save_to_disk=False)
    checkpointer.load(str(path), checkpointables=[])
    inc = checkpointer.incompatible
    backbone_keys = [k for k in checkpointer.model.state_dict() if BACKBONE_KEY.search(k)]
    missing = tuple(inc.missing_keys)
    report = LoadReport(loaded=len([k for k in backbone_keys if k not in missing]), missing=missing,
                        unexpected=tuple(inc.unexpected_keys),
                        incorrect_shapes=tuple((k, tuple(a), tuple(b)) for k, a, b in inc.incorrect_shapes))
    if strict and (report.missing_backbone or report.unexpected or report.incorrect_shapes):
        raise BackboneLoadError(
            f"backbone weights {path} do not fit the Detectron2 model: {len(report.missing_backbone)} backbone "
            f"keys missing (e.g. {report.missing_backbone[:3]}), {len(report.unexpected)} unused "
            f"(e.g. {list(report.unexpected[:3])}), {len(report.incorrect_shapes)} of wrong shape "
            f"(e.g. {list(report.incorrect_shapes[:2])}); was the file exported from the sub-network the config names?")
    if report.loaded == 0:
        raise BackboneLoadError(f"backbone weights {path}: no backbone tensor of the model was filled from it")
    return report
