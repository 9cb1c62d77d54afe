"""Published results as data: ``configs/published/*.yaml``, validated, shown beside the user's rows of the same suite.

A file has a ``source`` block (shared by its entries; an entry may override any of its keys) and
``entries``. An entry names what was measured (``label``, ``method``, ``arch``, ``subnet``), the suite
whose protocol it was measured with (``suite``, and ``overrides`` when it was that suite with some
values changed, e.g. ``{params.k: 200}``), the ``metric`` and its ``value`` (or ``error`` for a
published top-1/top-5 error: value = 100 - error), an optional ``note`` on how its protocol differs,
and where it was read: ``repository`` + ``file`` + ``line`` (+ ``commit``), or ``paper`` + ``table``,
and always ``read_from``, the address the value was read from. A user adds a table (the SlimCLR or
DSPNet paper's per-width numbers, say) as one more file of this form, in ``configs/published/`` or
passed with ``bench leaderboard --published FILE``.

The leaderboard shows an entry only beside a column of its suite with exactly its overrides, as a
reference row marked published, with its source; ``--published none`` hides them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from pretrain.errors import SlimBenchError
from pretrain.models.spec import SubnetSpec

from benchmarks.report.cells import Cell, Measurement

PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "configs" / "published"
ENTRY_KEYS = {"label", "method", "arch", "subnet", "suite", "overrides", "metric", "value", "error", "note",
              "repository", "commit", "file", "line", "paper", "table", "read_from"}
REQUIRED = ("label", "method", "arch", "subnet", "suite", "metric", "read_from")


class PublishedError(SlimBenchError):
    """A published-results file that does not hold what the format expects."""


@dataclass(frozen=True)
class Published:
    """One published number and where it was read."""

    label: str
    method: str
    arch: str
    subnet: str
    suite: str
    metric: str
    value: float
    address: str                      # where it was read: read_from + file + #Lline, or the paper's address
    citation: str                     # "facebookresearch/moco README.md line 128" or "Paper, Table 2"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    path: str = ""                    # the YAML file it came from

    @property
    def column_prefix(self) -> str:
        """The leaderboard column name of its experiment (``suite[key=value]``), as ``variant_label`` writes it."""
        from benchmarks.digests import variant_label

        return variant_label(self.suite, dict(self.overrides))

    @property
    def source_text(self) -> str:
        return f"{self.citation} ({self.address})" + (f"; {self.note}" if self.note else "")


def published_paths(where: Optional[Path] = None) -> List[Path]:
    """The YAML files of a folder (default ``configs/published/``), or the one file given."""
    where = Path(where) if where is not None else PUBLISHED_DIR
    if where.is_file():
        return [where]
    if not where.is_dir():
        raise PublishedError(f"published results {where}: no such file or folder; expected a YAML file or a folder "
                             f"of them (see configs/published/)")
    return sorted(where.glob("*.yaml"))


def load_published(where: Optional[Path] = None, known_suites: Optional[Sequence[str]] = None) -> List[Published]:
    """Every entry of the published-results files, validated (one clear error naming file, entry and key)."""
    if known_suites is None:
        from benchmarks.suites import suite_paths

        known_suites = [p.stem for p in suite_paths()]
    out: List[Published] = []
    for path in published_paths(where):
        out += _load_file(path, set(known_suites))
    return out


def _load_file(path: Path, known_suites: set) -> List[Published]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PublishedError(f"{path}: not valid YAML ({e})".splitlines()[0]) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list) or not raw["entries"]:
        raise PublishedError(f"{path}: expected a mapping with a non-empty 'entries' list (and a 'source' block)")
    source = raw.get("source") or {}
    if not isinstance(source, dict):
        raise PublishedError(f"{path}: 'source' must be a mapping, found {type(source).__name__}")
    unknown = set(source) - ENTRY_KEYS
    if unknown:
        raise PublishedError(f"{path}: unknown key(s) {sorted(unknown)} in 'source'; expected some of {sorted(ENTRY_KEYS)}")
    return [_entry({**source, **e} if isinstance(e, dict) else e, path, i, known_suites)
            for i, e in enumerate(raw["entries"], 1)]


def _entry(e: Any, path: Path, index: int, known_suites: set) -> Published:
    where = f"{path}: entry {index}"
    if not isinstance(e, dict):
        raise PublishedError(f"{where}: expected a mapping, found {type(e).__name__}")
    where += f" ({e.get('label', '?')})"
    unknown = set(e) - ENTRY_KEYS
    if unknown:
        raise PublishedError(f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(ENTRY_KEYS)}")
    missing = [k for k in REQUIRED if e.get(k) in (None, "")]
    if missing:
        raise PublishedError(f"{where}: missing {missing}")
    if e["suite"] not in known_suites:
        raise PublishedError(f"{where}: suite {e['suite']!r} is not a suite in configs/suites "
                             f"({', '.join(sorted(known_suites))})")
    try:
        SubnetSpec.parse(str(e["subnet"]))
    except ValueError as err:
        raise PublishedError(f"{where}: subnet {e['subnet']!r}: {err}") from None
    if ("value" in e) == ("error" in e):
        raise PublishedError(f"{where}: give exactly one of 'value' (as published) or 'error' (a published "
                             f"top-1/top-5 error, shown as 100 - error)")
    number = e.get("value", e.get("error"))
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise PublishedError(f"{where}: {'value' if 'value' in e else 'error'} must be a number, found {number!r}")
    if "error" in e and e["metric"] not in ("top1", "top5"):
        raise PublishedError(f"{where}: 'error' is for top1/top5, not metric {e['metric']!r}")
    overrides = e.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise PublishedError(f"{where}: 'overrides' must map suite keys to values, e.g. {{params.k: 200}}")
    if not str(e["read_from"]).startswith(("http://", "https://")):
        raise PublishedError(f"{where}: 'read_from' must be the address the value was read from (http...), "
                             f"found {e['read_from']!r}")
    if all(e.get(k) not in (None, "") for k in ("repository", "file", "line")):
        line = e["line"]
        if isinstance(line, bool) or not isinstance(line, int) or line < 1:
            raise PublishedError(f"{where}: 'line' must be a positive line number, found {line!r}")
        address = f"{e['read_from']}{e['file']}#L{line}" if str(e["read_from"]).endswith("/") else str(e["read_from"])
        citation = f"{e['repository']} {e['file']} line {line}"
    elif e.get("paper") and e.get("table"):
        address, citation = str(e["read_from"]), f"{e['paper']}, {e['table']}"
    else:
        raise PublishedError(f"{where}: no source: give repository, file and line, or paper and table")
    value = float(number) if "value" in e else 100.0 - float(number)
    return Published(str(e["label"]), str(e["method"]), str(e["arch"]), str(SubnetSpec.parse(str(e["subnet"]))),
                     str(e["suite"]), str(e["metric"]), value, address, citation,
                     {str(k): v for k, v in overrides.items()}, str(e.get("note") or ""), str(path))


# -- the leaderboard's reference rows ------------------------------------------------------------------

def column_experiment(column: str) -> str:
    """``imagenet-knn[k=200]#1a2b3c/top1`` -> ``imagenet-knn[k=200]``: the experiment a column belongs to."""
    return column.rsplit("/", 1)[0].split("#", 1)[0].split("@", 1)[0]


