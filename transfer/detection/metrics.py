"""Detectron2's evaluation results as SlimBench's flat metrics, and the names both sides of a run share
(no Detectron2 import: the launched trainer and the protocol's result rows both read it)."""
from __future__ import annotations

import math
from typing import Dict, List

TASK_PREFIX = {"bbox": "box", "segm": "mask"}
REPORTED = ("AP", "AP50", "AP75", "APs", "APm", "APl")
SLIMMABLE_FPN_BACKBONE = "build_slimmable_resnet_fpn_backbone"   # transfer.detection.slimmable registers it
NO_PREDICTIONS = "no_predictions"   # the key of results.json listing the tasks nothing was predicted for


def tasks_without_predictions(results: Dict[str, Dict[str, float]]) -> List[str]:
    """The tasks Detectron2 evaluated with no prediction at all (it reports their AP as NaN)."""
    return sorted(task for task, metrics in results.items()
                  if task in TASK_PREFIX and math.isnan(metrics.get("AP", 0.0)))


def flatten_metrics(results: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """Detectron2's ``{"bbox": {"AP": ...}, "segm": ...}`` as ``{"box_AP": ..., "mask_AP": ...}``.

    A task with no predictions at all scores 0 AP (Detectron2 reports NaN); size buckets that are
    undefined (no ground truth of that size) are left out.
    """
    out = {}
    for task, metrics in results.items():
        prefix = TASK_PREFIX.get(task)
        if prefix is None:
            continue
        for key in REPORTED:
            value = metrics.get(key)
            if value is None:
                continue
            if math.isnan(value):
                if key not in ("AP", "AP50", "AP75"):
                    continue
                value = 0.0
            out[f"{prefix}_{key}"] = float(value)
    return out
