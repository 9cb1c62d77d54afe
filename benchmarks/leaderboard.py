"""The leaderboard: a pure function of the results rows, written as Markdown, CSV or HTML (+ PNG plot).

One row per (checkpoint, sub-network). One column per metric of each experiment: the finished
runs of one suite whose protocol, dataset and params are equal (``digests.config_digest``), named
by the suite and the overrides that differ from its file (``fmnist-knn[k=200]/top1``); latency
experiments are also keyed by device (``latency@cpu/latency_ms``). When two experiments would get
one name (a suite file edited between runs), the older ones carry their config digest
(``fmnist-knn#1a2b3c/top1``). A cell holds one value per seed, each the latest finished
measurement of that seed, and reads ``mean ± std (n)`` when n > 1 (std: the sample standard
deviation). ``params`` and ``macs`` come from the ``complexity`` experiment that covers the most
checkpoints; other complexity experiments are ordinary columns. Failed and running runs are left out.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pretrain.spec import SubnetSpec

from .digests import config_digest, result_variant
from .pairing import CheckpointMeta, Comparison, compare, find_pairs
from .published import plot_points, source_lines, sources_html

SIZE_METRICS = ("params", "macs")
TIMING_METRICS = ("wall_time_s", "feature_time_s")   # what a run cost, not what it measured
ACCURACY_METRIC = "top1"
FIXED_COLUMNS = ("checkpoint", "method", "widths", "subnet")
FORMATS = ("md", "csv", "csv-long", "html")
# The metric a suite of each protocol is read by first (the compact table, the HTML's visible columns).
HEADLINE_METRICS = {"linear": "top1", "linear-fast": "top1", "knn": "top1", "semi": "top1",
                    "detectron2": "box_AP", "mmseg": "mIoU", "latency": "latency_ms"}


@dataclass(frozen=True)
class Measurement:
    """One seed's value in a cell, and the run that measured it."""

    seed: int
    value: float
    run_id: str


@dataclass(frozen=True)
class Cell:
    """One leaderboard cell: a value per seed, each the latest finished measurement of that seed."""

    measurements: Tuple[Measurement, ...]   # by seed

    @property
    def n(self) -> int:
        return len(self.measurements)

    @property
    def mean(self) -> float:
        return statistics.fmean(m.value for m in self.measurements)

    @property
    def std(self) -> Optional[float]:
        """The sample standard deviation over seeds; None for one seed."""
        return statistics.stdev(m.value for m in self.measurements) if self.n > 1 else None


@dataclass
class Board:
    """The leaderboard table: fixed columns, then ``params``/``macs``, then one column per experiment/metric.

    ``protocols`` names each metric column's protocol (for headline metrics and grouping), ``metas``
    each checkpoint's pretraining metadata and ``comparison`` the sub-networks paired with their
    individually pretrained baselines (``benchmarks.pairing``).
    """

    metric_columns: List[str]
    rows: List[Dict[str, Any]] = field(default_factory=list)   # fixed columns as text, the others as Cells
    protocols: Dict[str, str] = field(default_factory=dict)
    metas: Dict[str, CheckpointMeta] = field(default_factory=dict)
    comparison: Optional[Comparison] = None
    published: List[Dict[str, Any]] = field(default_factory=list)   # reference rows (benchmarks.published)
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
    """The finished runs of one suite with one config (and, for latency, one device)."""

    suite: str
    protocol: str
    digest: str
    device: str
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


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def variant_label(suite: str, variant: Mapping[str, Any], device: str = "") -> str:
    """``suite[key=value,...]@device``: ``params.`` is dropped from the keys (``fmnist-knn[k=200]``)."""
    items = [f"{k[len('params.'):] if k.startswith('params.') else k}={_short(v)}" for k, v in sorted(variant.items())]
    return suite + (f"[{','.join(items)}]" if items else "") + (f"@{device}" if device else "")


