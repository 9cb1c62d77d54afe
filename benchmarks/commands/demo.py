"""`bench demo`: the embedded default job of `make demo`."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(sub, list_sub) -> None:
    """Add `bench demo` to the parser."""
    p = sub.add_parser("demo", help="pretrain on Fashion-MNIST, run the demo suites, print the leaderboard")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="run folders, results.db, leaderboard (./runs)")
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("SLIMBENCH_DATA", "data")),
                   help="datasets; Fashion-MNIST is also found in the Debian package's folder")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from benchmarks.demo import DemoPaths, run_demo

    paths = DemoPaths(args.runs, args.data_root)
    print(run_demo(paths))
    print(f"\nleaderboard: {paths.html} (plot: {paths.png})")
    return 0
