"""Run one suite on one checkpoint and record every result in the results store.

Order of work: check the dataset (before anything heavy), read and digest the checkpoint, resolve
the sub-networks, reuse a finished run with the same checkpoint and suite digests (the suite digest
covers the seed) unless ``force``, then ``running`` -> protocol -> ``finished``. Any exception,
Ctrl-C or SIGTERM marks the run ``failed`` (a SIGKILL leaves it ``running``); a failed or running
run is never reported as finished. Under torchrun only rank 0 writes to the store.

``describe_suite`` is ``bench run --dry-run``: the same checks and sub-networks, then the protocol's
``describe`` instead of its run; a failing dataset check is a warning there, and nothing is written.

Engines that checkpoint (Detectron2, MMEngine) work in ``<out>/work/<suite>/<checkpoint digest>-
<config digest>/<sub-network>/seed<seed>``, the same folder for every rerun of that work, so a
rerun of a killed run resumes there; ``force`` gives a run a fresh folder inside its own.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import torch
import yaml

from pretrain.checkpoints.format import atomic_write_bytes, file_digest, load_checkpoint
from pretrain.errors import DataError
from pretrain.version import __version__
from transfer.classify import distributed as dist
from transfer.protocols.base import Result, RunContext

from benchmarks.results.store import ResultsStore
from benchmarks.suites import Suite, resolve_subnets

log = logging.getLogger(__name__)


class RunInterrupted(BaseException):
    """Raised inside a run when the process receives SIGTERM or SIGHUP, so the run is marked failed."""


@dataclass
class RunOutcome:
    run_id: str
    reused: bool
    results: List[Result] = field(default_factory=list)
    out_dir: Optional[Path] = None
    seed: int = 0



def checkpoint_meta(ckpt) -> Dict[str, Any]:
    """What a checkpoint says of its pretraining, stored with each run for pairing (benchmarks.report.pairing)."""
    return {k: ckpt.extra[k] for k in ("recipe_digest", "individual", "cost", "diagnosis") if k in ckpt.extra}

def code_version() -> str:
    """SlimBench's version plus the git commit (and ``-dirty``) when run from a checkout."""
    repo = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha.stdout.strip()}" if sha.returncode == 0 and sha.stdout.strip() else __version__


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into ``RunInterrupted`` for the duration (main thread only)."""
    def handler(signum, frame):
        raise RunInterrupted(f"interrupted by signal {signal.Signals(signum).name}")

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals stay as they are
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Copy log records to the run folder's ``run.log`` while the run lasts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    if level == logging.NOTSET or level > logging.INFO:  # the log file keeps INFO even when the console does not
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(handler)
        handler.close()


def work_root(out_root: Path, suite: Suite, checkpoint_digest: str) -> Path:
    """The engines' work folders of one suite config on one checkpoint (sub-network and seed below it)."""
    return out_root / "work" / suite.name / f"{checkpoint_digest[:16]}-{suite.config_digest()[:16]}"


def describe_suite(suite: Suite, checkpoint_path: Union[str, Path], *, data_root: Union[str, Path] = "data",
                   out_root: Union[str, Path] = "runs", subnets: Optional[str] = None,
                   device: Optional[torch.device] = None, seed: int = 0) -> Dict[str, Any]:
    """What ``run_suite`` would hand the engine for each sub-network (``Protocol.describe``), without training,
    without a run folder or a results store; a dataset that fails its check is a warning here (``dataset_warning``)."""
    data_root, out_root = Path(data_root), Path(out_root)
    try:
        suite.check_data(data_root)
        data_error = None
    except DataError as e:
        data_error = str(e)
    ckpt = load_checkpoint(checkpoint_path)
    ckpt_digest = file_digest(checkpoint_path)
    specs = resolve_subnets(subnets or suite.subnets, ckpt)
    ctx = RunContext(suite_name=suite.name, checkpoint=ckpt, subnets=specs, params=suite.params,
                     dataset=suite.dataset, data_root=data_root, out_dir=out_root / suite.name / "dry-run",
                     device=device or torch.device("cpu"), seed=seed, checkpoint_digest=ckpt_digest,
                     cache_dir=out_root / "cache" / "features", work_root=work_root(out_root, suite, ckpt_digest),
                     data_error=data_error)
    return {"suite": suite.name, "protocol": suite.protocol, "checkpoint": str(checkpoint_path), "seed": seed,
            "variant": dict(suite.variant), "data_root": str(data_root), "dataset_warning": data_error,
            "subnets": suite.protocol_cls().describe(ctx)}


