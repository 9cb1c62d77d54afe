"""The leaderboard's table: a pure function of the results rows (``formats`` writes it, ``plot`` draws it).

One row per (checkpoint, sub-network). One column per metric of each experiment: the finished
runs of one suite whose protocol, dataset and params are equal (``digests.config_digest``), named
by the suite and the overrides that differ from its file (``fmnist-knn[k=200]/top1``); latency
experiments are also keyed by device (``latency@cpu/latency_ms``), and runs whose BatchNorm saw fewer
images together than the published run's by that count (``voc-seg(BN 4 of 16)/mIoU``, from the run
info ``bn_batch``/``bn_batch_published``). When two experiments would get
one name (a suite file edited between runs), the older ones carry their config digest
(``fmnist-knn#1a2b3c/top1``). A cell holds one value per seed, each the latest finished
measurement of that seed, and reads ``mean ± std (n)`` when n > 1 (std: the sample standard
deviation). ``params`` and ``macs`` come from the ``complexity`` experiment that covers the most
checkpoints; other complexity experiments are ordinary columns. Failed and running runs are left out.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pretrain.models.spec import SubnetSpec

from benchmarks.digests import config_digest, result_variant, variant_label
from benchmarks.report.cells import Cell, Measurement
from benchmarks.report.pairing import CheckpointMeta, Comparison, compare, find_pairs

SIZE_METRICS = ("params", "macs")
TIMING_METRICS = ("wall_time_s", "feature_time_s")   # what a run cost, not what it measured
ACCURACY_METRIC = "top1"
FIXED_COLUMNS = ("checkpoint", "method", "widths", "subnet")
# The metric a suite of each protocol is read by first (the compact table, the HTML's visible columns).
HEADLINE_METRICS = {"linear": "top1", "linear-fast": "top1", "knn": "top1", "semi": "top1",
                    "detectron2": "box_AP", "mmseg": "mIoU", "latency": "latency_ms"}


@dataclass
class Board:
    """The leaderboard table: fixed columns, then ``params``/``macs``, then one column per experiment/metric.

    ``protocols`` names each metric column's protocol (for headline metrics and grouping), ``metas``
    each checkpoint's pretraining metadata and ``comparison`` the sub-networks paired with their
    individually pretrained baselines (``benchmarks.report.pairing``).
    """

    metric_columns: List[str]
    rows: List[Dict[str, Any]] = field(default_factory=list)   # fixed columns as text, the others as Cells
    protocols: Dict[str, str] = field(default_factory=dict)
    metas: Dict[str, CheckpointMeta] = field(default_factory=dict)
    comparison: Optional[Comparison] = None
    published: List[Dict[str, Any]] = field(default_factory=list)   # reference rows (benchmarks.report.published)
    published_sources: List[str] = field(default_factory=list)

    def headline_columns(self) -> List[str]:
        """Each experiment's headline metric column (top-1, box AP, mIoU, latency), in column order."""
        return [c for c in self.metric_columns
                if c.rsplit("/", 1)[1] == HEADLINE_METRICS.get(self.protocols.get(c, ""), ACCURACY_METRIC)
                and self.protocols.get(c) != "complexity"]

    def is_baseline(self, row: Mapping[str, Any]) -> bool:
        """Whether a row belongs to an individually pretrained baseline."""
        meta = self.metas.get(row.get("digest", ""))
        return bool(meta and meta.individual)

    @property
    def columns(self) -> List[str]:
        return [*FIXED_COLUMNS, *SIZE_METRICS, *self.metric_columns]

    @property
    def value_columns(self) -> List[str]:
        return [*SIZE_METRICS, *self.metric_columns]


@dataclass
class _Experiment:
    """The finished runs of one suite with one config (and, for latency, one device; else one BN batch)."""

    suite: str
    protocol: str
    digest: str
    condition: str                        # latency: the device it ran on; other protocols: ``_bn_note``
    latest: Tuple[str, str] = ("", "")    # (end time, run id) of its latest run
    variant: Mapping[str, Any] = field(default_factory=dict)   # as that latest run recorded it
    checkpoints: set = field(default_factory=set)
    label: str = ""


def _subnet_order(name: str) -> Tuple:
    try:
        spec = SubnetSpec.parse(name)
        return (-spec.width, spec.depth is not None, spec.depth or ())
    except ValueError:
        return (0.0, True, (), name)


def checkpoint_label(row: Mapping[str, Any]) -> str:
    """``file-stem@digest-prefix``: readable, and distinct for different files of one name."""
    path = Path(row["checkpoint_path"])
    # run folders hold `checkpoint.pt`: the folder names the run (e.g. demo-dspnet)
    name = path.parent.name if path.stem == "checkpoint" and path.parent.name else path.stem
    return f"{name}@{row['checkpoint_digest'][:8]}"


def _device(row: Mapping[str, Any]) -> str:
    """The device a latency run measured: the run's device, with the GPU's name when it recorded one."""
    name = json.loads(row.get("info_json") or "{}").get("device_name")
    return f"{row['device']}:{name}" if name and name not in (row["device"], "cpu") else row["device"]


