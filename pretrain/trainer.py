"""One training loop for every pretraining method, on one CPU process or N GPUs under torchrun.

A run folder holds:

- ``checkpoint.pt``: the slimmable encoder in the SlimBench checkpoint format (what ``bench``
  lists, extracts and benchmarks), written every ``run.checkpoint_every`` steps and at the end;
- ``train_state.pt``: everything ``--resume`` needs to continue exactly (method modules with the
  momentum encoder, queue and heads; optimizer; AMP scaler; step; every RNG);
- ``log.jsonl``: one JSON line per logging step (step, lr, momentum, each loss term, gradient norm,
  throughput);
- ``recipe.yaml``: the resolved recipe.

Both ``.pt`` files are written atomically, so a killed run always leaves the last good pair.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
import yaml
from tqdm import tqdm

from pretrain.checkpoints.format import Checkpoint, atomic_torch_save, atomic_write_bytes, save_checkpoint
from pretrain.cost import TrainingCost, count_flops, device_kind
from pretrain.diagnostics import GradientDiagnostics
from pretrain.distributed import DistInfo, all_reduce_mean, all_reduce_min, barrier, init_from_env
from pretrain.checkpoints.keep import epoch_due, keep_checkpoint
from pretrain.errors import ConfigError, SlimBenchError
from pretrain.data.augment import DeviceNormalize
from pretrain.data.loader import build_loader
from pretrain.methods import PretrainMethod, StepContext, build_method
from pretrain.optim import LRSchedule, build_optimizer, set_lr
from pretrain.recipe import (Recipe, RunRecipe, SlimCLRRecipe, check_world, comparable_recipe, recipe_dict,
                            recipe_digest)
from pretrain.models.resnet import SlimResNet, parse_arch
from pretrain.tensorboard_log import TensorBoardLog

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"
RECIPE_FILE = "recipe.yaml"
STATE_FORMAT = "slimbench.train_state"
# A logging window whose data wait exceeds this share of its wall time is reported (not the first,
# which includes starting the workers).
DATA_BOUND_SHARE = 0.5
# The trainer's one clock (data wait, compute time, wall time); a module attribute so that tests
# drive it and assert on timing without depending on the machine's speed or load.
clock = time.perf_counter
NO_BAD_STEP = 2 ** 62   # "no step had a non-finite loss" (a minimum over ranks keeps the first bad step)
# Keys that may change between a run and its resumption without changing what is computed.
RESUMABLE_CHANGES = ("run.max_steps", "run.checkpoint_every", "run.log_every", "data.workers", "data.prefetch",
                     "run.channels_last", "run.keep_every", "run.monitor", "run.diagnose_every",
                     "run.diagnose_cosine")


class TrainingError(SlimBenchError):
    """A run that cannot start, resume or continue."""


class NonFiniteLoss(TrainingError):
    """The loss became NaN or infinite; the run stopped keeping the last good checkpoint."""


@dataclass
class RunResult:
    """What a finished (or stopped) run produced."""

    out: Path
    checkpoint: Path
    steps: int          # steps completed in total
    total_steps: int    # steps of the whole schedule
    last_loss: float


def build_encoder(recipe: Recipe) -> SlimResNet:
    """The recipe's slimmable encoder (pooled features, no classifier)."""
    m = recipe.model
    return SlimResNet(parse_arch(m.arch), widths=m.widths, stem=m.stem, zero_init_residual=m.zero_init_residual)


def check_classes(dataset, num_classes: int, data) -> None:
    """Refuse a labelled dataset with more classes than the method's classifier has (before training)."""
    classes = getattr(dataset, "classes", None)
    if classes is None and isinstance(dataset, torch.utils.data.Subset):
        classes = getattr(dataset.dataset, "classes", None)
    if classes is not None and len(classes) > num_classes:
        where = data.root or data.dataset
        raise ConfigError(f"{where}: {len(classes)} classes, but method.num_classes is {num_classes}; "
                            f"set method.num_classes: {len(classes)}")


def slim_start_step(recipe: Recipe, steps_per_epoch: int) -> int:
    """The first step at which every width trains (0 for methods without a slow start)."""
    if isinstance(recipe.method, SlimCLRRecipe):
        return math.ceil(recipe.method.slim_start_epoch * steps_per_epoch)
    return 0


