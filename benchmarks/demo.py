"""The demo behind `make demo`: pretrain on real data, benchmark every sub-network, print the board.

Every stage reuses finished work: a pretraining run folder resumes (a finished run returns at
once and keeps its checkpoint file, hence its digest), the random-init baseline is written once,
and each suite run with the same checkpoint and suite digests is taken from the results store.
A second `make demo` therefore only re-reads and re-prints.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import torch
import yaml

from pretrain.checkpoint import Checkpoint, atomic_write_bytes, file_digest, save_checkpoint
from pretrain.datasets import find_fmnist
from pretrain.errors import SlimBenchError
from pretrain.recipe import load_recipe
from pretrain.resnet import SlimResNet, parse_arch

from .leaderboard import build, plot_png, to_html, to_markdown
from .store import ResultsStore
from .suites import load_suite

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEMO_RECIPES = ("demo-slimclr-mocov2", "demo-dspnet")
DEMO_SUITES = ("fmnist-linear-fast", "fmnist-knn", "demo-det", "demo-seg", "complexity", "latency")


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


def pretrain_demo(name: str, paths: DemoPaths) -> Path:
    """Pretrain (or resume, or reuse) one demo recipe; returns its checkpoint path."""
    from pretrain.trainer import RECIPE_FILE, STATE_FILE, recipe_changes, train

    recipe = load_recipe(REPO / "configs" / "pretrain" / f"{name}.yaml", [f"data.root={paths.data}"])
    out = paths.runs / "pretrain" / name
    resume = (out / STATE_FILE).exists()
    if resume and (out / RECIPE_FILE).is_file():
        changed = recipe_changes(yaml.safe_load((out / RECIPE_FILE).read_text()) or {}, recipe)
        if changed:
            # The shipped recipe changed since this run (a newer checkout): keep the old run, start anew.
            kept = out.with_name(f"{name}.superseded-{time.strftime('%Y%m%d-%H%M%S')}")
            out.rename(kept)
            log.warning("demo: %s changed since the run in %s (%s); that run is kept as %s and %s "
                        "pretrains again", name, out, "; ".join(changed[:3]), kept, name)
            resume = False
    log.info("demo: %s pretraining %s in %s", "resuming" if resume else "starting", name, out)
    return train(recipe, out, resume=resume).checkpoint


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


def run_suite_process(suite_name: str, ckpt: Path, paths: DemoPaths) -> None:
    """`bench run` in a child process, as a user runs it.

    One process per suite run keeps the engines' global state (Detectron2's dataset catalog,
    MMEngine's registries and loggers, torch's thread settings) from leaking into the next run:
    in one long process, Mask R-CNN iterations after the classification suites ran 19x slower
    (9.3 s vs 0.48 s) than in a fresh one.
    """
    load_suite(suite_name)  # a bad suite fails here, before any child starts
    cmd = [sys.executable, "-m", "benchmarks.cli", "run", "--suite", suite_name, "--checkpoint", str(ckpt),
           "--db", str(paths.db), "--out", str(paths.runs), "--data-root", str(paths.data)]
    done = subprocess.run(cmd)
    if done.returncode != 0:
        raise SlimBenchError(f"demo: `{' '.join(cmd)}` failed with exit code {done.returncode}; "
                             f"its run folder and run.log are under {paths.runs / suite_name}")


def run_demo(paths: DemoPaths, recipes: Sequence[str] = DEMO_RECIPES, suites: Sequence[str] = DEMO_SUITES) -> str:
    """Run the whole demo and return the leaderboard as Markdown."""
    start = time.perf_counter()
    find_fmnist(paths.data)  # fail at once, naming every way to get the data
    checkpoints: List[Path] = [random_baseline(REPO / "configs" / "pretrain" / f"{recipes[0]}.yaml", paths)]
    checkpoints += [pretrain_demo(name, paths) for name in recipes]
    for suite_name in suites:
        for ckpt in checkpoints:
            log.info("demo: suite %s on %s", suite_name, ckpt)
            run_suite_process(suite_name, ckpt, paths)
    store = ResultsStore(paths.db)
    # Only this demo's checkpoints: the database also keeps runs of superseded demo checkpoints.
    digests = {file_digest(c) for c in checkpoints}
    board = build(r for r in store.rows() if r["checkpoint_digest"] in digests)
    png = plot_png(board)
    markdown = to_markdown(board)
    atomic_write_bytes(paths.markdown, markdown.encode())
    atomic_write_bytes(paths.html, to_html(board, png).encode())
    if png is not None:
        atomic_write_bytes(paths.png, png)
    log.info("demo finished in %.1f s; leaderboard in %s and %s", time.perf_counter() - start, paths.html, paths.png)
    return markdown