def _device(row: Mapping[str, Any]) -> str:
    """The device a latency run measured: the run's device, with the GPU's name when it recorded one."""
    name = json.loads(row.get("info_json") or "{}").get("device_name")
    return f"{row['device']}:{name}" if name and name not in (row["device"], "cpu") else row["device"]


def _experiment_key(row: Mapping[str, Any]) -> Tuple[str, str, str]:
    device = _device(row) if row["protocol"] == "latency" else ""
    return row["suite"], config_digest(json.loads(row["suite_json"])), device


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
        e.label = variant_label(e.suite, e.variant, e.device)
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
    with the ``published`` results (``benchmarks.published``) of its suites as reference rows."""
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
        from .published import attach

        attach(board, published)
    return board


def _number(column: str) -> Callable[[float], str]:
    if column == "params":
        return lambda v: f"{v / 1e6:.2f}M"
    if column == "macs":
        return lambda v: f"{v / 1e9:.3f}G"
    return lambda v: f"{v:.2f}"


def _fmt(column: str, value: Any) -> str:
    """A cell as text: the value, or ``mean ± std (n)`` over n > 1 seeds."""
    if value is None:
        return ""
    if not isinstance(value, Cell):
        return str(value)
    number = _number(column)
    if value.n == 1:
        return number(value.mean)
    return f"{number(value.mean)} ± {number(value.std)} ({value.n})"


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]], left: int) -> List[str]:
    rule = "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"
    return ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(r) + " |" for r in rows)]


def to_markdown(board: Board) -> str:
    """A GitHub-flavoured Markdown table, then the comparison with individual baselines when there is one."""
    cols = board.columns
    lines = _md_table(cols, ([_fmt(c, row.get(c)) for c in cols] for row in [*board.rows, *board.published]),
                      len(FIXED_COLUMNS))
    lines += ["", *source_lines(board)] if board.published else []
    if board.comparison:
        lines += ["", "Slimmable sub-networks against networks of their width pretrained alone "
                      "(slimmable / alone, difference):", ""]
        lines += comparison_lines(board.comparison, board.comparison.metric_columns, markdown=True)
    return "\n".join(lines) + "\n"


def _vs(column: str, pair: Tuple[float, float]) -> str:
    number = _number(column)
    return f"{number(pair[0])} / {number(pair[1])} ({pair[0] - pair[1]:+.2f})"


def ratio_lines(comparison: Comparison) -> List[str]:
    """One sentence per slimmable checkpoint: its cost over the sum of its baselines' costs."""
    out = []
    for r in comparison.ratios:
        costs = ", ".join(f"{r[key]:.2f}x {name}" for key, name in (("train_flops", "training FLOPs"),
                                                                      ("device_seconds", "device-seconds"))
                          if r[key] is not None) or "unknown (a checkpoint without a cost record)"
        out.append(f"cost of {r['checkpoint']} / the sum of its individual baselines "
                   f"({', '.join(r['baselines'])}): {costs}")
    return out


