"""`bench pretrain`: turn a YAML recipe into a slimmable checkpoint (runs unchanged under torchrun)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(sub, list_sub) -> None:
    """Add `bench pretrain` to the parser."""
    p = sub.add_parser("pretrain",
                       help="pretrain a slimmable network from a recipe (SlimCLR; SlimBench's reconstruction of DSPNet)",
                       description="Pretrain from configs/pretrain/*.yaml. Under `torchrun --nproc_per_node N "
                                   "-m benchmarks.cli pretrain ...` every rank joins one DDP run.")
    p.add_argument("--config", required=True, type=Path, help="recipe YAML (configs/pretrain/*.yaml)")
    p.add_argument("--out", type=Path, help="run folder (default: runs/pretrain/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--dry-run", action="store_true", help="validate the recipe and print it resolved; no training")
    p.add_argument("--data-root", type=Path, help="dataset folder (sets data.root)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs and log.jsonl only)")
    p.add_argument("--individual", metavar="SUBNET|all",
                   help="train the individual baseline of this recipe at one sub-network (e.g. w0.5), or 'all': "
                        "the same method, data and schedule, without sub-network terms; run folder "
                        "<out>-individual-<subnet>")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. run.epochs=10")
    launch = p.add_argument_group("launcher", "submit the run as a submitit job instead of training here: every "
                                  "task joins one DDP run (torchrun's variables from submitit's distributed "
                                  "environment); a requeued job resumes from its last checkpoint")
    launch.add_argument("--launcher", choices=["slurm", "local"])
    launch.add_argument("--nodes", type=int, default=1)
    launch.add_argument("--gpus-per-node", type=int, default=1,
                        help="processes per node, one per GPU (on a machine without CUDA, CPU processes)")
    launch.add_argument("--partition")
    launch.add_argument("--account")
    launch.add_argument("--time-min", type=int, help="time limit in minutes (default 24 h)")
    launch.add_argument("--cpus-per-task", type=int)
    launch.add_argument("--mem-gb", type=int)
    launch.add_argument("--wait", action="store_true", help="block until the job ends")
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> int:
    import yaml

    from pretrain.recipe import check_world, load_recipe, recipe_dict

    overrides = list(args.overrides)
    if args.data_root is not None:
        overrides.append(f"data.root={args.data_root}")
    recipe = load_recipe(args.config, overrides)
    out = args.out or Path("runs/pretrain") / args.config.stem
    runs = [(recipe, out, None)]
    if args.individual:
        from pretrain.individual import baseline_subnets, individual_recipe

        subnets = baseline_subnets(recipe) if args.individual == "all" else [args.individual]
        runs = [(*individual_recipe(recipe, s, str(args.config)), None) for s in subnets]
        runs = [(narrow, out.with_name(f"{out.name}-individual-{record['subnet']}"), record)
                for narrow, record, _ in runs]
    world = args.nodes * args.gpus_per_node if args.launcher else int(os.environ.get("WORLD_SIZE", "1"))
    for run_recipe, _, _ in runs:   # every run is checked before the first one starts
        if not args.dry_run:
            check_world(run_recipe, world, str(args.config))
    if args.dry_run:
        for run_recipe, run_out, record in runs:
            if record is not None:
                print(f"# individual baseline {record['subnet']} of {args.config} -> {run_out}")
            print(yaml.safe_dump(recipe_dict(run_recipe), sort_keys=False), end="")
            print(heads_summary(run_recipe))
        return 0
    if args.launcher:
        return submit_runs(args, runs)
    from pretrain.trainer import train

    for run_recipe, run_out, record in runs:
        result = train(run_recipe, run_out, resume=args.resume, progress=not args.no_progress, individual=record)
        what = f"individual baseline {record['subnet']}" if record else f"widths {run_recipe.model.widths}"
        print(f"wrote {result.checkpoint}: {run_recipe.method.name} {run_recipe.model.arch} {what}, "
              f"{result.steps}/{result.total_steps} steps, last loss {result.last_loss:.4f}")
    return 0


def submit_runs(args: argparse.Namespace, runs) -> int:
    """``--launcher``: each run as one submitit job of ``--nodes`` x ``--gpus-per-node`` tasks."""
    from benchmarks.launch.jobs import DEFAULT_TIME_MIN, Resources, default_gpus
    from benchmarks.launch.pretrain import submit_pretraining

    gpus = args.gpus_per_node if args.launcher == "slurm" or default_gpus() else 0
    res = Resources(partition=args.partition, account=args.account, time_min=args.time_min or DEFAULT_TIME_MIN,
                    nodes=args.nodes, tasks_per_node=args.gpus_per_node, gpus_per_node=gpus,
                    cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb)
    jobs = []
    for run_recipe, run_out, record in runs:
        job = submit_pretraining(run_recipe, run_out, args.launcher, res, resume=args.resume, individual=record)
        print(f"submitted {run_out} as {args.launcher} job {job.job_id}: {args.nodes} node(s) x "
              f"{args.gpus_per_node} process(es); logs in {run_out / 'jobs'}")
        jobs.append((job, run_recipe, record))
    if not args.wait:
        return 0
    for job, run_recipe, record in jobs:
        result = job.results()[0]   # rank 0's; raises with the job's traceback if it failed
        what = f"individual baseline {record['subnet']}" if record else f"widths {run_recipe.model.widths}"
        print(f"wrote {result.checkpoint}: {run_recipe.method.name} {run_recipe.model.arch} {what}, "
              f"{result.steps}/{result.total_steps} steps, last loss {result.last_loss:.4f}")
    return 0


def heads_summary(recipe) -> str:
    """Comment lines: the networks each step trains, and each trained head's layers at the largest and
    the smallest width."""
    from pretrain.methods import build_method
    from pretrain.models.spec import format_width
    from pretrain.trainer import build_encoder

    method = build_method(recipe, build_encoder(recipe))
    widths = list(recipe.model.widths)
    lines = [f"# {line}" for line in method.per_step_summary()]
    for index in sorted({0, len(widths) - 1}):
        for name, layers in method.head_summary(index).items():
            lines.append(f"# {name} at w{format_width(widths[index])}: {layers}")
    return "\n".join(lines)
