"""`bench sweep PLAN.yaml`: every (checkpoint, suite, sub-network, seed) cell of a plan as one job.

```yaml
checkpoints: [runs/pretrain/demo-slimclr-mocov2/checkpoint.pt, random.pt]
suites: [complexity, fmnist-knn]
subnets: [w1.0, w0.5]        # or all | widths | desired, expanded per checkpoint
seeds: [0, 1]
overrides:                   # per suite, key=value as on `bench run`
  fmnist-knn: [dataset.train_limit=1000]
data_root: null              # bench run --data-root
launcher:                    # SLURM settings; command-line flags override them
  partition: gpu
  account: null
  time_min: 240
  gpus_per_job: 1            # default: the suite's params.num_gpus where it has one, else 1
  cpus_per_job: 10
  mem_gb: 64
  max_parallel: 64           # cells running at once: a SLURM job array's %N; locally, the rest wait for a slot
pretrain: []                 # pretraining variants benchmarked beside the checkpoints (plan_pretrain.py)
```

A cell's folder, ``<out>/cells/<checkpoint>@<digest8>/<suite>[+<overrides6>]/<subnet>/seed<S>``,
is its `bench run --out` (run folders, engine work folders, feature cache) and holds its own store,
``results.db`` in the per-job mode (``ResultsStore(mode="job")``: no store is shared across hosts),
and ``job.json``, the submitted job. A cell is

- ``finished``: its store has a finished run of this checkpoint digest and run digest;
- ``running``: its job is alive (pending or running; SLURM's state, or the local controller's pid);
- ``failed``: its job ended without finishing the run (a failed run, a killed job, an error before
  the run began), shown with the last line of its log;
- ``not started``: never submitted.

A plan may also list pretraining variants (``pretrain:``, ``benchmarks/launch/plan_pretrain.py``): each is
pretrained as a job first, and its checkpoint joins ``checkpoints`` once its run has finished; `bench
sweep --wait` submits those cells as the pretrainings end, a later `bench sweep` does otherwise.

A rerun submits only the failed and not-started cells. A killed job's run stays ``running`` in its
store (a SIGKILL leaves no chance to write more); the rerun first records it ``failed`` (its job is
known to have ended) and `bench run` starts a new run in the same cell folder, where Detectron2 and
MMEngine resume from their last checkpoint (`bench run`'s own resume). `bench leaderboard --runs OUT`
merges every cell's store.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import submitit

from pretrain.config import from_dict, load_yaml
from pretrain.errors import ConfigError, SlimBenchError

from benchmarks.launch.jobs import (DEFAULT_TIME_MIN, JobRecord, Resources, assign_gpus, cpu_threads, default_gpus,
                                    job_state, last_line, last_log_line, make_executor, set_threads)
from benchmarks.results.merged import STORE_FILE
from benchmarks.launch.plan_pretrain import PretrainVariant, VariantStatus, check_variants, submit_variant, variant_status
from benchmarks.results.store import ResultsStore

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
STATES = ("finished", "running", "failed", "not started")


@dataclass
class LauncherPlan:
    """The plan's ``launcher:`` block."""

    partition: Optional[str] = None
    account: Optional[str] = None
    time_min: Optional[int] = None
    gpus_per_job: Optional[int] = None
    cpus_per_job: Optional[int] = None
    mem_gb: Optional[int] = None
    constraint: Optional[str] = None
    max_parallel: Optional[int] = None


