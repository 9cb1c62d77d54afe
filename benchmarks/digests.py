"""What identifies a run and what makes runs comparable, both computed from the resolved suite.

A resolved suite is the plain data ``Suite.to_dict`` returns and the runs table keeps as
``suite_json``. Two digests are taken from it:

- ``run_digest``: name, protocol, dataset, params, the sub-network list and the seed. A finished run
  with the same checkpoint and run digest is the same work, and ``bench run`` reuses it.
- ``config_digest``: protocol, dataset and params only. Runs with the same config digest on one
  checkpoint measure the same thing (seeds and sub-network subsets of one experiment): they share
  leaderboard columns and the engines' work folders.

Kept free of torch so that the leaderboard stays a light, pure function of the rows.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Mapping

COMPARABLE_KEYS = ("protocol", "dataset", "params")


def _sha256(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def comparable(resolved: Mapping[str, Any]) -> Dict[str, Any]:
    """The part of a resolved suite that decides what its numbers mean."""
    return {key: resolved.get(key) for key in COMPARABLE_KEYS}


def config_digest(resolved: Mapping[str, Any]) -> str:
    """sha256 of protocol, dataset and params: equal for runs whose results are comparable."""
    return _sha256(comparable(resolved))


def run_digest(resolved: Mapping[str, Any], seed: int) -> str:
    """sha256 of name, protocol, dataset, params, sub-network list and seed: equal for the same work."""
    return _sha256({**comparable(resolved), "name": resolved.get("name"),
                    "subnets": list(resolved.get("subnets") or []), "seed": int(seed)})