def _warnings(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """``<checkpoint>[ <subnet>]: <message>`` for each diagnosed network of these comparison rows, once each."""
    return list(dict.fromkeys(f"{w['checkpoint']}{'' if w['alone'] else ' ' + w['subnet']}: {w['message']}"
                              for r in rows for w in r.get("warnings", ())))


def warning_lines(comparison: Comparison) -> List[str]:
    """One line per network of a pair that its pretraining diagnosed, marked ``!`` as its table cell."""
    return [f"! {w}" for w in _warnings(comparison.rows)]


def _pair_cells(r: Dict[str, Any]) -> List[str]:
    """The checkpoint, sub-network and baseline cells of a comparison row, ``!`` where a warning applies."""
    def mark(alone: bool) -> str:
        return " !" if any(w["alone"] is alone for w in r.get("warnings", ())) else ""
    return [r["checkpoint"] + mark(False), r["subnet"], r["baseline"] + mark(True)]


def comparison_lines(comparison: Comparison, columns: Sequence[str], markdown: bool) -> List[str]:
    """The comparison as Markdown (or aligned text) rows, then the cost ratios and the warnings."""
    header = ["checkpoint", "subnet", "alone"] + [c for c in columns]
    rows = [[*_pair_cells(r), *(_vs(c, r[c]) if c in r else "" for c in columns)] for r in comparison.rows]
    table = _md_table(header, rows, 3) if markdown else _text_table(header, rows, 3)
    return [*table, "", *ratio_lines(comparison), *warning_lines(comparison)]


def _spread_columns(board: Board) -> List[str]:
    """The value columns with more than one seed in some cell."""
    return [c for c in board.value_columns if any(isinstance(r.get(c), Cell) and r[c].n > 1 for r in board.rows)]


def to_csv(board: Board) -> str:
    """CSV, one row per checkpoint and sub-network: raw means (params and MACs as counts).

    A column with several seeds in some cell also gets ``<column>_std`` and ``<column>_n``; the
    per-seed values are in ``to_long_csv``. A board of single seeds keeps the plain layout.
    """
    spread = set(_spread_columns(board))
    fields = list(FIXED_COLUMNS)
    for c in board.value_columns:
        fields += [c, f"{c}_std", f"{c}_n"] if c in spread else [c]
    paired = _paired_rows(board)
    if paired:   # a slimmable sub-network's row also carries its individual baseline's values
        compared = board.comparison.metric_columns
        fields += ["individual_baseline", "pair_warnings", *(f"{c}_individual" for c in compared),
                   "cost_ratio_train_flops", "cost_ratio_device_seconds"]
    fields += ["published_source"] if board.published else []   # set on reference rows only
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in [*board.rows, *board.published]:
        out = {c: row[c] for c in FIXED_COLUMNS}
        if "published_source" in row:
            out["published_source"] = row["published_source"]
        for c in board.value_columns:
            cell = row.get(c)
            if cell is None:
                continue
            out[c] = cell.mean
            if c in spread:
                out[f"{c}_std"] = "" if cell.std is None else cell.std
                out[f"{c}_n"] = cell.n
        pair = paired.get((row["checkpoint"], row["subnet"]))
        if pair:
            comparison_row, ratio = pair
            out["individual_baseline"] = comparison_row["baseline"]
            out["pair_warnings"] = "; ".join(_warnings([comparison_row]))
            for c in board.comparison.metric_columns:
                if c in comparison_row:
                    out[f"{c}_individual"] = comparison_row[c][1]
            out["cost_ratio_train_flops"] = ratio["train_flops"]
            out["cost_ratio_device_seconds"] = ratio["device_seconds"]
        writer.writerow(out)
    return buf.getvalue()


def _paired_rows(board: Board) -> Dict[Tuple[str, str], Tuple[Dict[str, Any], Dict[str, Any]]]:
    """(checkpoint label, subnet) of each slimmable row with a baseline -> (its comparison row, its cost ratios)."""
    if not board.comparison:
        return {}
    ratios = {r["checkpoint"]: r for r in board.comparison.ratios}
    return {(r["checkpoint"], r["subnet"]): (r, ratios[r["checkpoint"]]) for r in board.comparison.rows}


def to_long_csv(board: Board) -> str:
    """CSV, one row per measured value and seed (tidy: what pandas / R group and plot with error bars)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*FIXED_COLUMNS, "column", "seed", "value", "run_id"])
    for row in [*board.rows, *board.published]:   # a reference row's run_id is published:<address>
        for c in board.value_columns:
            for m in row[c].measurements if c in row else ():
                writer.writerow([*(row[f] for f in FIXED_COLUMNS), c, m.seed, m.value, m.run_id])
    return buf.getvalue()


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> List[str]:
    """Aligned columns for a terminal: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    def line(cells):
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [line(header), line("-" * w for w in widths), *(line(r) for r in rows)]


def _short_checkpoint(label: str) -> str:
    """``demo-slimclr-mocov2-individual-w0.25@1a2b..`` -> ``demo-slimclr-mocov2 alone w0.25``, for a terminal.

    The recipe's name stays whole: ``demo-dspnet``'s rows come from the demo recipe, not DSPNet's."""
    return label.split("@", 1)[0].replace("-individual-", " alone ")


def _short_column(column: str) -> str:
    """``fmnist-linear-fast/top1`` -> ``linear-fast``: the suite without its demo prefix."""
    suite = column.rsplit("/", 1)[0]
    for prefix in ("fmnist-", "demo-"):
        suite = suite[len(prefix):] if suite.startswith(prefix) else suite
    return suite.split("@", 1)[0]


def to_terminal(board: Board, max_width: int = 120) -> str:
    """The compact view: checkpoint, sub-network, params, MACs and each suite's headline metric; then the
    comparison with individual baselines. The full table is in the other formats."""
    heads = board.headline_columns()
    labels = [_short_checkpoint(r["checkpoint"]) for r in board.rows]
    if len(set(labels)) < len(set(r["checkpoint"] for r in board.rows)):   # short names collide: keep digests
        labels = [r["checkpoint"] for r in board.rows]
    header = ["checkpoint", "subnet", "params", "MACs", *(_short_column(c) for c in heads)]
    references = [r for r in board.published if any(c in r for c in heads)]
    rows = [[label, r["subnet"], *(_fmt(c, r.get(c)) for c in ("params", "macs", *heads))]
            for label, r in zip([*labels, *(r["checkpoint"] for r in references)], [*board.rows, *references])]
    lines = _text_table(header, rows, 2)
    units = sorted({f"{_short_column(c)}: {c.rsplit('/', 1)[1]}" for c in heads})
    lines += _wrap(["metrics: " + ", ".join(units)], max_width)
    lines += _wrap(source_lines(board, short=True), max_width) if references else []
    if board.comparison:
        shown = [c for c in heads if c in board.comparison.metric_columns]
        comparison = Comparison(shown, [{**r, "checkpoint": _short_checkpoint(r["checkpoint"]),
                                         "baseline": _short_checkpoint(r["baseline"]),
                                         "warnings": [{**w, "checkpoint": _short_checkpoint(w["checkpoint"])}
                                                      for w in r.get("warnings", ())]}
                                        for r in board.comparison.rows],
                                [{**r, "checkpoint": _short_checkpoint(r["checkpoint"])}
                                 for r in board.comparison.ratios])
        header = ["checkpoint", "subnet", "alone", *(_short_column(c) for c in shown)]
        rows = [[*_pair_cells(r), *(_vs(c, r[c]) if c in r else "" for c in shown)] for r in comparison.rows]
        lines += ["", "slimmable vs pretrained alone (slimmable / alone, difference):",
                  *_text_table(header, rows, 3), *_wrap([*ratio_lines(comparison), *warning_lines(comparison)],
                                                        max_width)]
    return "\n".join(lines)


def _wrap(lines: Sequence[str], width: int) -> List[str]:
    """Prose lines wrapped at ``width`` between words (continuations indented); tables are never cut."""
    out: List[str] = []
    for line in lines:
        out += textwrap.wrap(line, width, subsequent_indent="    ", break_long_words=False,
                             break_on_hyphens=False) or [""]
    return out


def accuracy_columns(board: Board) -> List[str]:
    """The top-1 columns, which the accuracy-vs-MACs plot shows."""
    return [c for c in board.metric_columns if c.endswith("/" + ACCURACY_METRIC)]


def plot_png(board: Board) -> Optional[bytes]:
    """Accuracy vs MACs, one panel per top-1 column, one line per checkpoint (error bars: std over seeds);
    None without MACs and accuracies."""
    columns = [c for c in accuracy_columns(board) if any("macs" in r and c in r for r in board.rows)]
    if not columns:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    def points(rows):
        return sorted((r["macs"].mean / 1e9, r[column].mean, r[column].std or 0.0, r["subnet"]) for r in rows
                      if "macs" in r and column in r)

    fig, axes = plt.subplots(1, len(columns), figsize=(5.5 * len(columns), 4.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        colors = {}
        for checkpoint in dict.fromkeys(r["checkpoint"] for r in board.rows if not board.is_baseline(r)):
            pts = points(r for r in board.rows if r["checkpoint"] == checkpoint)
            if not pts:
                continue
            line = ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                               capsize=3, label=checkpoint)
            colors[checkpoint] = line[0].get_color()
            for x, y, _, name in pts:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        # Individual baselines: a separate marker in the colour of the slimmable run they are paired with.
        labelled = set()
        for pair in board.comparison.rows if board.comparison else []:
            pts = points(r for r in board.rows if r["checkpoint"] == pair["baseline"] and r["subnet"] == pair["subnet"])
            for x, y, err, _ in pts:
                first = pair["checkpoint"] not in labelled
                labelled.add(pair["checkpoint"])
                ax.errorbar([x], [y], yerr=[err], marker="*", markersize=11, linestyle="none", capsize=3,
                            color=colors.get(pair["checkpoint"]),
                            label=f"pretrained alone ({pair['checkpoint'].split('@')[0]})" if first else None)
        # Published reference rows: hollow markers, one colour per published network, never joined by a line.
        published = plot_points(board, column)
        for label in dict.fromkeys(p[2] for p in published):
            pts = [p for p in published if p[2] == label]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="D", markersize=7, linestyle="none",
                    markerfacecolor="none", label=label)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())  # log-scale minor labels collide on a decade or less
        ax.margins(x=0.12, y=0.08)  # room for the sub-network labels
        ax.set_xlabel("MACs (G)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(column.rsplit("/", 1)[0])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


_SORT_JS = """
document.querySelectorAll('table.board thead th').forEach(function (th) {
  th.addEventListener('click', function () {
    var i = th.cellIndex, body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v, nx = parseFloat(x), ny = parseFloat(y);
      if (x === '' || y === '') return (x === '') - (y === '');
      return (isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.getElementById('all-metrics').addEventListener('change', function (e) {
  document.body.classList.toggle('all-metrics', e.target.checked);
});
"""


def _html_cell(column: str, value: Any, cls: str = "") -> str:
    """A ``<td>`` sorting by its mean (``data-v``), with each seed's value as its tooltip."""
    mean = value.mean if isinstance(value, Cell) else ("" if value is None else value)
    title = ""
    if isinstance(value, Cell) and value.n > 1:
        number = _number(column)
        seeds = "; ".join(f"seed {m.seed}: {number(m.value)}" for m in value.measurements)
        title = f' title="{html.escape(seeds)}"'
    klass = f' class="{cls}"' if cls else ""
    return f'<td{klass} data-v="{html.escape(str(mean))}"{title}>{html.escape(_fmt(column, value))}</td>'


def html_columns(board: Board) -> List[Tuple[str, str]]:
    """(column, CSS class) in the page's order: fixed columns, params/MACs, then each suite's columns
    grouped, its headline metric first; the others are ``extra`` (hidden until asked for)."""
    heads = set(board.headline_columns())
    groups: Dict[str, List[str]] = {}
    for c in board.metric_columns:
        groups.setdefault(c.rsplit("/", 1)[0], []).append(c)
    out = [(c, "") for c in (*FIXED_COLUMNS, *SIZE_METRICS)]
    for columns in groups.values():
        ordered = sorted(columns, key=lambda c: c not in heads)
        out += [(c, "group" + ("" if c in heads or (i == 0 and not heads & set(columns)) else " extra"))
                for i, c in enumerate(ordered)]
    return out


def _comparison_html(board: Board) -> str:
    if not board.comparison:
        return ""
    cols = board.comparison.metric_columns
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("checkpoint", "subnet", "pretrained alone", *cols))
    body = []
    for r in board.comparison.rows:
        cells = [f'<td data-v="{html.escape(v)}">{html.escape(v)}</td>' for v in _pair_cells(r)]
        cells += [f'<td data-v="{r[c][0] - r[c][1]}">{html.escape(_vs(c, r[c]))}</td>' if c in r else '<td data-v=""></td>'
                  for c in cols]
        body.append("<tr>" + "".join(cells) + "</tr>")
    ratios = "".join(f"<li>{html.escape(line)}</li>"
                     for line in ratio_lines(board.comparison) + warning_lines(board.comparison))
    return (f'<h2>Slimmable sub-networks against networks pretrained alone</h2>\n<p>Each cell: slimmable / '
            f'pretrained alone (difference); sorting uses the difference.</p>\n<table class="board" id="comparison">'
            f'<thead><tr>{head}</tr></thead>\n<tbody>\n{chr(10).join(body)}\n</tbody></table>\n<ul>{ratios}</ul>')


