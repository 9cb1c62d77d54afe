"""The accuracy-vs-MACs plot of a leaderboard (PNG bytes, matplotlib's Agg backend)."""
from __future__ import annotations

import io
from typing import List, Optional

from benchmarks.report.board import ACCURACY_METRIC, Board
from benchmarks.report.published import plot_points


def pyplot():
    """matplotlib's pyplot on the Agg backend: the reports write files and never need a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_columns(board: Board) -> List[str]:
    """The top-1 columns, which the accuracy-vs-MACs plot shows."""
    return [c for c in board.metric_columns if c.endswith("/" + ACCURACY_METRIC)]


def plot_png(board: Board) -> Optional[bytes]:
    """Accuracy vs MACs, one panel per top-1 column, one line per checkpoint (error bars: std over seeds);
    None without MACs and accuracies."""
    columns = [c for c in accuracy_columns(board) if any("macs" in r and c in r for r in board.rows)]
    if not columns:
        return None
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    plt = pyplot()

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