@dataclass
class Plan:
    """A sweep plan: the lists whose product is the cells, per-suite overrides, launcher settings."""

    suites: List[str]
    checkpoints: List[str] = field(default_factory=list)
    subnets: Union[str, List[str]] = "all"
    seeds: List[int] = field(default_factory=lambda: [0])
    overrides: Dict[str, List[str]] = field(default_factory=dict)
    data_root: Optional[str] = None
    launcher: LauncherPlan = field(default_factory=LauncherPlan)
    pretrain: List[PretrainVariant] = field(default_factory=list)
    pretrain_overrides: List[str] = field(default_factory=list)
    pretrain_gpus: Optional[int] = None      # processes (GPUs) per pretraining job; default 1 (0 without GPUs)

    def validate(self) -> None:
        for key in ("suites", "seeds"):
            if not getattr(self, key):
                raise ValueError(f"{key}: expected a non-empty list")
        if not self.checkpoints and not self.pretrain:
            raise ValueError("checkpoints: expected a non-empty list (or pretraining variants under pretrain:)")
        if isinstance(self.subnets, list) and not self.subnets:
            raise ValueError("subnets: expected all, widths, desired or a non-empty list such as [w1.0, w0.5]")
        unknown = [s for s in self.overrides if s not in self.suites]
        if unknown:
            raise ValueError(f"overrides.{unknown[0]}: not one of the plan's suites ({', '.join(self.suites)})")


@dataclass(frozen=True)
class Cell:
    """One job: a checkpoint, a suite (with the plan's overrides), one sub-network, one seed."""

    checkpoint: Path
    checkpoint_digest: str
    suite: str                   # as the plan names it (a name in configs/suites or a path)
    overrides: Tuple[str, ...]
    subnet: str
    seed: int
    run_digest: str
    folder: Path
    suite_name: str = ""         # the loaded suite's name: its run folders are <folder>/<suite_name>/<run id>

    @property
    def store_path(self) -> Path:
        return self.folder / STORE_FILE

    def argv(self, data_root: Optional[str]) -> List[str]:
        """The `bench run` of this cell: its own folder and per-job store."""
        return ["run", "--suite", self.suite, "--checkpoint", str(self.checkpoint), "--subnets", self.subnet,
                "--seed", str(self.seed), "--out", str(self.folder), "--db", str(self.store_path),
                "--db-mode", "job", *(["--data-root", data_root] if data_root else []), *self.overrides]


@dataclass
class CellStatus:
    cell: Cell
    state: str
    job: Optional[JobRecord] = None
    detail: str = ""
    running_runs: Tuple[str, ...] = ()   # runs left 'running' by a job that has ended


class CellFailed(SlimBenchError):
    """A cell's `bench run` ended with a non-zero status inside its job."""


class CellJob(submitit.helpers.Checkpointable):
    """The callable each job runs: one `bench run`. On a SLURM time-out or preemption submitit requeues it
    (``Checkpointable``), and the rerun continues through `bench run`'s own resume."""

    def __init__(self, argv: Sequence[str], threads: Optional[int] = None):
        self.argv, self.threads = list(argv), threads

    def __call__(self) -> int:
        from benchmarks.cli import main

        set_threads(self.threads)   # local CPU jobs share the cores (jobs.cpu_threads)
        status = main(self.argv)
        if status:
            raise CellFailed(f"bench {' '.join(self.argv)} exited with status {status}")
        return 0


def load_plan(path: "str | Path") -> Plan:
    """Read and validate a plan file (every checkpoint must exist; suites and overrides are checked by loading)."""
    path = Path(path)
    plan = from_dict(Plan, load_yaml(path), str(path))
    for i, ckpt in enumerate(plan.checkpoints):
        if not Path(ckpt).is_file():
            raise ConfigError(f"{path}: key 'checkpoints[{i}]': {ckpt}: no such file")
    check_variants(plan.pretrain, plan.pretrain_overrides, str(path))
    return plan


def _short_hash(items: Sequence[str]) -> str:
    return hashlib.sha256("\0".join(items).encode()).hexdigest()[:6]


def checkpoint_name(path: Path) -> str:
    """A checkpoint's name: a run folder's ``checkpoint.pt`` is named after the folder, as the leaderboard does."""
    return path.parent.name if path.stem == "checkpoint" and path.parent.name else path.stem