def to_html(board: Board, png: Optional[bytes] = None, title: str = "SlimBench leaderboard") -> str:
    """One self-contained page: a sortable table (click a header), columns grouped by suite with the
    headline metrics shown and the others behind a toggle, the comparison with individual
    baselines, and the plot embedded as a data URI."""
    columns = html_columns(board)
    head = "".join(f'<th class="{cls}">{html.escape(c)}</th>' if cls else f"<th>{html.escape(c)}</th>"
                   for c, cls in columns)
    body = []
    for row in board.rows:
        body.append("<tr>" + "".join(_html_cell(c, row.get(c), cls) for c, cls in columns) + "</tr>")
    for row in board.published:   # reference rows: marked, with their source as the row's tooltip
        body.append(f'<tr class="published" title="{html.escape(row["published_source"])}">'
                    + "".join(_html_cell(c, row.get(c), cls) for c, cls in columns) + "</tr>")
    plot = (f'<img alt="top-1 vs MACs" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            if png else "<p>No plot: it needs top-1 results and a complexity run for the same checkpoint.</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table.board {{ border-collapse: collapse; font-size: 13px; }}
table.board th, table.board td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
table.board th {{ background: #f0f0f0; cursor: pointer; }}
table.board td:nth-child(-n+4) {{ text-align: left; }}
table.board .group {{ border-left: 2px solid #888; }}
table.board .extra {{ display: none; border-left: 1px solid #ccc; }}
body.all-metrics table.board .extra {{ display: table-cell; }}
img {{ max-width: 100%; margin-top: 1.5em; }}
table.board tr.published td {{ font-style: italic; background: #f7f7ee; color: #555; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<p>One row per checkpoint and sub-network; columns grouped by suite (and its overrides), its headline metric
first; each cell the latest finished run per seed, as mean ± std (seeds) where there are several (hover for
each seed). Click a header to sort.</p>
<p><label><input type="checkbox" id="all-metrics"> show every metric</label></p>
<table class="board" id="leaderboard"><thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
{sources_html(board)}
{_comparison_html(board)}
{plot}
<script>{_SORT_JS}</script>
</body></html>
"""


def render(board: Board, fmt: str) -> Tuple[str, Optional[bytes]]:
    """The leaderboard text in ``fmt`` (one of ``FORMATS``) and the PNG plot (or None)."""
    png = plot_png(board)
    if fmt == "md":
        return to_markdown(board), png
    if fmt == "csv":
        return to_csv(board), png
    if fmt == "csv-long":
        return to_long_csv(board), png
    if fmt == "html":
        return to_html(board, png), png
    raise ValueError(f"unknown leaderboard format {fmt!r}; expected one of {', '.join(FORMATS)}")