def _bn_note(row: Mapping[str, Any]) -> str:
    """``BN 4 of 16`` when the run's BatchNorm normalized fewer (or more) images together than the published."""
    info = json.loads(row.get("info_json") or "{}")
    here, published = info.get("bn_batch"), info.get("bn_batch_published")
    return f"BN {here} of {published}" if here and published and here != published else ""


def _experiment_key(row: Mapping[str, Any]) -> Tuple[str, str, str]:
    condition = _device(row) if row["protocol"] == "latency" else _bn_note(row)
    return row["suite"], config_digest(json.loads(row["suite_json"])), condition


def _experiments(rows: Sequence[Mapping[str, Any]]) -> Dict[Tuple[str, str, str], _Experiment]:
    """Every experiment of the rows, each with a column name no other experiment has."""
    found: Dict[Tuple[str, str, str], _Experiment] = {}
    for r in rows:
        key = _experiment_key(r)
        e = found.setdefault(key, _Experiment(r["suite"], r["protocol"], key[1], key[2]))
        if (r["ended_at"], r["run_id"]) > e.latest:
            e.latest = (r["ended_at"], r["run_id"])   # execution-only overrides name no column
            e.variant = result_variant(r["protocol"], json.loads(r.get("variant_json") or "{}"))
        e.checkpoints.add(r["checkpoint_digest"])
    by_label: Dict[str, List[_Experiment]] = {}
    for e in found.values():
        e.label = (variant_label(e.suite, e.variant, e.condition) if e.protocol == "latency"
                   else variant_label(e.suite, e.variant) + (f"({e.condition})" if e.condition else ""))
        by_label.setdefault(e.label, []).append(e)
    for same in by_label.values():
        # the most recent experiment keeps the plain name; older ones of that name show their digest
        for e in sorted(same, key=lambda e: (e.latest, e.digest))[:-1]:
            e.label = f"{e.label}#{e.digest[:6]}"
    return found


def _size_experiment(experiments: Iterable[_Experiment]) -> Optional[_Experiment]:
    """The complexity experiment covering the most checkpoints (then the most recent): it fills params/macs."""
    sizes = [e for e in experiments if e.protocol == "complexity"]
    return max(sizes, key=lambda e: (len(e.checkpoints), e.latest, e.digest)) if sizes else None


def build(rows: Iterable[Mapping[str, Any]], suites: Optional[Sequence[str]] = None,
          published: Sequence[Any] = ()) -> Board:
    """The leaderboard of ``rows`` (as ``ResultsStore.rows()`` returns them), optionally for some suites only,
    with the ``published`` results (``benchmarks.report.published``) of its suites as reference rows."""
    finished = [r for r in rows if r["status"] == "finished" and (not suites or r["suite"] in suites)]
    experiments = _experiments(finished)
    sizes = _size_experiment(experiments.values())
    # (checkpoint, sub-network, column, seed) -> (end time, run id, value) of its latest finished measurement
    latest: Dict[Tuple[str, str, str, int], Tuple[str, str, float]] = {}
    table: Dict[Tuple[str, str], Dict[str, Any]] = {}
    metric_columns = set()
    protocols: Dict[str, str] = {}
    metas: Dict[str, CheckpointMeta] = {}
    for r in finished:
        e = experiments[_experiment_key(r)]
        if e is sizes and r["metric"] in SIZE_METRICS:
            column = r["metric"]
        else:
            column = f"{e.label}/{r['metric']}"
            metric_columns.add(column)
            protocols[column] = e.protocol
        metas.setdefault(r["checkpoint_digest"], CheckpointMeta.from_row(r, checkpoint_label(r)))
        key = (r["checkpoint_digest"], r["subnet"], column, int(r.get("seed") or 0))
        latest[key] = max(latest.get(key, ("", "", float("-inf"))), (r["ended_at"], r["run_id"], float(r["value"])))
        table.setdefault((r["checkpoint_digest"], r["subnet"]), {
            "checkpoint": checkpoint_label(r), "method": r["checkpoint_method"],
            "widths": "/".join(str(w) for w in json.loads(r["checkpoint_widths"])), "subnet": r["subnet"],
            "digest": r["checkpoint_digest"]})
    measured: Dict[Tuple[str, str, str], List[Measurement]] = {}
    for (ckpt, subnet, column, seed), (_, run_id, value) in sorted(latest.items()):
        measured.setdefault((ckpt, subnet, column), []).append(Measurement(seed, value, run_id))
    for (ckpt, subnet, column), values in measured.items():
        table[(ckpt, subnet)][column] = Cell(tuple(values))
    ordered = sorted(table.values(), key=lambda row: (row["checkpoint"], _subnet_order(row["subnet"])))
    columns = sorted(metric_columns)
    values = {(row["digest"], row["subnet"]): {c: v.mean for c, v in row.items() if isinstance(v, Cell)}
              for row in ordered}
    # the comparison sets results side by side; a run's timings are not results
    results = [c for c in columns if c.rsplit("/", 1)[1] not in TIMING_METRICS]
    comparison = compare(find_pairs(metas.values()), values, results)
    board = Board(columns, ordered, protocols, metas, comparison if comparison.rows else None)
    if published:
        from benchmarks.report.published import attach

        attach(board, published)
    return board


