"""A leaderboard (``board.Board``) as text: Markdown, CSV (wide and long), the compact terminal view, HTML."""
from __future__ import annotations

import base64
import csv
import html
import io
import textwrap
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from benchmarks.report.board import FIXED_COLUMNS, SIZE_METRICS, Board
from benchmarks.report.cells import Cell
from benchmarks.report.pairing import Comparison
from benchmarks.report.plot import plot_png
from benchmarks.report.published import source_lines, sources_html


FORMATS = ("md", "csv", "csv-long", "html")


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
