"""Jobs through submitit (the launcher MoCo v3, DINO and MAE ship): SLURM on a cluster, local processes here.

``make_executor`` turns ``Resources`` into a submitit executor; ``JobRecord`` is what a submitting
command writes beside a job (launcher, id, submitit folder) so that a later process, on another
login node or after a logout, can still ask whether that job is alive (``job_state``) and read the
last line of its log.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional, Sequence

from pretrain.checkpoints.format import atomic_write_bytes
from pretrain.errors import ConfigError

LAUNCHERS = ("slurm", "local")
DEFAULT_TIME_MIN = 24 * 60
# SLURM states of a job that has not ended (squeue/sacct names); anything else has ended.
SLURM_ALIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                         "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "UNKNOWN"})


@dataclass
class Resources:
    """What one job asks the scheduler for (SLURM keys; the local launcher uses time, tasks and GPUs)."""

    partition: Optional[str] = None
    account: Optional[str] = None
    time_min: int = DEFAULT_TIME_MIN
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[int] = None
    constraint: Optional[str] = None
    array_parallelism: Optional[int] = None   # SLURM: cells of one sweep running at once

    def validate(self) -> None:
        for key in ("time_min", "nodes", "tasks_per_node"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: expected a positive number, got {getattr(self, key)}")
        for key in ("gpus_per_node", "cpus_per_task", "mem_gb", "array_parallelism"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"{key}: expected >= 0, got {value}")


def make_executor(launcher: str, folder: Path, res: Resources, name: str = "slimbench"):
    """A submitit executor writing its pickles and logs to ``folder`` (``%j`` is the job id)."""
    import submitit

    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    if launcher == "local":
        if res.nodes != 1:
            raise ConfigError(f"--nodes {res.nodes}: the local launcher runs on this machine only; use --launcher slurm")
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=res.time_min, tasks_per_node=res.tasks_per_node,
                                   gpus_per_node=res.gpus_per_node, nodes=1)
        return executor
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(f"--launcher slurm: {' and '.join(missing)} not on this machine's PATH; run from a SLURM "
                          f"login node, or use --launcher local")
    executor = submitit.SlurmExecutor(folder=str(folder))
    params = dict(job_name=name, time=res.time_min, nodes=res.nodes, ntasks_per_node=res.tasks_per_node,
                  partition=res.partition, account=res.account, cpus_per_task=res.cpus_per_task,
                  gpus_per_node=res.gpus_per_node or None, constraint=res.constraint,
                  mem=f"{res.mem_gb}GB" if res.mem_gb else None,
                  # SIGUSR2 this long before the time limit: submitit requeues Checkpointable jobs
                  signal_delay_s=120)
    if res.array_parallelism:
        params["array_parallelism"] = res.array_parallelism
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


@dataclass
class JobRecord:
    """A submitted job, as a later process finds it: launcher, id, submitit folder, where and when."""

    launcher: str
    job_id: str
    folder: str
    host: str
    submitted_at: str
    gpus: List[int] = field(default_factory=list)   # local jobs: the GPUs it was given (CUDA_VISIBLE_DEVICES)

    @classmethod
    def of(cls, launcher: str, job, gpus: Sequence[int] = ()) -> "JobRecord":
        return cls(launcher, str(job.job_id), str(Path(job.paths.folder).resolve()), socket.gethostname(),
                   datetime.now(timezone.utc).isoformat(timespec="seconds"), list(gpus))

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, path: Path) -> Optional["JobRecord"]:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def log_paths(self):
        """submitit's stderr and stdout files of the job's first task."""
        from submitit.core.utils import JobPaths

        paths = JobPaths(self.folder, self.job_id, 0)
        return paths.stderr, paths.stdout


def job_state(record: JobRecord) -> str:
    """``alive`` (pending or running), ``ended``, or ``unknown`` (a local job of another host)."""
    if record.launcher == "local":
        if record.host != socket.gethostname():
            return "unknown"
        return "alive" if _local_controller_alive(int(record.job_id)) else "ended"
    import submitit

    state = submitit.SlurmJob(record.folder, record.job_id).state.split()[0].upper()
    return "alive" if state in SLURM_ALIVE else "ended"


def _local_controller_alive(pid: int) -> bool:
    """Whether ``pid`` is still submitit's local job controller (the local job id is its pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"   # exited, not yet reaped by its parent
    return b"submitit.local._local" in cmdline and not zombie


def last_line(path: "str | os.PathLike") -> str:
    """The last non-empty line of a log file, preferring `bench`'s own error line; '' if there is none."""
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    lines = [line for line in lines if not line.startswith("submitit ")]   # submitit's own bookkeeping
    errors = [line for line in lines if line.startswith("bench: ")]
    return (errors or lines or [""])[-1]


def last_log_line(record: Optional[JobRecord]) -> str:
    """The last line the job wrote to stderr (else stdout), or ''."""
    if record is None:
        return ""
    for path in record.log_paths():
        line = last_line(path)
        if line:
            return line
    return ""


def assign_gpus(devices: int, per_job: int, busy: Sequence[int], jobs: int) -> List[List[int]]:
    """GPUs for each of ``jobs`` local jobs of ``per_job`` GPUs: the least used first (``busy``: one entry per
    running job using that GPU), so jobs spread over the machine instead of all sharing GPU 0."""
    use = {g: 0 for g in range(devices)}
    for g in busy:
        if g in use:
            use[g] += 1
    out = []
    for _ in range(jobs):
        chosen = sorted(use, key=lambda g: (use[g], g))[:per_job]
        for g in chosen:
            use[g] += 1
        out.append(sorted(chosen))
    return out


def cpu_threads(parallel: int) -> int:
    """Torch threads for each of ``parallel`` CPU jobs sharing this machine: its cores split between them.

    Two OpenMP processes of two threads each on two cores spin against each other: a demo pretraining
    step took 20 s instead of 2 s beside another one (stop 32).
    """
    return max(1, (os.cpu_count() or 1) // max(1, parallel))


def set_threads(threads: Optional[int]) -> None:
    """Inside a job: use ``threads`` torch threads (None: torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def default_gpus() -> int:
    """GPUs a local job may use: every visible one (0 on a machine without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0