def run_suite(suite: Suite, checkpoint_path: Union[str, Path], store: ResultsStore, *,
              data_root: Union[str, Path] = "data", out_root: Union[str, Path] = "runs",
              subnets: Optional[str] = None, force: bool = False, device: Optional[torch.device] = None,
              seed: int = 0) -> RunOutcome:
    """Run ``suite`` on the checkpoint at ``checkpoint_path`` with ``seed``; returns the run id and its results."""
    data_root, out_root = Path(data_root), Path(out_root)
    suite.check_data(data_root)
    proc_device = dist.init_from_env()
    device = device or proc_device
    ckpt = load_checkpoint(checkpoint_path)
    ckpt_digest = file_digest(checkpoint_path)
    specs = resolve_subnets(subnets or suite.subnets, ckpt)
    suite_digest = suite.digest(specs, seed)
    protocol = suite.protocol_cls()
    if not force:
        done = store.find_finished(ckpt_digest, suite_digest)
        if done is not None:
            log.info("suite %s seed %d on %s already finished as run %s (%s); --force runs it again",
                     suite.name, seed, checkpoint_path, done["run_id"], done["ended_at"])
            return RunOutcome(done["run_id"], True, [Result(r["subnet"], r["metric"], r["value"])
                                                     for r in store.rows(done["run_id"])], seed=seed)
    # Signal handlers go in before the run row exists, and everything after it is inside the try:
    # a SIGTERM at any moment marks the run failed; only SIGKILL can leave it 'running'.
    main = dist.is_main() and protocol.records_run(suite.params)   # e.g. not machine 1 of a Detectron2 run
    suite_json = {**suite.to_dict(specs), "seed": seed}
    run_id = None
    results: List[Result] = []
    out_dir = out_root / suite.name / f"rank{dist.rank()}"
    start = time.perf_counter()
    with interruptible():
        if main:
            run_id = store.start_run(suite=suite.name, suite_digest=suite_digest, suite_json=suite_json,
                                     protocol=suite.protocol, checkpoint_digest=ckpt_digest,
                                     checkpoint_path=str(Path(checkpoint_path).resolve()),
                                     checkpoint_method=ckpt.method, checkpoint_widths=ckpt.widths,
                                     code_version=code_version(), device=str(device), seed=seed,
                                     variant=suite.variant, checkpoint_meta=checkpoint_meta(ckpt))
            out_dir = out_root / suite.name / run_id
        ctx = None
        try:
            ctx = RunContext(suite_name=suite.name, checkpoint=ckpt, subnets=specs, params=suite.params,
                             dataset=suite.dataset, data_root=data_root, out_dir=out_dir, device=device,
                             seed=seed, checkpoint_digest=ckpt_digest, cache_dir=out_root / "cache" / "features",
                             work_root=out_dir / "work" if force else work_root(out_root, suite, ckpt_digest))
            with run_log(out_dir / "run.log"):
                log.info("run %s: suite %s (%s) seed %d on %s [%s], sub-networks %s, device %s", run_id, suite.name,
                         suite.protocol, seed, checkpoint_path, ckpt_digest[:12], ", ".join(map(str, specs)), device)
                if main:
                    atomic_write_bytes(out_dir / "suite.yaml", yaml.safe_dump(suite_json, sort_keys=False).encode())
                for result in protocol.run(ctx):
                    results.append(result)
                    if main:
                        store.add_results(run_id, [(result.subnet, result.metric, result.value)])
        except BaseException as e:
            if run_id is not None:
                store.fail_run(run_id, f"{type(e).__name__}: {e}".splitlines()[0], ctx.info if ctx else None)
                log.error("run %s failed after %.1f s: %s", run_id, time.perf_counter() - start, e)
            raise
        if main:
            store.finish_run(run_id, ctx.info)
            log.info("run %s finished in %.1f s: %d results", run_id, time.perf_counter() - start, len(results))
    return RunOutcome(run_id or "", False, results, out_dir, seed)
