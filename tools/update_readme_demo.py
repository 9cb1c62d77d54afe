"""Copy the last `make demo`'s printout and plots into README.md, docs/demo.md and docs/img (never retyped).

    python tools/update_readme_demo.py [--runs runs]

Replaces the block between ``<!-- demo:start -->`` and ``<!-- demo:end -->`` in README.md with the compact
leaderboard (``runs/leaderboard.txt``) and the same block in docs/demo.md with everything the demo printed
(``runs/demo.txt``: the leaderboard, the gradient diagnostics, the stage times); copies ``runs/leaderboard.png``
to ``docs/img/demo-leaderboard.png`` and ``runs/diagnose/ratios.png`` to ``docs/img/demo-gradient-ratios.png``.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- demo:start -->", "<!-- demo:end -->"


def replace_block(doc: Path, text: str) -> None:
    """Put ``text`` as a code block between the demo markers of ``doc``."""
    old = doc.read_text()
    if START not in old or END not in old:
        raise SystemExit(f"{doc}: no {START} ... {END} block to replace")
    block = f"{START}\n```\n{text.rstrip()}\n```\n{END}"
    doc.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, old, flags=re.S))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs")
    args = parser.parse_args()
    replace_block(REPO / "README.md", (args.runs / "leaderboard.txt").read_text())
    replace_block(REPO / "docs" / "demo.md", (args.runs / "demo.txt").read_text())
    shutil.copyfile(args.runs / "leaderboard.png", REPO / "docs" / "img" / "demo-leaderboard.png")
    shutil.copyfile(args.runs / "diagnose" / "ratios.png", REPO / "docs" / "img" / "demo-gradient-ratios.png")
    print(f"updated README.md, docs/demo.md, docs/img/demo-leaderboard.png and demo-gradient-ratios.png "
          f"from {args.runs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
