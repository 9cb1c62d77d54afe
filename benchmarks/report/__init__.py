"""Reports of the results: the leaderboard (``board``: rows to a table; ``formats``: Markdown, CSV, the
terminal, HTML; ``plot``: accuracy vs MACs), published reference rows, slimmable-vs-alone pairing,
and the gradient diagnostics' plots (``diagnose``)."""
from benchmarks.digests import variant_label
from benchmarks.report.board import Board, build, checkpoint_label
from benchmarks.report.cells import Cell, Measurement
from benchmarks.report.formats import (FORMATS, html_columns, render, to_csv, to_html, to_long_csv, to_markdown,
                                       to_terminal)
from benchmarks.report.plot import plot_png

__all__ = ["Board", "Cell", "Measurement", "build", "checkpoint_label", "variant_label", "FORMATS", "html_columns",
           "render", "to_csv", "to_html", "to_long_csv", "to_markdown", "to_terminal", "plot_png"]
