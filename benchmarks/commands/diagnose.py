"""`bench diagnose RUN_DIR ...`: SlimCLR's gradient-interference plots of pretraining runs (run.diagnose_every)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub, list_sub) -> None:
    """Add `bench diagnose` to the parser."""
    p = sub.add_parser("diagnose", help="plot the gradient diagnostics of pretraining runs (run.diagnose_every)",
                       description="Read the grad/ keys of each run folder's log.jsonl and its head_grad.bin "
                                   "(pretrain with run.diagnose_every: N) and write ratios.png (SlimCLR's "
                                   "Figure 3: ||g_full|| / ||g_smallest|| and ||g_full\\smallest|| / "
                                   "||g_smallest||), norms.png, trajectory.png (PCA of the projection head's "
                                   "gradient) and diagnostics.csv; print a summary table.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="pretraining run folders")
    p.add_argument("--out", type=Path, help="output folder (default: runs/diagnose)")
    p.add_argument("--overlay", action="store_true",
                   help="all runs' ratios on one axes (solid: full/smallest, dashed: rest/smallest) "
                        "instead of one panel per run")
    p.add_argument("--labels", help="comma-separated names of the runs, in order (default: the folder names)")
    p.set_defaults(func=cmd_diagnose)


def cmd_diagnose(args: argparse.Namespace) -> int:
    from benchmarks.report.diagnose import load_runs, summarize, write_outputs

    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    runs = load_runs(args.runs, labels)
    written = write_outputs(runs, args.out, overlay=args.overlay)
    print(summarize(runs))
    print()
    for path in written.values():
        print(f"wrote {path}")
    return 0
