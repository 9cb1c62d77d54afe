"""The demo behind `make demo`: pretrain on real data, benchmark the sub-networks, print the board.

Stages: the random-init baseline; the two demo recipes and the vanilla slimmable variant of the SlimCLR
one (no slow start, no distillation, uniform loss weights: the paper's baseline); the individual
SlimCLR-MoCo v2 baseline at the smallest demo width (the papers' comparison); the gradient diagnostics
of the SlimCLR run and its vanilla variant (`bench diagnose`: SlimCLR's Figure 3); the demo suites. Every stage reuses
finished work: a pretraining run folder resumes (a finished run returns at once and keeps its
checkpoint file, hence its digest), the random-init baseline is written once, and each suite run
with the same checkpoint and suite digests is taken from the results store. A second `make demo`
therefore only re-reads and re-prints. The terminal gets a compact table, the comparison of each
sub-network with its individual baseline, and the time of every stage; the full leaderboard goes
to `runs/leaderboard.{md,csv,html,png}`.
"""
from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import yaml

from pretrain.checkpoints.format import Checkpoint, atomic_write_bytes, file_digest, load_checkpoint, save_checkpoint
from pretrain.data.datasets import find_fmnist
from pretrain.errors import SlimBenchError
from pretrain.recipe import load_recipe
from pretrain.models.resnet import SlimResNet, parse_arch

from benchmarks.report import build, plot_png, to_csv, to_html, to_markdown, to_terminal
from benchmarks.results.store import ResultsStore
from benchmarks.suites import load_suite, resolve_subnets

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEMO_RECIPES = ("demo-slimclr-mocov2", "demo-dspnet")
DEMO_SUITES = ("fmnist-linear-fast", "fmnist-knn", "demo-det", "demo-seg", "complexity", "latency")
# The vanilla slimmable network of SlimCLR's ablation: the SlimCLR demo recipe without its three
# techniques (the demo-vanilla entry of configs/ablations/demo-slimclr-mocov2-techniques.yaml).
VANILLA = "demo-slimclr-mocov2-vanilla"
VANILLA_OVERRIDES = ("method.slim_start_epoch=0", "method.distill=none", "method.loss_weights=uniform")
# The engine suites (Detectron2, MMSeg) show the export and training path, not a comparison: at the demo's
# size pretrained and random-init networks scored alike (README of stop 31), so they run on the SlimCLR
# checkpoint only. The other suites run on every checkpoint.
ENGINE_SUITES_ON = ("demo-slimclr-mocov2",)
# The individual baseline of the SlimCLR demo at its smallest width (`--individual all` trains every
# width): where slimmable and alone differ (at w1.0 they scored alike, -0.08 kNN); it runs the
# classification suites and complexity, as the papers compare.
BASELINE_RECIPE = "demo-slimclr-mocov2"
BASELINE_SUBNETS = ("w0.25",)
BASELINE_SUITES = ("fmnist-linear-fast", "fmnist-knn", "complexity")


@dataclass
class DemoPaths:
    """Where the demo keeps its work (all under one runs folder)."""

    runs: Path
    data: Path

    @property
    def db(self) -> Path:
        return self.runs / "results.db"

    @property
    def html(self) -> Path:
        return self.runs / "leaderboard.html"

    @property
    def png(self) -> Path:
        return self.runs / "leaderboard.png"

    @property
    def markdown(self) -> Path:
        return self.runs / "leaderboard.md"

    @property
    def csv(self) -> Path:
        return self.runs / "leaderboard.csv"

    @property
    def terminal(self) -> Path:
        """The compact leaderboard the demo printed (README's block)."""
        return self.runs / "leaderboard.txt"

    @property
    def printed(self) -> Path:
        """Everything the demo printed at its end: board, diagnostics, stage times (docs/demo.md's block)."""
        return self.runs / "demo.txt"


