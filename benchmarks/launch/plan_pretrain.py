"""A sweep plan's pretraining variants: each pretrained as one job, then benchmarked like any checkpoint.

```yaml
pretrain:                      # each variant: a recipe and named overrides (as on `bench pretrain`)
  - name: vanilla
    recipe: configs/pretrain/demo-slimclr-mocov2.yaml
    overrides: [method.slim_start_epoch=0, method.distill=none, method.loss_weights=uniform]
  - name: slimclr
    recipe: configs/pretrain/demo-slimclr-mocov2.yaml
pretrain_overrides: [run.diagnose_every=10]   # applied to every variant, before its own
pretrain_gpus: 1               # processes (GPUs) per pretraining job; 0 on a machine without GPUs
```

Variant ``NAME`` trains into ``<out>/pretrain/NAME`` (its run folder: ``checkpoint.pt``, ``log.jsonl``, the
gradient diagnostics `bench diagnose` draws) with its job in ``job.json`` there. It is ``finished`` once its
checkpoint records the recipe's last step, ``running`` while its job lives, ``failed`` when its job ended
short of that (a rerun resumes it from its last save: the trainer's exact ``--resume``), else ``not
started``. Only a finished variant's checkpoint joins the plan's cells, so every cell benchmarks the
final weights, and the leaderboard names its rows after the variant (the run folder's name).
"""
from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from pretrain.errors import ConfigError

from benchmarks.launch.jobs import DEFAULT_TIME_MIN, JobRecord, Resources, default_gpus, job_state, last_log_line, make_executor

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass
class PretrainVariant:
    """One entry of a plan's ``pretrain:`` list."""

    name: str
    recipe: str
    overrides: List[str] = field(default_factory=list)

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} names a folder: letters, digits and . _ + - only")


@dataclass
class VariantStatus:
    variant: PretrainVariant
    folder: Path
    state: str
    job: Optional[JobRecord] = None
    detail: str = ""

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoint.pt"


def check_variants(variants: List[PretrainVariant], common: List[str], source: str) -> None:
    """Every variant's recipe loads with its overrides, and names are distinct (before any job starts)."""
    from pretrain.recipe import load_recipe

    seen = set()
    for i, v in enumerate(variants):
        if v.name in seen:
            raise ConfigError(f"{source}: key 'pretrain[{i}].name': {v.name!r} is used twice")
        seen.add(v.name)
        if not Path(v.recipe).is_file():
            raise ConfigError(f"{source}: key 'pretrain[{i}].recipe': {v.recipe}: no such file")
        load_recipe(v.recipe, [*common, *v.overrides])   # a bad key fails here, naming the recipe and key


def variant_recipe(variant: PretrainVariant, common: List[str]):
    """The resolved recipe a variant trains."""
    from pretrain.recipe import load_recipe

    return load_recipe(variant.recipe, [*common, *variant.overrides])


@functools.lru_cache(maxsize=64)
def _recorded_steps(path: str, mtime_ns: int, size: int) -> Tuple[int, int]:
    """(steps, total_steps) a checkpoint file records; read once per version of the file (`--wait` polls)."""
    from pretrain.checkpoints.format import load_checkpoint

    extra = load_checkpoint(path).extra
    return int(extra.get("steps", -1)), int(extra.get("total_steps", 0))


def finished(folder: Path, recipe) -> bool:
    """Whether the run folder's checkpoint records the last step the recipe trains."""
    path = folder / "checkpoint.pt"
    if not path.is_file():
        return False
    st = path.stat()
    steps, stop = _recorded_steps(str(path), st.st_mtime_ns, st.st_size)
    if recipe.run.max_steps:
        stop = min(stop, recipe.run.max_steps)
    return steps >= stop > 0


def variant_status(variant: PretrainVariant, common: List[str], out: Path) -> VariantStatus:
    """Where one variant's pretraining stands (nothing is written)."""
    folder = (out / "pretrain" / variant.name).resolve()
    record = JobRecord.load(folder / JOB_FILE)
    if finished(folder, variant_recipe(variant, common)):
        return VariantStatus(variant, folder, "finished", record, str(folder / "checkpoint.pt"))
    if record is None:
        return VariantStatus(variant, folder, "not started")
    alive = job_state(record)
    if alive in ("alive", "unknown"):
        return VariantStatus(variant, folder, "running", record, "pretraining")
    return VariantStatus(variant, folder, "failed", record, last_log_line(record) or "no log line")


def submit_variant(status: VariantStatus, common: List[str], launcher: str, gpus: Optional[int],
                   time_min: Optional[int], partition: Optional[str], account: Optional[str],
                   threads: Optional[int] = None) -> None:
    """Submit one pretraining job (resuming the run folder's last save when it has one)."""
    from pretrain.trainer import STATE_FILE

    from benchmarks.launch.pretrain import PretrainJob

    if gpus is None:
        gpus = 1 if launcher == "slurm" else min(1, default_gpus())
    res = Resources(partition=partition, account=account, time_min=time_min or DEFAULT_TIME_MIN,
                    tasks_per_node=max(gpus, 1), gpus_per_node=gpus)
    status.folder.mkdir(parents=True, exist_ok=True)
    resume = (status.folder / STATE_FILE).exists()
    executor = make_executor(launcher, status.folder / "jobs", res, name=f"pretrain-{status.variant.name}")
    job = executor.submit(PretrainJob(variant_recipe(status.variant, common), status.folder, resume=resume,
                                      threads=threads if not gpus else None))
    status.job = JobRecord.of(launcher, job)
    status.job.save(status.folder / JOB_FILE)
    status.state, status.detail = "running", "submitted" + (" (resumes its last save)" if resume else "")
    log.info("pretraining %s: job %s", status.variant.name, status.job.job_id)
