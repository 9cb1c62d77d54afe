"""The papers' comparison: each slimmable sub-network beside a network of its width pretrained alone.

A pure function of the results rows, like the leaderboard. A checkpoint's metadata travels with
its runs (``runs.checkpoint_meta_json``: the recipe digest, the individual-baseline record and the
training cost that ``pretrain`` wrote into it). An individual baseline is paired with a slimmable
checkpoint when its record names that checkpoint's recipe digest, at the sub-network it names;
file names play no part. The cost ratio of a slimmable checkpoint is its total cost over the sum
of the costs of the baselines paired with it, in training FLOPs and in device-seconds. A pair whose
networks the pretraining diagnosed (``diagnosis``: e.g. a network that tells no two images apart)
carries those warnings, so a difference is never read without them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

COST_KEYS = ("train_flops", "device_seconds")


@dataclass(frozen=True)
class CheckpointMeta:
    """What pairing needs to know of one checkpoint."""

    digest: str
    label: str
    recipe_digest: Optional[str] = None
    individual: Optional[Mapping[str, Any]] = None   # {"of_recipe_digest", "subnet", "method"}
    cost: Optional[Mapping[str, Any]] = None
    diagnosis: Sequence[Mapping[str, str]] = ()      # [{"subnet", "message"}] from the pretraining's last log

    def warnings_for(self, subnet: str) -> List[Dict[str, str]]:
        """This checkpoint's diagnosis of ``subnet`` (every diagnosis of an individual baseline's one network)."""
        return [{"checkpoint": self.label, "subnet": subnet, "alone": bool(self.individual), "message": d["message"]}
                for d in self.diagnosis if self.individual or d["subnet"] == subnet]

    @classmethod
    def from_row(cls, row: Mapping[str, Any], label: str) -> "CheckpointMeta":
        """From a results row (``ResultsStore.rows()``); rows of older runs have no metadata."""
        meta = json.loads(row.get("checkpoint_meta_json") or "{}")
        return cls(row["checkpoint_digest"], label, meta.get("recipe_digest"), meta.get("individual"),
                   meta.get("cost"), tuple(meta.get("diagnosis") or ()))


@dataclass(frozen=True)
class Pair:
    """A slimmable checkpoint's sub-network and its individually pretrained baseline."""

    slim: CheckpointMeta
    baseline: CheckpointMeta

    @property
    def subnet(self) -> str:
        return str(self.baseline.individual["subnet"])


def find_pairs(metas: Iterable[CheckpointMeta]) -> List[Pair]:
    """Every (slimmable checkpoint, baseline) pair: the baseline's record names the checkpoint's recipe digest."""
    metas = list({m.digest: m for m in metas}.values())
    slims = [m for m in metas if m.individual is None and m.recipe_digest]
    baselines = [m for m in metas if m.individual]
    pairs = [Pair(s, b) for s in slims for b in baselines if b.individual.get("of_recipe_digest") == s.recipe_digest]
    return sorted(pairs, key=lambda p: (p.slim.label, p.subnet, p.baseline.label))


def cost_ratio(slim: CheckpointMeta, baselines: Sequence[CheckpointMeta], key: str) -> Optional[float]:
    """``slim``'s total ``key`` cost over the sum of its baselines'; None when any of them has no cost."""
    costs = [m.cost for m in (slim, *baselines)]
    if not baselines or any(not c or c.get(key) is None for c in costs):
        return None
    total = sum(float(c[key]) for c in costs[1:])
    return float(costs[0][key]) / total if total > 0 else None


@dataclass
class Comparison:
    """Rows of (slimmable checkpoint, sub-network, baseline) with both values of every shared metric."""

    metric_columns: List[str]
    rows: List[Dict[str, Any]]          # checkpoint, subnet, baseline, warnings, then per column: (slim, baseline)
    ratios: List[Dict[str, Any]]        # per slimmable checkpoint: its baselines and the cost ratios


def compare(pairs: Sequence[Pair], values: Mapping[tuple, Mapping[str, float]],
            metric_columns: Sequence[str]) -> Comparison:
    """The comparison of ``pairs``; ``values[(checkpoint digest, subnet)]`` maps a column to its value."""
    rows = []
    used = set()
    for p in pairs:
        slim, base = values.get((p.slim.digest, p.subnet), {}), values.get((p.baseline.digest, p.subnet), {})
        shared = {c: (slim[c], base[c]) for c in metric_columns if c in slim and c in base}
        used.update(shared)
        warnings = p.slim.warnings_for(p.subnet) + p.baseline.warnings_for(p.subnet)
        rows.append({"checkpoint": p.slim.label, "subnet": p.subnet, "baseline": p.baseline.label,
                     "warnings": warnings, **shared})
    ratios = []
    for label in dict.fromkeys(p.slim.label for p in pairs):
        mine = [p for p in pairs if p.slim.label == label]
        bases = [p.baseline for p in mine]
        ratios.append({"checkpoint": label, "baselines": [p.subnet for p in mine],
                       **{key: cost_ratio(mine[0].slim, bases, key) for key in COST_KEYS}})
    return Comparison([c for c in metric_columns if c in used], rows, ratios)