def pretrain_demo(name: str, paths: DemoPaths, individual: Optional[str] = None,
                  variant: Optional[Tuple[str, Sequence[str]]] = None) -> Path:
    """Pretrain (or resume, or reuse) one demo recipe, its individual baseline, or a named variant
    ``(run name, overrides)`` of it; returns the checkpoint."""
    from pretrain.individual import individual_recipe
    from pretrain.trainer import RECIPE_FILE, STATE_FILE, recipe_changes, train

    source = REPO / "configs" / "pretrain" / f"{name}.yaml"
    overrides = list(variant[1]) if variant else []
    recipe, record = load_recipe(source, [f"data.root={paths.data}", *overrides]), None
    out = paths.runs / "pretrain" / (variant[0] if variant else name)
    if individual is not None:
        recipe, record = individual_recipe(recipe, individual, str(source))
        out = out.with_name(f"{name}-individual-{record['subnet']}")
    resume = (out / STATE_FILE).exists()
    if resume and (out / RECIPE_FILE).is_file():
        changed = recipe_changes(yaml.safe_load((out / RECIPE_FILE).read_text()) or {}, recipe)
        if changed:
            # The shipped recipe changed since this run (a newer checkout): keep the old run, start anew.
            kept = out.with_name(f"{out.name}.superseded-{time.strftime('%Y%m%d-%H%M%S')}")
            out.rename(kept)
            log.warning("demo: %s changed since the run in %s (%s); that run is kept as %s and it "
                        "pretrains again", out.name, out, "; ".join(changed[:3]), kept)
            resume = False
    log.info("demo: %s pretraining %s in %s", "resuming" if resume else "starting", out.name, out)
    return train(recipe, out, resume=resume, individual=record).checkpoint


def random_baseline(like: Path, paths: DemoPaths, seed: int = 0) -> Path:
    """The random-init checkpoint with the demo recipes' architecture (written once)."""
    out = paths.runs / "random-init" / "checkpoint.pt"
    if out.exists():
        return out
    recipe = load_recipe(like, [f"data.root={paths.data}"])
    torch.manual_seed(seed)
    model = SlimResNet(parse_arch(recipe.model.arch), widths=recipe.model.widths, stem=recipe.model.stem)
    save_checkpoint(Checkpoint.from_model(model, method="random", config={"seed": seed}), out)
    return out


def finished_before(suite, ckpt: Path, paths: DemoPaths, seed: int = 0) -> bool:
    """Whether `bench run` would reuse a finished run: the same lookup, without a child process to start
    (each costs seconds of imports; a second `make demo` must take under a minute)."""
    if not paths.db.is_file():
        return False
    specs = resolve_subnets(suite.subnets, load_checkpoint(ckpt))
    return ResultsStore(paths.db).find_finished(file_digest(ckpt), suite.digest(specs, seed)) is not None


def run_demo_suite(suite_name: str, ckpt: Path, paths: DemoPaths) -> None:
    """Run one suite on one checkpoint, as `bench run` does.

    A suite whose protocol drives a training engine (Detectron2, MMEngine) runs as `bench run` in a
    child process: the engines' global state (Detectron2's dataset catalog, MMEngine's registries
    and loggers, torch's thread settings) would leak into the next run; in one long process, Mask
    R-CNN iterations after the classification suites ran 19x slower (9.3 s vs 0.48 s) than in a
    fresh one. The others (probes, kNN, complexity, latency) run here, saving each child's seconds
    of imports.
    """
    suite = load_suite(suite_name)  # a bad suite fails here, before any child starts
    if finished_before(suite, ckpt, paths):
        log.info("demo: suite %s on %s: finished before, reused", suite_name, ckpt)
        return
    if not suite.protocol_cls.uses_engine:
        from benchmarks.commands.run import format_results
        from benchmarks.runner import run_suite
        print(format_results(suite.name, run_suite(suite, ckpt, ResultsStore(paths.db), data_root=paths.data,
                                                   out_root=paths.runs)), flush=True)
        return
    cmd = [sys.executable, "-m", "benchmarks.cli", "run", "--suite", suite_name, "--checkpoint", str(ckpt),
           "--db", str(paths.db), "--out", str(paths.runs), "--data-root", str(paths.data)]
    done = subprocess.run(cmd)
    if done.returncode != 0:
        raise SlimBenchError(f"demo: `{' '.join(cmd)}` failed with exit code {done.returncode}; "
                             f"its run folder and run.log are under {paths.runs / suite_name}")