def plan_cells(plan: Plan, out: Path, pretrained: Sequence[Path] = ()) -> List[Cell]:
    """Every cell of ``plan`` (checkpoint-major) and of the ``pretrained`` variants' checkpoints, with its
    folder under ``out``."""
    from pretrain.checkpoints.format import file_digest, load_checkpoint

    from benchmarks.suites import load_suite, resolve_subnets

    suites = {name: load_suite(name, plan.overrides.get(name, [])) for name in plan.suites}
    cells = []
    for ckpt_path in [*plan.checkpoints, *pretrained]:
        ckpt_path = Path(ckpt_path).resolve()
        ckpt, digest = load_checkpoint(ckpt_path), file_digest(ckpt_path)
        stem = checkpoint_name(ckpt_path)
        specs = resolve_subnets(plan.subnets, ckpt)
        for name in plan.suites:
            suite, overrides = suites[name], tuple(plan.overrides.get(name, []))
            label = suite.name + (f"+{_short_hash(overrides)}" if overrides else "")
            for spec in specs:
                for seed in plan.seeds:
                    folder = out / "cells" / f"{stem}@{digest[:8]}" / label / str(spec) / f"seed{seed}"
                    cells.append(Cell(ckpt_path, digest, name, overrides, str(spec), int(seed),
                                      suite.digest([spec], seed), folder.resolve(), suite.name))
    return cells


def cell_status(cell: Cell) -> CellStatus:
    """Where one cell stands, from its store and its job (nothing is written)."""
    record = JobRecord.load(cell.folder / JOB_FILE)
    runs: List[Dict[str, Any]] = []
    if cell.store_path.is_file():
        store = ResultsStore.existing(cell.store_path)
        done = store.find_finished(cell.checkpoint_digest, cell.run_digest)
        if done is not None:
            return CellStatus(cell, "finished", record, f"run {done['run_id']}")
        runs = [r for r in store.runs() if r["checkpoint_digest"] == cell.checkpoint_digest]
    if record is None:
        return CellStatus(cell, "not started")
    alive = job_state(record)
    if alive in ("alive", "unknown"):
        latest = runs[-1]["run_id"] if runs else ""
        where = f"run {latest}" if latest else "waiting to start its run"
        return CellStatus(cell, "running", record, where if alive == "alive" else f"{where} (a local job of "
                          f"{record.host}; its state can only be read there)")
    dangling = tuple(r["run_id"] for r in runs if r["status"] == "running")
    # the run's own log when a run began (run.log in its run folder), else the job's (an error before it)
    line = last_line(cell.folder / cell.suite_name / runs[-1]["run_id"] / "run.log") if runs else ""
    line = line or last_log_line(record) or "no log line"
    if dangling:   # SIGKILL, OOM killer, node failure: nothing could record the end
        line = f"job ended during run {dangling[-1]} (killed?); its log ends: {line}"
    return CellStatus(cell, "failed", record, line, dangling)


