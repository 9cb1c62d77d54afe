"""The leaderboard: a pure function of the results rows, written as Markdown, CSV or HTML (+ PNG plot).

One row per (checkpoint, sub-network); one column per ``suite/metric`` from the latest finished
run of each suite on that checkpoint; ``params`` and ``macs`` come from ``complexity`` runs.
Failed and running runs are left out.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pretrain.spec import SubnetSpec

SIZE_METRICS = ("params", "macs")
ACCURACY_METRIC = "top1"


@dataclass
class Board:
    """The leaderboard table: fixed columns, then ``params``/``macs``, then one column per suite/metric."""

    metric_columns: List[str]
    rows: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def columns(self) -> List[str]:
        return ["checkpoint", "method", "widths", "subnet", *SIZE_METRICS, *self.metric_columns]


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


def build(rows: Iterable[Mapping[str, Any]], suites: Optional[Sequence[str]] = None) -> Board:
    """The leaderboard of ``rows`` (as ``ResultsStore.rows()`` returns them), optionally for some suites only."""
    finished = [r for r in rows if r["status"] == "finished" and (not suites or r["suite"] in suites)]
    latest: Dict[Tuple[str, str], Tuple[str, str]] = {}  # (checkpoint, suite) -> (ended_at, run_id)
    for r in finished:
        key = (r["checkpoint_digest"], r["suite"])
        latest[key] = max(latest.get(key, ("", "")), (r["ended_at"], r["run_id"]))
    keep = {run_id for _, run_id in latest.values()}
    table: Dict[Tuple[str, str], Dict[str, Any]] = {}
    metric_columns = set()
    for r in finished:
        if r["run_id"] not in keep:
            continue
        row = table.setdefault((r["checkpoint_digest"], r["subnet"]), {
            "checkpoint": checkpoint_label(r), "method": r["checkpoint_method"],
            "widths": "/".join(str(w) for w in json.loads(r["checkpoint_widths"])), "subnet": r["subnet"]})
        if r["protocol"] == "complexity" and r["metric"] in SIZE_METRICS:
            row[r["metric"]] = r["value"]
        else:
            column = f"{r['suite']}/{r['metric']}"
            metric_columns.add(column)
            row[column] = r["value"]
    ordered = sorted(table.values(), key=lambda row: (row["checkpoint"], _subnet_order(row["subnet"])))
    return Board(sorted(metric_columns), ordered)


def _fmt(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == "params":
        return f"{value / 1e6:.2f}M"
    if column == "macs":
        return f"{value / 1e9:.3f}G"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def to_markdown(board: Board) -> str:
    """A GitHub-flavoured Markdown table."""
    cols = board.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c in ("checkpoint", "method", "widths", "subnet")
                                                          else "---:" for c in cols) + "|"]
    for row in board.rows:
        lines.append("| " + " | ".join(_fmt(c, row.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def to_csv(board: Board) -> str:
    """CSV with raw values (params and MACs as counts)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=board.columns, lineterminator="\n")
    writer.writeheader()
    for row in board.rows:
        writer.writerow({c: row.get(c, "") for c in board.columns})
    return buf.getvalue()


def accuracy_columns(board: Board) -> List[str]:
    """The top-1 columns, which the accuracy-vs-MACs plot shows."""
    return [c for c in board.metric_columns if c.endswith("/" + ACCURACY_METRIC)]


def plot_png(board: Board) -> Optional[bytes]:
    """Accuracy vs MACs, one panel per top-1 column, one line per checkpoint; None without MACs and accuracies."""
    columns = [c for c in accuracy_columns(board) if any("macs" in r and c in r for r in board.rows)]
    if not columns:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, len(columns), figsize=(5.5 * len(columns), 4.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        for checkpoint in dict.fromkeys(r["checkpoint"] for r in board.rows):
            pts = [(r["macs"] / 1e9, r[column], r["subnet"]) for r in board.rows
                   if r["checkpoint"] == checkpoint and "macs" in r and column in r]
            if not pts:
                continue
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=checkpoint)
            for x, y, name in pts:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
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
document.querySelectorAll('table.board th').forEach(function (th, i) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v, nx = parseFloat(x), ny = parseFloat(y);
      if (x === '' || y === '') return (x === '') - (y === '');
      return (isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def to_html(board: Board, png: Optional[bytes] = None, title: str = "SlimBench leaderboard") -> str:
    """One self-contained page: a sortable table (click a header) and the plot embedded as a data URI."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in board.columns)
    body = []
    for row in board.rows:
        cells = "".join(f'<td data-v="{html.escape(str(row.get(c, "")))}">{html.escape(_fmt(c, row.get(c)))}</td>'
                        for c in board.columns)
        body.append(f"<tr>{cells}</tr>")
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
img {{ max-width: 100%; margin-top: 1.5em; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<p>One row per checkpoint and sub-network; each column the latest finished run of a suite. Click a header to sort.</p>
<table class="board"><thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
{plot}
<script>{_SORT_JS}</script>
</body></html>
"""


def render(board: Board, fmt: str) -> Tuple[str, Optional[bytes]]:
    """The leaderboard text in ``fmt`` (md, csv, html) and the PNG plot (or None)."""
    png = plot_png(board)
    if fmt == "md":
        return to_markdown(board), png
    if fmt == "csv":
        return to_csv(board), png
    if fmt == "html":
        return to_html(board, png), png
    raise ValueError(f"unknown leaderboard format {fmt!r}; expected md, csv or html")