class Stages:
    """Wall time of each demo stage, printed at the end (the budget is 30 min fresh, 60 s again)."""

    def __init__(self):
        self.times: List[Tuple[str, float]] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times.append((name, time.perf_counter() - start))

    def table(self) -> str:
        """One line per stage and the total, as ``m:ss``."""
        width = max(len(n) for n, _ in self.times)
        lines = [f"  {n:<{width}}  {_mmss(t)}" for n, t in self.times]
        return "\n".join(["demo stages:", *lines, f"  {'total':<{width}}  {_mmss(sum(t for _, t in self.times))}"])


def _mmss(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def run_demo(paths: DemoPaths, recipes: Sequence[str] = DEMO_RECIPES, suites: Sequence[str] = DEMO_SUITES,
             baselines: Sequence[str] = BASELINE_SUBNETS) -> str:
    """Run the whole demo; returns what the terminal shows (compact table, comparison, stage times)."""
    stages = Stages()
    find_fmnist(paths.data)  # fail at once, naming every way to get the data
    paths.data.mkdir(parents=True, exist_ok=True)  # the scenes are generated there; `bench run` needs it to exist
    with stages.stage("random-init checkpoint"):
        checkpoints: List[Path] = [random_baseline(REPO / "configs" / "pretrain" / f"{recipes[0]}.yaml", paths)]
    for name in recipes:
        with stages.stage(f"pretrain {name}"):
            checkpoints.append(pretrain_demo(name, paths))
        if name == BASELINE_RECIPE:
            with stages.stage(f"pretrain {VANILLA}"):
                checkpoints.append(pretrain_demo(name, paths, variant=(VANILLA, VANILLA_OVERRIDES)))
    individuals: List[Path] = []
    with stages.stage(f"pretrain {len(baselines)} individual baseline{'s' if len(baselines) != 1 else ''}"):
        individuals += [pretrain_demo(BASELINE_RECIPE, paths, individual=s) for s in baselines]
    with stages.stage("gradient diagnostics"):
        diagnosis = diagnose_demo(paths)
    for suite_name in suites:
        engine = load_suite(suite_name).protocol_cls.uses_engine
        targets = [c for c in checkpoints if not engine or c.parent.name in ENGINE_SUITES_ON]
        targets += individuals if suite_name in BASELINE_SUITES else []
        with stages.stage(f"suite {suite_name} ({len(targets)} checkpoint{'s' if len(targets) != 1 else ''})"):
            for ckpt in targets:
                log.info("demo: suite %s on %s", suite_name, ckpt)
                run_demo_suite(suite_name, ckpt, paths)
    with stages.stage("leaderboard"):
        terminal = write_leaderboard(paths, checkpoints + individuals)
    shown = f"{terminal}\n\n{diagnosis}\n\n{stages.table()}"
    # tools/update_readme_demo.py copies the board into README and the whole printout into docs/demo.md
    atomic_write_bytes(paths.terminal, terminal.encode())
    atomic_write_bytes(paths.printed, shown.encode())
    return shown


def diagnose_demo(paths: DemoPaths) -> str:
    """`bench diagnose` of the SlimCLR demo run and its vanilla variant; returns the summary it prints."""
    from benchmarks.report.diagnose import load_runs, summarize, write_outputs

    runs = [paths.runs / "pretrain" / name for name in (VANILLA, BASELINE_RECIPE)]
    loaded = load_runs(runs, labels=["vanilla", "slimclr"])
    written = write_outputs(loaded, paths.runs / "diagnose")
    return summarize(loaded) + "\n" + "\n".join(f"wrote {p}" for p in written.values())


def write_leaderboard(paths: DemoPaths, checkpoints: Sequence[Path]) -> str:
    """Write the full leaderboard files of these checkpoints; returns the compact terminal view."""
    store = ResultsStore(paths.db)
    # Only this demo's checkpoints: the database also keeps runs of superseded demo checkpoints.
    digests = {file_digest(c) for c in checkpoints}
    board = build(r for r in store.rows() if r["checkpoint_digest"] in digests)
    png = plot_png(board)
    atomic_write_bytes(paths.markdown, to_markdown(board).encode())
    atomic_write_bytes(paths.csv, to_csv(board).encode())
    atomic_write_bytes(paths.html, to_html(board, png).encode())
    if png is not None:
        atomic_write_bytes(paths.png, png)
    return to_terminal(board)
