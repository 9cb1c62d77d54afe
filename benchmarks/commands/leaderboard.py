"""`bench leaderboard`: the results store as a Markdown, CSV or HTML table (+ accuracy-vs-MACs PNG)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional


def register(sub, list_sub) -> None:
    """Add `bench leaderboard` and `bench list runs` to the parser."""
    p = sub.add_parser("leaderboard", help="one row per checkpoint and sub-network from the finished runs")
    p.add_argument("--format", choices=["md", "csv", "csv-long", "html"], default="md",
                   help="csv: one row per checkpoint and sub-network (mean, and _std/_n where seeds vary); "
                        "csv-long: one row per value and seed")
    p.add_argument("--out", type=Path, help="write here (the plot goes beside it as .png); default: print")
    p.add_argument("--suite", action="append", help="only these suites (repeatable)")
    p.add_argument("--columns", choices=["headline", "all"], default="headline",
                   help="printed Markdown: 'headline' shows a compact table (params, MACs, one headline "
                        "metric per suite, the comparison with individual baselines) that fits a terminal; "
                        "'all' every column. Files (--out) and other formats always hold every column")
    add_store_args(p)
    p.add_argument("--published", default="all", metavar="all|none|PATH",
                   help="published results shown as reference rows beside their suites: 'all' (configs/published/), "
                        "'none', or a YAML file / folder of your own in the same format")
    p.set_defaults(func=cmd_leaderboard)

    p = list_sub.add_parser("runs", help="every run in the results store with its status")
    add_store_args(p)
    p.add_argument("--status", choices=["running", "finished", "failed"])
    p.set_defaults(func=cmd_list_runs)


def add_store_args(p: argparse.ArgumentParser) -> None:
    """``--db`` (repeatable) and ``--runs DIR``: the stores a reader merges by run id."""
    p.add_argument("--db", type=Path, action="append", default=[],
                   help="results database; repeat to merge several (default $SLIMBENCH_DB or ./runs/results.db)")
    p.add_argument("--runs", type=Path, metavar="DIR",
                   help="also every results.db below DIR (the per-job stores of `bench sweep --out DIR`)")


def published_entries(choice: str):
    """The published results ``--published`` asks for (validated), or none."""
    from benchmarks.report.published import load_published

    return [] if choice == "none" else load_published(None if choice == "all" else Path(choice))


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from benchmarks.report import build, render
    from pretrain.checkpoints.format import atomic_write_bytes

    from benchmarks.report import to_terminal

    board = build(existing_store(args.db, args.runs).rows(), args.suite, published_entries(args.published))
    if args.out is None and args.format == "md" and args.columns == "headline":
        print(to_terminal(board))
        return 0
    text, png = render(board, args.format)
    if args.out is None:
        print(text, end="")
        return 0
    atomic_write_bytes(args.out, text.encode())
    print(f"wrote {args.out}: {len(board.rows)} rows, {len(board.metric_columns)} metric columns")
    if png is not None:
        atomic_write_bytes(args.out.with_suffix(".png"), png)
        print(f"wrote {args.out.with_suffix('.png')}")
    return 0


def existing_store(dbs=(), runs_dir: Optional[Path] = None):
    """The store(s) named by ``--db`` (repeatable) and ``--runs``, which must exist (default $SLIMBENCH_DB
    or ./runs/results.db); several are merged by run id (``benchmarks.results.merged``).

    ``ResultsStore`` creates a missing database, right for `bench run`; a reader that did so would
    print an empty table for a mistyped path instead of saying there is nothing there.
    """
    from benchmarks.results.merged import open_results

    return open_results([dbs] if isinstance(dbs, (str, Path)) else list(dbs or ()), runs_dir)


def cmd_list_runs(args: argparse.Namespace) -> int:
    store = existing_store(args.db, args.runs)
    print(f"{'run':<26}{'status':<10}{'suite':<22}{'checkpoint':<34}{'started':<34}message")
    for r in store.runs(args.status):
        ckpt = f"{Path(r['checkpoint_path']).name}@{r['checkpoint_digest'][:8]}"
        print(f"{r['run_id']:<26}{r['status']:<10}{r['suite']:<22}{ckpt:<34}{r['started_at']:<34}{r['message']}")
    return 0