def lr_schedule(recipe: Recipe, steps_per_epoch: int) -> LRSchedule:
    """The recipe's learning rate as a function of the step."""
    total = recipe.run.epochs * steps_per_epoch
    start = slim_start_step(recipe, steps_per_epoch)
    replace_lr = recipe.method.slim_start_lr if isinstance(recipe.method, SlimCLRRecipe) and start > 0 else None
    o = recipe.optim
    warmup = o.warmup_fraction * total if o.warmup_fraction else o.warmup_epochs * steps_per_epoch
    return LRSchedule(o.lr, total, warmup, o.min_lr, start if replace_lr is not None else None, replace_lr)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles, where oneDNN runs bfloat16 convolutions natively."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def autocast_dtype(run: RunRecipe, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype of a step: float16 on CUDA (``run.amp``), bfloat16 on an AMX CPU (``run.cpu_bf16``), or None."""
    if device.type == "cuda":
        return torch.float16 if run.amp else None
    if device.type == "cpu" and run.cpu_bf16:
        if cpu_has_amx():
            return torch.bfloat16
        # Without AMX, bfloat16 matmuls are emulated and slower than fp32.
        log.warning("run.cpu_bf16: this CPU has no AMX tiles, so bfloat16 would be slower; training in fp32")
    return None


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def recipe_changes(old_recipe: Dict[str, Any], recipe: Recipe) -> List[str]:
    """``key: old -> new`` for every recipe key that a resumed run may not change."""
    old, new = _flatten(comparable_recipe(old_recipe)), _flatten(comparable_recipe(recipe_dict(recipe)))
    changed = sorted(k for k in set(old) | set(new)   # run.monitor.k is part of run.monitor
                     if old.get(k) != new.get(k) and ".".join(k.split(".")[:2]) not in RESUMABLE_CHANGES)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed]


def load_train_state(out: Path, recipe: Recipe) -> Dict[str, Any]:
    """Read a run folder's own training state and check the recipe still describes that run."""
    path = Path(out) / STATE_FILE
    if not path.is_file():
        raise TrainingError(f"--resume: {path} does not exist; nothing to resume in {out}")
    # This file holds Python RNG states and optimizer state, which need full unpickling. It is the
    # run's own file, written by this trainer, never a file a user hands over: only here do we
    # allow weights_only=False.
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for damaged archives
        raise TrainingError(f"--resume: {path} cannot be read ({type(e).__name__}: {e})".splitlines()[0]) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(f"--resume: {path} is not a SlimBench training state")
    changed = recipe_changes(state["recipe"], recipe)
    if changed:
        diffs = "; ".join(changed[:5])
        raise TrainingError(f"--resume: the recipe differs from the run in {out} ({diffs}); only "
                            f"{', '.join(RESUMABLE_CHANGES)} may change when resuming")
    return state


@contextlib.contextmanager
def _deterministic(enabled: bool):
    previous = torch.are_deterministic_algorithms_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


