"""What identifies a run and what makes runs comparable, both computed from the resolved suite.

A resolved suite is the plain data ``Suite.to_dict`` returns and the runs table keeps as
``suite_json``. Two digests are taken from it:

- ``run_digest``: name, protocol, dataset, params, the sub-network list and the seed. A finished run
  with the same checkpoint and run digest is the same work, and ``bench run`` reuses it.
- ``config_digest``: protocol, dataset and params only. Runs with the same config digest on one
  checkpoint measure the same thing (seeds and sub-network subsets of one experiment): they share
  leaderboard columns and the engines' work folders.

Settings that only decide how a run executes (``EXECUTION_ONLY``: loader workers, a feature-extraction
or evaluation batch in eval mode, process counts and rendezvous, checkpoint and log periods) enter
neither digest, so ``params.workers=0`` neither splits a leaderboard column nor stops a finished run
from being reused. The device never entered them (it is the run's ``device`` column; the ``latency``
experiments name it on purpose).

Kept free of torch so that the leaderboard stays a light, pure function of the rows.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Mapping, Optional, Tuple

COMPARABLE_KEYS = ("protocol", "dataset", "params")
# Per protocol, the dotted keys of its ``params`` that change how a run executes, never its numbers
# (tests/benchmarks/test_execution_settings.py checks each is a field of that protocol's Params).
_PROBE = ("params.workers", "params.eval_batch_size")   # eval-mode evaluation / feature extraction
EXECUTION_ONLY: Dict[str, Tuple[str, ...]] = {
    "knn": ("params.workers", "params.batch_size"),      # batch_size: the feature-extraction batch
    "linear": _PROBE,
    "linear-fast": _PROBE,
    "semi": _PROBE,
    "stored-probe": _PROBE,
    "detectron2": ("params.num_workers", "params.num_gpus", "params.num_machines", "params.machine_rank",
                   "params.dist_url", "params.checkpoint_period"),   # SOLVER.IMS_PER_BATCH is global
    "mmseg": ("params.num_workers", "params.checkpoint_interval", "params.log_interval"),
}


# Params a protocol gained after runs were recorded, with the value every earlier run had in effect: a run
# holding it digests as if the key did not exist, so earlier runs keep their columns and are reused.
LATER_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "linear": {"probe": "switchable"},
    "linear-fast": {"probe": "switchable"},
}


def _sha256(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def execution_only(protocol: Optional[str]) -> Tuple[str, ...]:
    """The dotted keys that only decide how a run of ``protocol`` executes."""
    return EXECUTION_ONLY.get(protocol or "", ())


def comparable(resolved: Mapping[str, Any]) -> Dict[str, Any]:
    """The part of a resolved suite that decides what its numbers mean (execution-only keys dropped)."""
    out = {key: resolved.get(key) for key in COMPARABLE_KEYS}
    for dotted in execution_only(resolved.get("protocol")):
        block, name = dotted.split(".", 1)
        if isinstance(out.get(block), Mapping) and name in out[block]:
            out[block] = {k: v for k, v in out[block].items() if k != name}
    params = out.get("params")
    if isinstance(params, Mapping):
        later = LATER_DEFAULTS.get(resolved.get("protocol") or "", {})
        out["params"] = {k: v for k, v in params.items() if not (k in later and v == later[k])}
    return out


def result_variant(protocol: Optional[str], variant: Mapping[str, Any]) -> Dict[str, Any]:
    """A suite's overridden keys without the execution-only ones (what names its leaderboard columns)."""
    skip = set(execution_only(protocol))
    return {k: v for k, v in variant.items() if k not in skip}


def config_digest(resolved: Mapping[str, Any]) -> str:
    """sha256 of protocol, dataset and params: equal for runs whose results are comparable."""
    return _sha256(comparable(resolved))


def run_digest(resolved: Mapping[str, Any], seed: int) -> str:
    """sha256 of name, protocol, dataset, params, sub-network list and seed: equal for the same work."""
    return _sha256({**comparable(resolved), "name": resolved.get("name"),
                    "subnets": list(resolved.get("subnets") or []), "seed": int(seed)})


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def variant_label(suite: str, variant: Mapping[str, Any], device: str = "") -> str:
    """``suite[key=value,...]@device``: ``params.`` is dropped from the keys (``fmnist-knn[k=200]``)."""
    items = [f"{k[len('params.'):] if k.startswith('params.') else k}={_short(v)}" for k, v in sorted(variant.items())]
    return suite + (f"[{','.join(items)}]" if items else "") + (f"@{device}" if device else "")