@dataclass
class Sweep:
    """A plan, its output folder and its launcher."""

    plan_path: Path
    out: Path
    launcher: str = "local"
    overrides: LauncherPlan = field(default_factory=LauncherPlan)   # command-line launcher flags
    poll_s: float = 2.0

    def __post_init__(self):
        self.plan = load_plan(self.plan_path)
        self.out = Path(self.out).resolve()
        self.tried: set = set()   # variants submitted by this process
        self.refresh()

    def refresh(self) -> None:
        """Read the variants' states and list the cells of every checkpoint that is ready."""
        self.variants = [variant_status(v, self.plan.pretrain_overrides, self.out) for v in self.plan.pretrain]
        ready = [v.checkpoint for v in self.variants if v.state == "finished"]
        self.cells = plan_cells(self.plan, self.out, ready)

    def statuses(self) -> List[CellStatus]:
        return [cell_status(c) for c in self.cells]

    def submit_pretraining(self) -> List[VariantStatus]:
        """Submit every variant that is neither finished nor running (locally at most ``max_parallel`` jobs
        at once, cells included); returns the submitted ones."""
        # each at most once per `bench sweep`, as cells: one that fails again waits for the next
        todo = [v for v in self.variants if v.state in ("failed", "not started") and v.variant.name not in self.tried]
        statuses = self.statuses()
        slots = self.local_slots(statuses)
        if slots is not None:
            todo = todo[:max(0, slots - sum(v.state == "running" for v in self.variants))]
        given = self.launcher_settings()
        threads = self.local_threads(statuses, len(todo))
        for v in todo:
            self.tried.add(v.variant.name)
            submit_variant(v, self.plan.pretrain_overrides, self.launcher, self.plan.pretrain_gpus,
                           given.get("time_min"), given.get("partition"), given.get("account"), threads)
        return todo

    def launcher_settings(self) -> Dict[str, Any]:
        """The plan's ``launcher:`` values that are set, under the command line's."""
        given = {k: v for k, v in vars(self.plan.launcher).items() if v is not None}
        given.update({k: v for k, v in vars(self.overrides).items() if v is not None})
        return given

    def resources(self, cell: Cell) -> Resources:
        """The plan's launcher settings under the command line's; the suite's defaults otherwise."""
        from benchmarks.suites import load_suite

        given = self.launcher_settings()
        gpus = given.get("gpus_per_job")
        if gpus is None:
            if self.launcher == "local":
                gpus = min(1, default_gpus())
            else:
                suite_gpus = getattr(load_suite(cell.suite, cell.overrides).params, "num_gpus", None)
                gpus = suite_gpus if suite_gpus is not None else 1
        return Resources(partition=given.get("partition"), account=given.get("account"),
                         time_min=given.get("time_min", DEFAULT_TIME_MIN), gpus_per_node=gpus,
                         cpus_per_task=given.get("cpus_per_job"), mem_gb=given.get("mem_gb"),
                         constraint=given.get("constraint"), array_parallelism=given.get("max_parallel"))

    def local_threads(self, statuses: Sequence[CellStatus], starting: int) -> Optional[int]:
        """Torch threads for each local CPU job about to start: the cores split over the jobs that will run
        at once (``max_parallel``, else every running and starting one); None for SLURM."""
        if self.launcher != "local":
            return None
        limit = self.overrides.max_parallel or self.plan.launcher.max_parallel
        running = sum(s.state == "running" for s in statuses) + sum(v.state == "running" for v in self.variants)
        return cpu_threads(limit or running + starting)

    def local_slots(self, statuses: Sequence[CellStatus]) -> Optional[int]:
        """How many more local jobs may start (``max_parallel`` minus the running cells); None: no limit.

        SLURM throttles a job array itself (``%N``); the local executor starts every job at once.
        """
        limit = self.overrides.max_parallel or self.plan.launcher.max_parallel
        if self.launcher != "local" or not limit:
            return None
        return max(0, limit - sum(s.state == "running" for s in statuses))

    def submit(self, statuses: Optional[List[CellStatus]] = None, skip: Sequence[Cell] = ()) -> List[CellStatus]:
        """Submit the cells that are neither finished nor running (not those in ``skip``; locally at most
        ``max_parallel`` at once); returns the submitted ones."""
        statuses = self.statuses() if statuses is None else statuses
        todo = [s for s in statuses if s.state in ("failed", "not started") and s.cell not in skip]
        slots = self.local_slots(statuses)
        if slots is not None:   # local pretraining jobs take slots too
            slots = max(0, slots - sum(v.state == "running" for v in getattr(self, "variants", ())))
        todo = todo if slots is None else todo[:slots]
        for s in todo:
            for run_id in s.running_runs:   # its job has ended: the run can never finish
                ResultsStore.existing(s.cell.store_path).fail_run(
                    run_id, f"its job {s.job.job_id} ({s.job.launcher}) ended without ending the run "
                            f"(killed); `bench sweep` resubmitted the cell")
        threads = self.local_threads(statuses, len(todo))
        groups: Dict[Tuple, List[CellStatus]] = {}
        for s in todo:
            groups.setdefault(tuple(vars(self.resources(s.cell)).items()), []).append(s)
        for key, group in groups.items():
            res = Resources(**dict(key))
            executor = make_executor(self.launcher, self.out / "jobs", res, name=f"sweep-{self.plan_path.stem}")
            gpus: List[List[int]] = [[] for _ in group]
            if self.launcher == "local" and res.gpus_per_node:
                # submitit's local executor gives every job GPUs 0..G-1 unless told which: spread them
                busy = [g for st in statuses if st.state == "running" and st.job for g in st.job.gpus]
                gpus = assign_gpus(max(default_gpus(), res.gpus_per_node), res.gpus_per_node, busy, len(group))
                jobs = []
                for s, visible in zip(group, gpus):
                    executor.update_parameters(visible_gpus=visible)
                    jobs.append(executor.submit(CellJob(s.cell.argv(self.plan.data_root))))   # GPU jobs
            else:
                with executor.batch():   # one SLURM job array per set of resources
                    jobs = [executor.submit(CellJob(s.cell.argv(self.plan.data_root), threads if not res.gpus_per_node
                                                    else None)) for s in group]
            for s, job, visible in zip(group, jobs, gpus):
                s.cell.folder.mkdir(parents=True, exist_ok=True)
                s.job = JobRecord.of(self.launcher, job, visible)
                s.job.save(s.cell.folder / JOB_FILE)
                s.state, s.detail = "running", "submitted"
                log.info("cell %s: job %s", describe(s.cell), s.job.job_id)
        return todo

    def wait(self, submitted: Sequence[CellStatus] = ()) -> List[CellStatus]:
        """Poll until no cell is running, starting local cells held back by ``max_parallel`` as slots free
        (each at most once: a cell that fails again waits for the next `bench sweep`); the final statuses."""
        tried = [s.cell for s in submitted]
        while True:
            before = {v.variant.name for v in self.variants if v.state == "finished"}
            self.refresh()
            if self.local_slots(self.statuses()):   # pretrainings held back by max_parallel
                self.submit_pretraining()
                self.refresh()
            statuses = self.statuses()
            if {v.variant.name for v in self.variants if v.state == "finished"} != before:
                tried += [s.cell for s in self.submit(statuses, skip=tried)]   # a pretraining just ended
            elif self.local_slots(statuses):
                tried += [s.cell for s in self.submit(statuses, skip=tried)]
            pretraining = any(v.state == "running" for v in self.variants)
            if not pretraining and not any(s.state == "running" for s in statuses):
                return statuses
            time.sleep(self.poll_s)


