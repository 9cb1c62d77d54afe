"""`bench run` and `bench list suites`: run a suite on a checkpoint; list the shipped suites."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Mapping, Optional

from pretrain.errors import ConfigError, DataError


def register(sub, list_sub) -> None:
    """Add `bench run` and `bench list suites` to the parser."""
    p = sub.add_parser("run", help="run a benchmark suite on a checkpoint and store the results")
    p.add_argument("--suite", required=True, help="a name in configs/suites (see `bench list suites`) or a YAML path")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--subnets", help="all (every width, the desired networks and the depths the recipe sampled) | "
                                     "widths | desired | comma-separated list such as w1.0,w0.5 (default: the suite's)")
    p.add_argument("--data-root", type=Path,
                   help="dataset root, which must exist (default $SLIMBENCH_DATA, else ./data)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="run folders and feature caches (default ./runs)")
    p.add_argument("--db", type=Path, help="results database (default $SLIMBENCH_DB or ./runs/results.db)")
    p.add_argument("--db-mode", choices=["shared", "job"],
                   help="shared: one store for this machine, SQLite WAL (refused on a network filesystem); "
                        "job: this job's own store (e.g. in its run folder), safe on NFS/Lustre/GPFS; "
                        "`bench leaderboard --runs DIR` merges them (default $SLIMBENCH_DB_MODE, else shared)")
    p.add_argument("--force", action="store_true", help="run again even if an identical run has finished")
    p.add_argument("--device", help="torch device (default: cuda when available)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None,
                       help="the run's seed (default: the suite's seeds, e.g. voc-det's 5 trials; else 0)")
    seeds.add_argument("--seeds", type=seed_list, metavar="S,S,...",
                       help="one run per seed, e.g. 0,1,2; finished seeds are reused "
                            "(the leaderboard shows mean ± std)")
    p.add_argument("--dry-run", action="store_true",
                   help="print as YAML what the engine would receive for each sub-network (optimizer, schedule, "
                        "batch, engine config) and exit: no training, nothing recorded, the dataset optional")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="suite overrides, e.g. params.epochs=1")
    p.set_defaults(func=cmd_run)

    p = list_sub.add_parser("suites", help="the suites in configs/suites")
    p.set_defaults(func=cmd_list_suites)


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from benchmarks.runner import RunInterrupted, run_suite
    from benchmarks.results.store import ResultsStore
    from benchmarks.suites import load_suite

    suite = load_suite(args.suite, args.overrides)
    if args.dry_run:
        return dry_run(suite, args)
    refuse_foreign_launcher(suite)
    data_root = resolve_data_root(args.data_root)
    store = ResultsStore(args.db, mode=args.db_mode)
    for seed in run_seeds(args, suite):
        try:
            outcome = run_suite(suite, args.checkpoint, store, data_root=data_root, out_root=args.out,
                                subnets=args.subnets, force=args.force,
                                device=torch.device(args.device) if args.device else None, seed=seed)
        except (RunInterrupted, KeyboardInterrupt) as e:
            print(f"bench: {e or 'interrupted'}; the run is marked failed in {store.path}", file=sys.stderr)
            return 130 if isinstance(e, KeyboardInterrupt) else 143
        if outcome.run_id:
            print(format_results(suite.name, outcome))
    return 0


def dry_run(suite, args: argparse.Namespace) -> int:
    """``bench run --dry-run``: the protocol's ``describe`` as YAML on stdout, a missing dataset as a warning."""
    import torch
    import yaml

    from benchmarks.runner import describe_suite

    try:
        data_root = resolve_data_root(args.data_root)
    except DataError as e:
        print(f"bench: warning: {e}", file=sys.stderr)
        data_root = args.data_root
    seed = run_seeds(args, suite)[0]
    plan = describe_suite(suite, args.checkpoint, data_root=data_root, out_root=args.out, subnets=args.subnets,
                          device=torch.device(args.device) if args.device else None, seed=seed)
    if plan["dataset_warning"]:
        print(f"bench: warning: {plan['dataset_warning']}; a real run stops here", file=sys.stderr)
    print(yaml.safe_dump(plan, sort_keys=False), end="")
    return 0


def run_seeds(args: argparse.Namespace, suite) -> list:
    """The seeds to run: ``--seeds``, else ``--seed``, else the suite's ``seeds`` (MoCo's VOC: 5 trials)."""
    if args.seeds:
        return list(args.seeds)
    return [args.seed] if args.seed is not None else list(suite.seeds)


def seed_list(text: str) -> list:
    """``0,1,2`` as [0, 1, 2] (duplicates dropped, order kept)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("expected at least one seed, such as 0,1,2")
    return list(dict.fromkeys(seeds))


def resolve_data_root(given: Optional[Path], env: Optional[Mapping[str, str]] = None) -> Path:
    """``--data-root``, else ``$SLIMBENCH_DATA``, else ``./data``; a folder the user named must exist.

    Only the unnamed default may be absent: suites then fall back to their other sources (Fashion-MNIST
    from the Debian package). A named but missing folder is a typo, and falling back would silently
    benchmark another copy of the data.
    """
    env = os.environ if env is None else env
    if given is not None:
        source, root = "--data-root", given
    elif env.get("SLIMBENCH_DATA"):
        source, root = "$SLIMBENCH_DATA", Path(env["SLIMBENCH_DATA"])
    else:
        return Path("data")
    if not root.is_dir():
        raise DataError(f"{source} {root}: {'not a folder' if root.exists() else 'no such folder'}; "
                        f"expected the folder holding the suite's dataset")
    return root


def refuse_foreign_launcher(suite, env: Optional[Mapping[str, str]] = None) -> None:
    """Refuse torchrun (WORLD_SIZE > 1) for a protocol whose engine starts its own processes."""
    env = os.environ if env is None else env
    reason = suite.protocol_cls.spawns_own_processes
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if reason and world > 1:
        raise ConfigError(f"suite {suite.name}: protocol {suite.protocol} cannot run under torchrun "
                          f"(WORLD_SIZE={world}): {reason}; run `bench run` once per machine without torchrun")


def format_results(suite_name: str, outcome) -> str:
    """One line per sub-network: its metrics."""
    state = "reused finished run" if outcome.reused else "run"
    lines = [f"{suite_name} seed {outcome.seed}: {state} {outcome.run_id}"
             + (f" ({outcome.out_dir})" if outcome.out_dir else "")]
    by_subnet = {}
    for r in outcome.results:
        by_subnet.setdefault(r.subnet, []).append(f"{r.metric}={r.value:.4g}")
    lines += [f"  {subnet:<16} {'  '.join(metrics)}" for subnet, metrics in by_subnet.items()]
    return "\n".join(lines)


def cmd_list_suites(args: argparse.Namespace) -> int:
    from benchmarks.suites import load_suite, suite_paths
    from pretrain.errors import SlimBenchError

    paths = suite_paths()
    w = max([len("suite")] + [len(p.stem) for p in paths]) + 2   # the name column fits the longest name
    print(f"{'suite':<{w}}{'protocol':<13}{'dataset':<13}description")
    for path in paths:
        try:
            s = load_suite(str(path))
        except SlimBenchError as e:
            print(f"{path.stem:<{w}}{'?':<13}{'?':<13}INVALID: {e}")
            continue
        kind = getattr(s.dataset, "kind", "-")
        print(f"{s.name:<{w}}{s.protocol:<13}{kind:<13}{s.description}")
    return 0
