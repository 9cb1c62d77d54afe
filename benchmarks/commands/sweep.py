"""`bench sweep PLAN.yaml`: one job per (checkpoint, suite, sub-network, seed) cell through submitit."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub, list_sub) -> None:
    """Add `bench sweep` to the parser."""
    p = sub.add_parser("sweep", help="run a plan's cells (checkpoints x suites x sub-networks x seeds) as "
                                     "jobs on SLURM or locally, each into a store of its own",
                       description="Submit every cell of PLAN.yaml that is neither finished nor running "
                                   "(a rerun picks up killed and failed cells); `bench leaderboard --runs OUT` "
                                   "merges the cells' stores. See benchmarks/launch/sweep.py for the plan format.")
    p.add_argument("plan", type=Path, help="plan YAML: checkpoints, suites, subnets, seeds, overrides, launcher")
    p.add_argument("--out", type=Path, help="the cells' run folders and stores (default: runs/sweeps/<plan name>)")
    p.add_argument("--launcher", choices=["slurm", "local"], default="slurm",
                   help="slurm: submitit's SLURM executor (one job array per set of resources); "
                        "local: submitit's local executor, every cell a process on this machine")
    p.add_argument("--status", action="store_true", help="print the table of cells and submit nothing")
    p.add_argument("--wait", action="store_true", help="block until every cell has ended, then print the table")
    p.add_argument("--partition", help="SLURM partition (default: the plan's launcher.partition)")
    p.add_argument("--account", help="SLURM account")
    p.add_argument("--time-min", type=int, help="time limit per job in minutes (default: the plan's, else 24 h)")
    p.add_argument("--gpus-per-job", type=int, help="GPUs per job (default: the plan's, else the suite's "
                                                    "params.num_gpus where it has one, else 1)")
    p.add_argument("--cpus-per-job", type=int)
    p.add_argument("--mem-gb", type=int)
    p.add_argument("--max-parallel", type=int, help="cells running at once (SLURM: the array's %%N; local: the rest wait for a slot)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from benchmarks.launch.sweep import LauncherPlan, Sweep, format_status

    flags = LauncherPlan(partition=args.partition, account=args.account, time_min=args.time_min,
                         gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb,
                         max_parallel=args.max_parallel)
    out = args.out or Path("runs") / "sweeps" / args.plan.stem
    sweep = Sweep(args.plan, out, args.launcher, flags, poll_s=2.0 if args.launcher == "local" else 30.0)
    statuses = sweep.statuses()
    if args.status:
        print(format_status(statuses, sweep.out, sweep.variants))
        return 0
    pretraining = sweep.submit_pretraining()
    if pretraining:
        print(f"submitted {len(pretraining)} pretraining(s) ({args.launcher}): "
              + ", ".join(v.variant.name for v in pretraining))
    submitted = sweep.submit(statuses)
    waiting = sum(s.state in ("failed", "not started") for s in statuses)
    print(f"submitted {len(submitted)} of {len(statuses)} cells ({args.launcher}); "
          + (f"{waiting} wait for a free slot (max_parallel)" if waiting else "the others are finished or running")
          if len(submitted) < len(statuses) else f"submitted {len(submitted)} cells ({args.launcher})")
    if args.wait:
        statuses = sweep.wait(submitted)
        print(format_status(statuses, sweep.out, sweep.variants))
        done = all(v.state == "finished" for v in sweep.variants)
        return 0 if done and statuses and all(s.state == "finished" for s in statuses) else 1
    print(f"`bench sweep {args.plan} --out {out} --status` shows where they stand; "
          f"`bench leaderboard --runs {out}` merges their results")
    return 0
