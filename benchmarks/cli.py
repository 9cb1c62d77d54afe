"""`bench`: the one entry point of SlimBench.

Each sub-command lives in its own module under ``benchmarks.commands`` and registers its parser;
heavy imports happen inside the command functions, so ``bench --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from pretrain.errors import SlimBenchError

COMMAND_MODULES = [
    "benchmarks.commands.checkpoints",
    "benchmarks.commands.demo",
    "benchmarks.commands.pretrain",
    "benchmarks.commands.run",
    "benchmarks.commands.leaderboard",
    "benchmarks.commands.sweep",
    "benchmarks.commands.diagnose",
]


def build_parser() -> argparse.ArgumentParser:
    """The full `bench` argument parser."""
    parser = argparse.ArgumentParser(prog="bench", description="Pretrain, slim and benchmark slimmable networks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    list_parser = sub.add_parser("list", help="list sub-networks of a checkpoint, or suites")
    list_sub = list_parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, list_sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run `bench`; user errors print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except SlimBenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
