"""Copy the last `make demo`'s compact table and plot into README.md and docs/img (never retyped).

    python tools/update_readme_demo.py [--runs runs]

Replaces the block between ``<!-- demo:start -->`` and ``<!-- demo:end -->`` in README.md with
``runs/leaderboard.txt`` (what the demo printed) and copies ``runs/leaderboard.png`` to
``docs/img/demo-leaderboard.png`` and the gradient ratios of ``runs/diagnose/ratios.png`` to
``docs/img/demo-gradient-ratios.png``.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- demo:start -->", "<!-- demo:end -->"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs")
    args = parser.parse_args()
    text = (args.runs / "leaderboard.txt").read_text().rstrip()
    readme = REPO / "README.md"
    old = readme.read_text()
    if START not in old or END not in old:
        raise SystemExit(f"{readme}: no {START} ... {END} block to replace")
    block = f"{START}\n```\n{text}\n```\n{END}"
    readme.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, old, flags=re.S))
    shutil.copyfile(args.runs / "leaderboard.png", REPO / "docs" / "img" / "demo-leaderboard.png")
    shutil.copyfile(args.runs / "diagnose" / "ratios.png", REPO / "docs" / "img" / "demo-gradient-ratios.png")
    print(f"updated {readme}, docs/img/demo-leaderboard.png and demo-gradient-ratios.png from {args.runs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
