"""`bench pretrain --launcher slurm|local`: one pretraining as a submitit job of N nodes x G processes.

Every task of the job exports submitit's ``TorchDistributedEnvironment`` (MASTER_ADDR/PORT, RANK,
WORLD_SIZE, LOCAL_RANK: what torchrun would set on each node) and runs the same trainer, which joins
one DDP run from those variables (``pretrain.distributed.init_from_env``). On a SLURM time-out or
preemption submitit calls ``checkpoint``, and the requeued job resumes from the run folder's last
checkpoint (the trainer's exact ``--resume``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

import submitit

from pretrain.errors import ConfigError

log = logging.getLogger(__name__)


class PretrainJob(submitit.helpers.Checkpointable):
    """The callable every task of a pretraining job runs."""

    def __init__(self, recipe, out: "str | Path", resume: bool = False, individual: Optional[Dict[str, Any]] = None,
                 requeued: bool = False, threads: Optional[int] = None):
        self.recipe, self.out, self.resume, self.threads = recipe, Path(out), resume, threads
        self.individual, self.requeued = individual, requeued

    def __call__(self):
        from pretrain.distributed import shutdown
        from pretrain.trainer import STATE_FILE, train

        from benchmarks.launch.jobs import set_threads

        set_threads(self.threads)   # local CPU jobs share the cores (jobs.cpu_threads)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")   # the job's own process: its log is submitit's stderr file
        env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        log.info("task %d of %d (local rank %d), rendezvous %s:%d", env.rank, env.world_size, env.local_rank,
                 env.master_addr, env.master_port)
        # a requeued job continues its own run; one requeued before its first save starts it afresh
        resume = self.resume or (self.requeued and (self.out / STATE_FILE).exists())
        try:
            result = train(self.recipe, self.out, resume=resume, progress=False, individual=self.individual)
        finally:
            shutdown()
        return result if env.rank == 0 else None

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue as a job that resumes this run (the trainer's state is already on disk)."""
        return submitit.helpers.DelayedSubmission(
            PretrainJob(self.recipe, self.out, self.resume, self.individual, requeued=True, threads=self.threads))


def submit_pretraining(recipe, out: Path, launcher: str, resources, resume: bool = False,
                       individual: Optional[Dict[str, Any]] = None):
    """Submit one pretraining; returns the submitit job. Its logs go to ``<out>/jobs``."""
    from pretrain.trainer import STATE_FILE

    from benchmarks.launch.jobs import make_executor

    if not resume and (out / STATE_FILE).exists():   # the trainer would refuse it inside the job
        raise ConfigError(f"{out} already holds a run ({STATE_FILE}); pass --resume to continue it or choose "
                          f"another --out")
    executor = make_executor(launcher, out / "jobs", resources, name=f"pretrain-{out.name}")
    return executor.submit(PretrainJob(recipe, out, resume, individual))