def describe(cell: Cell) -> str:
    return f"{checkpoint_name(cell.checkpoint)}@{cell.checkpoint_digest[:8]} {cell.suite} {cell.subnet} seed {cell.seed}"


def format_variants(variants: Sequence[VariantStatus]) -> str:
    """The pretraining variants' table: name, state, job, detail."""
    rows = [(v.variant.name, v.state, v.job.job_id if v.job else "-", v.detail) for v in variants]
    head = ("pretraining", "status", "job", "detail")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head) - 1)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  " + head[-1]]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    waiting = sum(v.state != "finished" for v in variants)
    if waiting:
        lines.append(f"{waiting} pretraining(s) not finished: their cells are listed once they are")
    return "\n".join(lines)


def format_status(statuses: Sequence[CellStatus], out: Path, variants: Sequence[VariantStatus] = ()) -> str:
    """The table `bench sweep --status` prints: the pretrainings, one line per cell, the count of each state."""
    if not statuses:
        return (format_variants(variants) + "\n" if variants else "") + f"0 cells in {out} yet"
    rows = [(f"{checkpoint_name(s.cell.checkpoint)}@{s.cell.checkpoint_digest[:8]}",
             s.cell.suite_name + ("*" if s.cell.overrides else ""), s.cell.subnet, str(s.cell.seed), s.state,
             s.job.job_id if s.job else "-", s.detail) for s in statuses]
    head = ("checkpoint", "suite", "subnet", "seed", "status", "job", "detail")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head) - 1)]
    lines = [format_variants(variants)] if variants else []
    lines += ["  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  " + head[-1]]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    counts = {state: sum(s.state == state for s in statuses) for state in STATES}
    lines.append(f"{len(statuses)} cells in {out}: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    if any(s.cell.overrides for s in statuses):
        lines.append("* with the plan's overrides")
    return "\n".join(lines)