class _RunLog:
    """Appends one JSON line per logging step; on resume drops lines past the resumed step."""

    def __init__(self, path: Path, enabled: bool, resume_step: Optional[int]):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
        elif enabled and resume_step is None:
            path.write_text("")

    def write(self, record: Dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


class Trainer:
    """Runs one recipe into one run folder."""

    def __init__(self, recipe: Recipe, out: "str | Path", resume: bool = False, progress: bool = True,
                 individual: Optional[Dict[str, Any]] = None):
        self.recipe, self.out, self.resume, self.progress = recipe, Path(out), resume, progress
        self.individual = individual   # pretrain.individual's record when this is an individual baseline
        self.config = recipe_dict(recipe)

    # -- set-up ----------------------------------------------------------------------------
    def _setup(self, info: DistInfo) -> None:
        r = self.recipe
        self.info = info
        self.last_logged: Dict[str, float] = {}   # the terms of the last log line, for method.diagnose
        self.diagnosis: List[Dict[str, str]] = []   # method.diagnose of them at the last save
        check_world(r, info.world_size, "the recipe")
        torch.manual_seed(r.run.seed)
        random.seed(r.run.seed)
        np.random.seed(r.run.seed)
        self.method: PretrainMethod = build_method(r, build_encoder(r)).to(info.device)
        self.memory_format = torch.channels_last if r.run.channels_last else torch.contiguous_format
        if r.run.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if r.model.sync_bn and info.distributed:
            if info.device.type == "cpu":  # torch's SyncBatchNorm runs on accelerators only
                log.warning("model.sync_bn: SyncBatchNorm needs GPUs; these CPU ranks keep per-rank BatchNorm")
            else:
                self.method = nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        self.optimizer = build_optimizer(self.method, r.optim)
        self.amp_dtype = autocast_dtype(r.run, info.device)
        # Only float16 needs loss scaling; bfloat16 has float32's exponent range.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if r.data.backend == "dali":
            from pretrain.data.dali import build_dali_loader   # the optional extra, imported only when asked for
            self.loader, self.sampler = build_dali_loader(r.data, r.run.seed, info.rank, info.world_size,
                                                          info.device)
        else:
            self.loader, self.sampler = build_loader(r.data, r.run.seed, info.rank, info.world_size,
                                                     pin_memory=info.device.type == "cuda",
                                                     labelled=self.method.labelled)
            if self.method.labelled:
                check_classes(self.loader.dataset.base, r.method.num_classes, r.data)
        self.normalize = DeviceNormalize().to(info.device)   # the views arrive as uint8 (or already float)
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.total_steps = r.run.epochs * self.steps_per_epoch
        self.stop_step = min(self.total_steps, r.run.max_steps or self.total_steps)
        self.slim_start_step = slim_start_step(r, self.steps_per_epoch)
        self.schedule = lr_schedule(r, self.steps_per_epoch)
        self.model: nn.Module = self.method
        self.find_unused: Optional[bool] = None   # the DDP wrapper's setting, once wrapped
        self.diagnostics: Optional[GradientDiagnostics] = None   # run.diagnose_every's, set when the loop starts

    def _wrap_for(self, ctx: StepContext) -> None:
        """Wrap the method in DDP with ``find_unused_parameters`` only while a step leaves parameters unused.

        The search for unused parameters walks the autograd graph after every forward; SlimCLR needs it
        only during its slow start (the smaller widths' BatchNorms get no gradient), DSPNet only when a
        step's sampled networks miss a listed width. The wrapper is rebuilt when that changes.
        """
        if not self.info.distributed:
            return
        unused = self.method.leaves_parameters_unused(ctx)
        if unused == self.find_unused:
            return
        if self.find_unused is not None:
            log.info("step %d: DDP find_unused_parameters=%s from now on", ctx.step, unused)
        self.model = self.method   # drop the old wrapper (and its gradient hooks) before the new one
        self.model = nn.parallel.DistributedDataParallel(
            self.method, device_ids=[self.info.device] if self.info.device.type == "cuda" else None,
            find_unused_parameters=unused)
        self.find_unused = unused

    def _restore(self) -> int:
        state = load_train_state(self.out, self.recipe)
        if state["world_size"] != self.info.world_size:
            log.warning("resuming a %d-rank run on %d ranks: the data order per step is kept, BN batches differ",
                        state["world_size"], self.info.world_size)
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.cost = TrainingCost.from_dict(state.get("cost"))
        return int(state["step"])

    # -- checkpoints -----------------------------------------------------------------------
    def _save(self, step: int) -> None:
        self.cost.segments[-1].wall_time_s = clock() - self.segment_start
        if self.info.is_main:
            encoder = self.method.encoder
            extra = {"steps": step, "total_steps": self.total_steps, "epoch": step / self.steps_per_epoch,
                     "recipe_digest": recipe_digest(self.recipe), "cost": self.cost.to_dict()}
            if self.individual is not None:
                extra["individual"] = self.individual
            self.diagnosis = self.method.diagnose(self.last_logged)
            if self.diagnosis:
                extra["diagnosis"] = self.diagnosis
            ckpt = Checkpoint.from_model(encoder, method=self.method.name, config=self.config,
                                         desired=self.method.desired(), extra=extra, probe=self.method.stored_probe())
            save_checkpoint(ckpt, self.out / CHECKPOINT_FILE)
            atomic_torch_save({"format": STATE_FORMAT, "version": 1, "step": step, "recipe": self.config,
                               "world_size": self.info.world_size, "method": self.method.state_dict(),
                               "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                               "rng": _rng_state(), "cost": self.cost.to_dict()}, self.out / STATE_FILE)
            self.last_saved = step
        barrier()

    def _monitor(self):
        """``run.monitor``'s kNN monitor (its images read now, so a bad path fails before training)."""
        from pretrain.monitor import KnnMonitor, monitored_subnets

        self.monitored = monitored_subnets(self.method.encoder, self.method.desired())
        return KnnMonitor(self.recipe.run.monitor, self.recipe.data.image_size, self.info.device)

    # -- non-finite losses, checked without a host synchronisation on every step ----------------
    def _watch_finite(self, step: int, loss: torch.Tensor) -> None:
        """Remember on the device the first step whose loss is not finite (no host synchronisation)."""
        bad = ~torch.isfinite(loss.detach())
        self.first_bad = torch.where(bad & (self.first_bad == NO_BAD_STEP), step + 1, self.first_bad)

    def _check_finite(self, done: int, loss: torch.Tensor, terms: Dict[str, torch.Tensor]) -> None:
        """Stop if any step so far had a non-finite loss on any rank (before anything is logged or saved)."""
        first = int(all_reduce_min(self.first_bad))
        if first == NO_BAD_STEP:
            return
        detail = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
        at = "" if first == done else f", checked at step {done}"
        kept = (f"the last good checkpoint is {self.out / CHECKPOINT_FILE} (step {self.last_saved})"
                if self.last_saved is not None else "no checkpoint had been written yet")
        raise NonFiniteLoss(f"step {first}: the loss is not finite (loss {float(loss):.4g}{at}; terms: {detail}); "
                            f"stopped, {kept}. Lower optim.lr, add optim.grad_clip, or check the data")

    # -- the loop --------------------------------------------------------------------------
    def _step(self, step: int, view1: torch.Tensor, view2: torch.Tensor):
        ctx = StepContext(step, self.total_steps, step / self.steps_per_epoch, step >= self.slim_start_step)
        self._wrap_for(ctx)
        lr = self.schedule(step)
        set_lr(self.optimizer, lr)
        signature = self.method.step_signature(ctx)
        measure = signature not in self.cost.flops_per_step   # the first step of each kind is counted
        diagnose = self.diagnostics is not None and (step + 1) % self.recipe.run.diagnose_every == 0
        own_grads = None
        if diagnose and self.recipe.run.diagnose_cosine:
            self.method.network_losses = {}
        with count_flops(measure) as counter:
            with torch.autocast(self.info.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss, terms = self.model(view1, view2, ctx)
            self._watch_finite(step, loss)
            self.optimizer.zero_grad(set_to_none=True)
            if self.method.network_losses is not None:   # each network's own gradient, before the summed one
                own_grads = self.diagnostics.network_gradients(self.method.network_losses)
                self.method.network_losses = None
            self.scaler.scale(loss).backward()
        if measure:   # every rank runs the same networks on an equal share of the batch
            self.cost.flops_per_step[signature] = float(counter.get_total_flops()) * self.info.world_size
        self.cost.add_step(signature, self.recipe.data.batch_size)
        # The norm of the true (unscaled) gradients is logged every step: early-phase spikes are
        # what optim.grad_clip is for, and the log shows whether a recipe needs it.
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        grad_norm = nn.utils.get_total_norm([p.grad for p in params])
        # Interference diagnostics read the true gradient of this step, before clipping changes it.
        diagnosis = self.diagnostics.measure(step + 1, terms, own_grads) if diagnose and self.info.is_main else None
        if self.recipe.optim.grad_clip is not None:
            nn.utils.clip_grads_with_norm_(params, self.recipe.optim.grad_clip, grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        momentum = self.method.update_target(ctx)
        # loss, terms and grad_norm stay tensors: read on logging steps only, so no other step waits
        # for the device (with float16 AMP, GradScaler.step still reads its inf check every step)
        return ctx, lr, momentum, loss.detach(), terms, grad_norm, diagnosis

    def _prepare(self, view: torch.Tensor) -> torch.Tensor:
        """A batch of views on the device, normalised, in the run's memory format."""
        view = self.normalize(view.to(self.info.device, non_blocking=True))
        if view.dim() != 4:   # a labelled method's labels
            return view
        return view.contiguous(memory_format=self.memory_format)

    def _timing(self, wait: float, elapsed: float, steps: int, first_window: bool) -> Dict[str, float]:
        """Per-step data wait and compute time of a logging window; warns once when the wait dominates."""
        share = wait / max(elapsed, 1e-9)
        if share > DATA_BOUND_SHARE and not first_window and not self.warned_data_bound and self.info.is_main:
            d = self.recipe.data
            log.warning("steps wait for data %.0f%% of the time (%.3f s of %.3f s per step): the input path, not "
                        "the model, sets the speed; raise data.workers (now %d per rank%s)", 100 * share,
                        wait / steps, elapsed / steps, d.workers,
                        ", or use data.backend: dali" if d.backend == "pil" and self.info.device.type == "cuda" else "")
            self.warned_data_bound = True
        return {"data_time_s": round(wait / steps, 6), "compute_time_s": round((elapsed - wait) / steps, 6),
                "data_share": round(share, 4)}

    def _announce(self, start: int) -> None:
        r = self.recipe
        log.info("%s: %s %s widths %s, %d steps (%d epochs x %d), global batch %d on %d rank(s), from step %d",
                 self.out, r.method.name, r.model.arch, r.model.widths, self.total_steps, r.run.epochs,
                 self.steps_per_epoch, r.data.batch_size, self.info.world_size, start)
        if isinstance(r.method, SlimCLRRecipe):
            log.info("loss weights per width (%s): %s", r.method.loss_weights,
                     getattr(self.method, "loss_weights", {}))

    def _slim_start_message(self) -> str:
        r = self.recipe.method
        lr = self.schedule(self.slim_start_step)
        how = (f"the schedule's base lr is now slim_start_lr={r.slim_start_lr:g} (lr {lr:.4g} at this step)"
               if r.slim_start_lr is not None else f"the lr continues the schedule at {lr:.4g}")
        return (f"slow start over at step {self.slim_start_step} (epoch {r.slim_start_epoch:g}): "
                f"every width trains from now on; {how}")

    def run(self) -> RunResult:
        """Train until the schedule ends or ``run.max_steps``; returns the run's result."""
        info = init_from_env()
        r = self.recipe
        if info.device.type == "cuda" and not r.run.deterministic:
            torch.backends.cudnn.benchmark = True   # fixed input sizes: let cuDNN pick the fastest kernels
        # Every rank checks (the run folder is on a shared file system), so all stop together.
        if not self.resume and (self.out / STATE_FILE).exists():
            raise TrainingError(f"{self.out} already holds a run ({STATE_FILE}); pass --resume to continue "
                                f"it or choose another --out")
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        with _deterministic(r.run.deterministic):
            self._setup(info)
            self.last_saved: Optional[int] = None
            self.cost = TrainingCost()
            start = self._restore() if self.resume else 0
            self.cost.start_segment(device_kind(info.device), info.world_size)
            self.segment_start = clock()
            if self.resume:
                self.last_saved = start
            if info.is_main:
                atomic_write_bytes(self.out / RECIPE_FILE, yaml.safe_dump(self.config, sort_keys=False).encode())
            self._announce(start)
            if 0 < self.slim_start_step <= start:
                log.info("resuming after the slow start: every width trains")
            elif start == 0 and self.slim_start_step == 0 and isinstance(r.method, SlimCLRRecipe):
                log.info("no slow start: every width trains from step 0")
            run_log = _RunLog(self.out / LOG_FILE, info.is_main, start if self.resume else None)
            board = TensorBoardLog(self.out, info.is_main, start if self.resume else None)
            monitor = self._monitor() if r.run.monitor and info.is_main else None
            self.diagnostics = GradientDiagnostics(
                self.method, r.data.image_size, self.out, info.is_main, start if self.resume else None,
                cosine=r.run.diagnose_cosine) if r.run.diagnose_every else None
            last_loss = float("nan")
            bar = tqdm(total=self.stop_step, initial=start, disable=not (info.is_main and self.progress),
                       desc=f"pretrain {r.method.name}", unit="step", dynamic_ncols=True)
            self.first_bad = torch.tensor(NO_BAD_STEP, device=info.device)
            self.warned_data_bound = False
            # One pass of one loader over every remaining epoch: workers start once and prefetch
            # across epoch boundaries; the sampler keeps each epoch's order and augmentation seeds.
            epoch, batch = divmod(start, self.steps_per_epoch)
            self.sampler.set_position(epoch, batch, end_epoch=math.ceil(self.stop_step / self.steps_per_epoch))
            batches = iter(self.loader)
            tick, images, wait, window, first_window = clock(), 0, 0.0, 0, True
            saving = 0.0   # checkpoint writes inside a logging window: neither data nor compute
            self.method.train()
            for step in range(start, self.stop_step):
                waited = clock()
                view1, view2 = next(batches)
                wait += clock() - waited
                view1, view2 = self._prepare(view1), self._prepare(view2)
                if step == self.slim_start_step and step > 0:
                    log.info(self._slim_start_message())
                ctx, lr, momentum, loss, terms, grad_norm, diagnosis = self._step(step, view1, view2)
                done = step + 1
                images += r.data.batch_size
                window += 1
                bar.update(1)
                monitor_now = epoch_due(done, self.steps_per_epoch, r.run.monitor and r.run.monitor.every_epochs)
                keep_epoch = epoch_due(done, self.steps_per_epoch, r.run.keep_every)
                log_now = done % r.run.log_every == 0 or done == self.stop_step or monitor_now is not None
                save_now = done % r.run.checkpoint_every == 0 or done == self.stop_step or keep_epoch is not None
                if log_now or save_now:
                    self._check_finite(done, loss, terms)
                if log_now:
                    values = all_reduce_mean(torch.stack([loss.float()] + [t.float() for t in terms.values()])).tolist()
                    last_loss, values = values[0], values[1:]
                    self.last_logged = dict(zip(terms, values))
                    elapsed = clock() - tick - saving
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.3g}")
                    record = {"step": done, "epoch": round(done / self.steps_per_epoch, 4), "lr": lr,
                              "momentum": momentum, "loss": last_loss, "grad_norm": float(grad_norm),
                              "slim_active": ctx.slim_active,
                              **dict(zip(terms, values)), "images_per_s": round(images / max(elapsed, 1e-9), 2),
                              **self._timing(wait, elapsed, window, first_window)}
                    if monitor is not None and monitor_now is not None:   # rank 0; the others wait at the next step
                        record.update(monitor(self.method.encoder, self.monitored))
                    if diagnosis:
                        record.update(diagnosis)
                    run_log.write(record)
                    board.write(record)
                    tick, images, wait, window, first_window = clock(), 0, 0.0, 0, False
                    saving = 0.0
                elif diagnosis:   # a diagnostic step between logging steps gets its own line
                    record = {"step": done, "epoch": round(done / self.steps_per_epoch, 4), **diagnosis}
                    run_log.write(record)
                    board.write(record)
                if save_now:
                    saved = clock()
                    self._save(done)
                    saving += clock() - saved
                    if keep_epoch is not None and info.is_main:
                        keep_checkpoint(self.out / CHECKPOINT_FILE, keep_epoch)
            bar.close()
            board.close()
        if info.is_main:   # the final save diagnosed the last logged step
            for found in self.diagnosis:
                log.warning("%s %s at the last logged step (%s; docs/demo.md: a stale queue)",
                            found["subnet"], found["message"], self.out / LOG_FILE)
        log.info("%s: %d of %d steps done, checkpoint %s", self.out, self.stop_step, self.total_steps,
                 self.out / CHECKPOINT_FILE)
        return RunResult(self.out, self.out / CHECKPOINT_FILE, self.stop_step, self.total_steps, last_loss)


def train(recipe: Recipe, out: "str | Path", resume: bool = False, progress: bool = True,
          individual: Optional[Dict[str, Any]] = None) -> RunResult:
    """Pretrain ``recipe`` into the run folder ``out`` (``resume`` continues the run found there).

    ``individual`` is the record of an individual baseline (``pretrain.individual.individual_recipe``).
    """
    return Trainer(recipe, out, resume, progress, individual).run()