def reference_rows(entries: Sequence[Published], metric_columns: Sequence[str]) -> List[Dict[str, Any]]:
    """One row per (published label, subnet) holding its values in the board's columns of its suite.

    Entries whose suite (with its overrides) has no column on the board are not shown. A row carries
    ``published``: the source text of each of its values, and ``sources`` in the order shown.
    """
    rows: Dict[tuple, Dict[str, Any]] = {}
    for p in entries:
        columns = [c for c in metric_columns if column_experiment(c) == p.column_prefix and
                   c.rsplit("/", 1)[1] == p.metric]
        for column in columns:
            row = rows.setdefault((p.label, p.subnet, p.arch), {
                "checkpoint": f"published: {p.label}", "method": p.method, "widths": p.arch, "subnet": p.subnet,
                "digest": "", "published": {}})
            row[column] = Cell((Measurement(0, p.value, f"published:{p.address}"),))
            row["published"][column] = p.source_text
    return sorted(rows.values(), key=lambda r: (r["checkpoint"], -SubnetSpec.parse(r["subnet"]).width))


def sources(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """The distinct sources of reference rows, numbered in the order the rows show them."""
    return list(dict.fromkeys(s for r in rows for s in r.get("published", {}).values()))


def source_marks(row: Mapping[str, Any], numbered: Sequence[str]) -> str:
    """``[1,3]``: the numbers of a reference row's sources."""
    marks = sorted({numbered.index(s) + 1 for s in row.get("published", {}).values()})
    return "[" + ",".join(map(str, marks)) + "]"


def to_json(entries: Sequence[Published]) -> str:
    """The entries as JSON (for tools)."""
    return json.dumps([p.__dict__ for p in entries], indent=1, default=dict)


# -- rendering helpers the leaderboard's formats call ------------------------------------------------------

def attach(board, entries: Sequence[Published]) -> None:
    """Give ``board`` its reference rows (``board.published``) and numbered sources; marks ``[n]`` in the label."""
    rows = reference_rows(entries, board.metric_columns)
    numbered = sources(rows)
    for r in rows:
        r["checkpoint"] = f"{r['checkpoint']} {source_marks(r, numbered)}"
        r["published_source"] = "; ".join(dict.fromkeys(r["published"].values()))
    board.published = rows
    board.published_sources = numbered


def source_lines(board, short: bool = False) -> List[str]:
    """``[n] source`` for each published source on the board after a heading line ([] without any);
    ``short`` leaves out the addresses (the terminal view)."""
    if not getattr(board, "published", None):
        return []
    shown = [s.split(" (http", 1)[0] if short else s for s in board.published_sources]
    return ["published: reference rows reported by their authors, not measured here:",
            *(f"[{i}] {s}" for i, s in enumerate(shown, 1))]


def sources_html(board) -> str:
    """The published sources as an HTML list with links; empty without any."""
    import html

    if not getattr(board, "published", None):
        return ""
    items = []
    for i, s in enumerate(board.published_sources, 1):
        address = s.split(" (", 1)[1].split(")", 1)[0] if " (" in s else ""
        link = f' <a href="{html.escape(address)}">{html.escape(address)}</a>' if address.startswith("http") else ""
        items.append(f"<li>[{i}] {html.escape(s.split(' (', 1)[0])}{link}{html.escape(s.split(')', 1)[1] if ')' in s else '')}</li>")
    return ('<h2>Published reference rows</h2>\n<p>Rows marked <em>published</em> are numbers their authors '
            'reported with the protocol of that column\'s suite; SlimBench did not measure them.</p>\n'
            f'<ul id="published-sources">{"".join(items)}</ul>')


def plot_points(board, column: str) -> List[tuple]:
    """(MACs in G, value, label) of each reference row in ``column``; x is the MACs the board's own rows show
    for that sub-network, used only when they all agree (one architecture), else the point is left out."""
    out = []
    for r in getattr(board, "published", []):
        if column not in r:
            continue
        macs = {row["macs"].mean for row in board.rows if row["subnet"] == r["subnet"] and "macs" in row}
        if len(macs) == 1:
            out.append((macs.pop() / 1e9, r[column].mean, r["checkpoint"]))
    return out
