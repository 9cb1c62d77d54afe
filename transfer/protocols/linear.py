"""``linear`` and ``linear-fast``: the switchable linear probe on frozen sub-networks.

``linear`` is the MoCo/SlimCLR protocol: every extracted sub-network frozen in eval mode, one
linear layer per sub-network trained jointly on augmented crops (RandomResizedCrop + flip); with
``distill`` (SlimCLR) the full width learns by cross-entropy and smaller ones by (CE + soft CE to
the full width) / 2, without it (MoCo) every layer by cross-entropy. ``schedule: step`` multiplies
the lr by ``gamma`` at each epoch of ``milestones`` (MoCo's main_lincls.py); ``schedule: cosine``
sets ``0.5 * lr * (1 + cos(pi * T / T_total))`` before every iteration T of the T_total the run
makes, without warm-up (SlimCLR's lr_scheduler 'cos' mode).
``linear-fast`` computes each sub-network's center-crop features once, caches them, and trains
the same probe on the cached features: far cheaper, no augmentation. Both report their wall time
so the trade is visible beside the accuracies.

Both evaluate every ``evaluate_every`` epochs and at the last, and report as ``top1``/``top5`` the
pick of ``select``: ``best`` (MoCo's main_lincls.py: each head's best top-1, the first of equal ones),
``best-full-width`` (SlimCLR's main_ssl_lincls.py: every head at the evaluated epoch of the full width's
best top-1, the last of equal ones) or ``last``; ``top1_last``/``top5_last`` are the last epoch's.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from pretrain.errors import ConfigError
from transfer.classify import distributed as dist
from transfer.classify.data import ClassificationData, classes_of, transform_names
from transfer.classify.metrics import topk_correct
from transfer.classify.probe import accuracy_rows, build_probe, switchable_loss, teacher_index
from transfer.classify.subnets import architecture, extract_subnet
from transfer.features import FeatureCache, cached_features, pooled

from .base import Protocol, Result, RunContext, describe_optimizer, register_protocol

log = logging.getLogger(__name__)


@dataclass
class ProbeParams:
    """Probe optimisation; the defaults are the MoCo linear-evaluation recipe."""

    epochs: int = 100
    batch_size: int = 256            # global batch, split across DDP processes
    lr: float = 30.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["step", "cosine"] = "step"  # step: per epoch at milestones (MoCo); cosine: per iteration
    milestones: List[int] = field(default_factory=lambda: [60, 80])  # epochs where lr is multiplied by gamma (step)
    gamma: float = 0.1
    distill: bool = True             # SlimCLR's soft CE from the full width for smaller sub-networks; false: CE (MoCo)
    feature_norm: bool = False       # BatchNorm1d without affine before each head (MAE); MoCo's recipe has none
    probe: Literal["switchable", "slimmable"] = "switchable"   # slimmable: one layer shared across widths
                                     # (SlimCLR's slim_fc='supervised'); switchable: one per sub-network (its eval)
    evaluate_every: int = 1          # epochs between evaluations, and the last (MoCo: 1; SlimCLR's eval_freq: 2)
    select: Literal["best", "best-full-width", "last"] = "best"   # which evaluation top1/top5 report (MoCo: best)
    eval_batch_size: int = 256
    workers: int = 8

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1 or self.evaluate_every < 1:
            raise ValueError("epochs, batch_size, eval_batch_size and evaluate_every must be positive")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")


@dataclass
class LinearParams(ProbeParams):
    rrc_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop scale range
    backend: Literal["pil", "dali"] = "pil"   # dali: decode and augment with NVIDIA DALI (GPU); imagefolder only

    def validate(self) -> None:
        super().validate()
        if len(self.rrc_scale) != 2 or not 0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1:
            raise ValueError(f"rrc_scale must be [min, max] with 0 < min <= max <= 1, got {self.rrc_scale}")


def steps_per_epoch(samples: int, batch_size: int, min_batch: int = 1) -> int:
    """Optimizer steps in one epoch of ``samples`` in batches of ``batch_size``; a last batch smaller than
    ``min_batch`` is skipped (BatchNorm of ``feature_norm`` cannot normalise one sample)."""
    full, rest = divmod(samples, batch_size)
    return full + (1 if rest >= min_batch else 0)


class ProbeOptimizer:
    """SGD with momentum and the suite's schedule, stepped where the schedule says.

    ``step`` is an epoch for ``schedule: step`` (``MultiStepLR`` at ``milestones``) and an iteration for
    ``schedule: cosine`` (``LambdaLR`` with factor ``0.5 * (1 + cos(pi * T / T_total))``, T the number of
    optimizer steps taken, T_total = ``iters_per_epoch * epochs``; no warm-up).
    """

    def __init__(self, probe: torch.nn.Module, p: ProbeParams, iters_per_epoch: int):
        self.opt = torch.optim.SGD(probe.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
        self.per_iteration = p.schedule == "cosine"
        if self.per_iteration:
            total = max(1, iters_per_epoch * p.epochs)
            self.sched = torch.optim.lr_scheduler.LambdaLR(
                self.opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * t / total)))
        else:
            self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, milestones=list(p.milestones), gamma=p.gamma)

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def step(self, loss: torch.Tensor) -> None:
        """One iteration: backward, SGD step, and the cosine schedule's step."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.per_iteration:
            self.sched.step()

    def end_epoch(self) -> None:
        if not self.per_iteration:
            self.sched.step()


def evaluated_epochs(p: ProbeParams) -> List[int]:
    """The (1-based) epochs after which the probe is evaluated: every ``evaluate_every``-th and the last
    (SlimCLR main_ssl_lincls.py: ``(epoch + 1) % eval_freq == 0 or epoch == num_epochs - 1``)."""
    return [e for e in range(1, p.epochs + 1) if e % p.evaluate_every == 0 or e == p.epochs]


Accuracies = Dict[str, Tuple[float, float]]           # sub-network -> (top-1, top-5) of one evaluation


def pick_results(history: Mapping[int, Accuracies], select: str, teacher: str) -> Dict[str, Dict[str, float]]:
    """Each sub-network's reported ``{epoch, top1, top5}`` from the evaluations by epoch.

    ``best``: each head's best top-1, the first of equal ones (MoCo: ``acc1 > best_acc1``);
    ``best-full-width``: every head at the epoch of the ``teacher``'s best top-1, the last of equal ones
    (SlimCLR: ``if best_acc1 <= acc1``); ``last``: the last evaluation.
    """
    epochs = sorted(history)
    names = list(history[epochs[-1]])
    if select == "last":
        chosen = {name: epochs[-1] for name in names}
    elif select == "best-full-width":
        top = max(history[e][teacher][0] for e in epochs)
        at = max(e for e in epochs if history[e][teacher][0] >= top)
        chosen = {name: at for name in names}
    elif select == "best":
        chosen = {name: max(epochs, key=lambda e: (history[e][name][0], -e)) for name in names}
    else:
        raise ValueError(f"select: expected best, best-full-width or last, got {select!r}")
    return {name: {"epoch": e, "top1": history[e][name][0], "top5": history[e][name][1]}
            for name, e in chosen.items()}


def result_rows(ctx: RunContext, history: Mapping[int, Accuracies], wall: float,
                extra: Mapping[str, float] = {}) -> Iterator[Result]:
    """The picked ``top1``/``top5`` and the last epoch's ``top1_last``/``top5_last`` of every sub-network;
    which epochs were evaluated and picked go to the run's info."""
    p = ctx.params
    names = [str(s) for s in ctx.subnets]
    teacher = names[teacher_index(ctx.subnets) or 0]
    picked = pick_results(history, p.select, teacher)
    last = history[max(history)]
    ctx.info.update(evaluated_epochs=sorted(history), select=p.select,
                    picked_epoch={name: picked[name]["epoch"] for name in names})
    for name in names:
        yield Result(name, "top1", picked[name]["top1"])
        yield Result(name, "top5", picked[name]["top5"])
        yield Result(name, "top1_last", last[name][0])
        yield Result(name, "top5_last", last[name][1])
        for metric, value in extra.items():
            yield Result(name, metric, value)
        yield Result(name, "wall_time_s", wall)


def describe_probe(ctx: RunContext, iters_per_epoch: Optional[int], per_process_batch: int,
                   processes: int, inputs: List[str]) -> Dict[str, Any]:
    """What the probe's training receives for each sub-network, built with the run's ``ProbeOptimizer``."""
    p, d = ctx.params, ctx.dataset
    dims = {str(s): architecture(ctx, s).num_features for s in ctx.subnets}
    num_classes = d.num_classes(ctx.data_root) if ctx.data_error is None else None
    probe = build_probe(p.probe, list(dims.values()), num_classes or 1, p.feature_norm)
    opt = ProbeOptimizer(probe, p, iters_per_epoch or 1)
    if p.schedule == "cosine":
        schedule = {"kind": "cosine", "per": "iteration", "warmup": 0,
                    "iterations": iters_per_epoch * p.epochs if iters_per_epoch else None}
    else:
        schedule = {"kind": "step", "per": "epoch", "milestones": list(opt.sched.milestones), "gamma": opt.sched.gamma}
    index = teacher_index(ctx.subnets) if p.distill else None
    teacher = str(ctx.subnets[index]) if index is not None else None
    loss = (f"full width {teacher} cross-entropy; others (cross-entropy + soft cross-entropy to {teacher}) / 2"
            if teacher else "cross-entropy per head")
    return {name: {"optimizer": describe_optimizer(opt.opt), "schedule": schedule,
                   "batch": {"global": per_process_batch * processes, "per_process": per_process_batch,
                             "processes": processes},
                   "epochs": p.epochs, "iterations_per_epoch": iters_per_epoch,
                   "evaluate_every": p.evaluate_every, "evaluated_epochs": evaluated_epochs(p), "select": p.select,
                   "loss": loss, "backbone": "frozen, eval mode",
                   "probe": {"kind": p.probe, "in_features": dim, "num_classes": num_classes,
                             "feature_norm": p.feature_norm, "trained_jointly_with": [n for n in dims if n != name],
                             **({"shares_weight": f"the leading {dim} of {max(dims.values())} input columns of one "
                                                 f"linear layer"} if p.probe == "slimmable" else {})},
                   "inputs": inputs, "eval_transform": transform_names(d.eval_transform())}
            for name, dim in dims.items()}


def frozen_subnets(ctx: RunContext) -> Dict[str, torch.nn.Module]:
    """Every requested sub-network extracted, in eval mode, without gradients."""
    nets = {}
    for spec in ctx.subnets:
        net = extract_subnet(ctx, spec)
        net.requires_grad_(False)
        nets[str(spec)] = net
    return nets


@torch.no_grad()
def evaluate_probe(nets: Dict[str, torch.nn.Module], probe: torch.nn.Module, val, p: ProbeParams,
                   device: torch.device) -> Dict[str, Dict[str, float]]:
    """Top-1/top-5 (%) of every sub-network's probe on ``val`` (sharded over DDP processes, then summed)."""
    part = Subset(val, dist.shard(len(val)))
    loader = DataLoader(part, batch_size=p.eval_batch_size, num_workers=p.workers)
    counts = [0.0] * (2 * len(nets) + 1)
    probe.eval()
    for images, targets in tqdm(loader, desc="eval", leave=False, mininterval=5):
        images, targets = images.to(device), targets.to(device)
        logits = probe([pooled(net, images) for net in nets.values()])
        for i, l in enumerate(logits):
            c = topk_correct(l, targets)
            counts[2 * i] += c[1]
            counts[2 * i + 1] += c[5]
        counts[-1] += len(targets)
    counts = dist.sum_across(counts, device)
    return {name: accuracy_rows({1: counts[2 * i], 5: counts[2 * i + 1]}, counts[-1])
            for i, name in enumerate(nets)}


@register_protocol
class LinearProtocol(Protocol):
    """Switchable linear probe on augmented images (MoCo recipe); DDP under torchrun."""

    name = "linear"
    Params = LinearParams
    Dataset = ClassificationData
    description = "frozen sub-networks, switchable linear probe (SlimCLR distillation with distill); top-1/top-5"

    def run(self, ctx: RunContext) -> Iterator[Result]:
        start = time.perf_counter()
        torch.manual_seed(ctx.seed)
        p, d, device = ctx.params, ctx.dataset, ctx.device
        if p.backend == "dali" and d.kind != "imagefolder":
            raise ConfigError(f"params.backend: dali reads image files; dataset.kind {d.kind!r} has none "
                              f"(use dataset.kind: imagefolder or params.backend: pil)")
        nets = frozen_subnets(ctx)
        train = d.split(ctx.data_root, "train", d.train_transform(p.rrc_scale))
        val = d.split(ctx.data_root, "val", d.eval_transform())
        probe = build_probe(p.probe, [n.num_features for n in nets.values()], len(classes_of(train)),
                            p.feature_norm).to(device)
        model = dist.wrap_ddp(probe, device)
        local_batch = max(1, p.batch_size // dist.world_size())
        if p.backend == "dali":
            from transfer.classify.dali_data import DaliEpochs   # the optional extra, only when asked for
            loader = sampler = DaliEpochs(train, d.train_transform(p.rrc_scale), local_batch, ctx.seed,
                                          dist.rank(), dist.world_size(), device, p.workers)
            iters = len(loader)
        else:
            sampler = DistributedSampler(train, seed=ctx.seed) if dist.world_size() > 1 else None
            loader = DataLoader(train, batch_size=local_batch, shuffle=sampler is None,
                                sampler=sampler, num_workers=p.workers, pin_memory=device.type == "cuda",
                                persistent_workers=p.workers > 0)
            iters = steps_per_epoch(len(sampler) if sampler is not None else len(train), local_batch,
                                    2 if p.feature_norm else 1)
        opt = ProbeOptimizer(probe, p, iters)
        criterion = probe_criterion(p, ctx.subnets)
        due = set(evaluated_epochs(p))
        history: Dict[int, Accuracies] = {}
        for epoch in range(p.epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
            probe.train()
            total, batches = 0.0, 0
            for images, targets in tqdm(loader, desc=f"linear epoch {epoch + 1}/{p.epochs}", leave=False,
                                        mininterval=5, disable=not dist.is_main()):
                if p.feature_norm and len(targets) < 2:  # BatchNorm cannot normalise a single image
                    continue
                images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                with torch.no_grad():
                    feats = [pooled(net, images) for net in nets.values()]
                loss = criterion(model(feats), targets)
                opt.step(loss)
                total, batches = total + loss.item(), batches + 1
            opt.end_epoch()
            log.info("linear epoch %d/%d: loss %.4f, lr %.4g", epoch + 1, p.epochs, total / max(batches, 1), opt.lr)
            if epoch + 1 in due:
                accs = evaluate_probe(nets, probe, val, p, device)
                history[epoch + 1] = {name: (a["top1"], a["top5"]) for name, a in accs.items()}
                log.info("linear epoch %d: top-1 %s", epoch + 1,
                         ", ".join(f"{n} {a[0]:.2f}" for n, a in history[epoch + 1].items()))
        yield from result_rows(ctx, history, time.perf_counter() - start)

    def describe(self, ctx: RunContext) -> Dict[str, Any]:
        p, d = ctx.params, ctx.dataset
        world = dist.world_size()
        local = max(1, p.batch_size // world)
        iters = None
        if ctx.data_error is None:
            n = len(d.split(ctx.data_root, "train", None))
            iters = steps_per_epoch(math.ceil(n / world), local, 2 if p.feature_norm else 1)
        return describe_probe(ctx, iters, local, world, transform_names(d.train_transform(p.rrc_scale)))


@contextmanager
def threads_for(work_per_step: float, device: torch.device) -> Iterator[None]:
    """One CPU thread for tiny steps: on a busy CPU, OpenMP's thread hand-offs cost 100x the arithmetic
    of a 128 x 512 x 10 step; ImageNet-sized steps keep torch's thread count."""
    previous = torch.get_num_threads()
    small = device.type == "cpu" and work_per_step < 5e7
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(previous)


def probe_criterion(p: ProbeParams, subnets: Sequence) -> Callable:
    """The loss the probe trains on, ``(logits per head, targets) -> loss``: SlimCLR's with ``distill`` (the
    widest full-depth head teaches the others), a plain cross-entropy per head otherwise (MoCo's), summed."""
    return functools.partial(switchable_loss, teacher=teacher_index(subnets) if p.distill else None)


def train_probe_on_features(train_feats: Sequence[torch.Tensor], labels: torch.Tensor, num_classes: int,
                            p: ProbeParams, criterion: Callable, device: torch.device, seed: int = 0,
                            after_epoch: Optional[Callable[[torch.nn.Module, int], None]] = None) -> torch.nn.Module:
    """Train the switchable probe on in-memory features (one tensor per sub-network, rows aligned);
    ``after_epoch(probe, epoch)`` runs after each (1-based) epoch, e.g. to evaluate it."""
    torch.manual_seed(seed)  # the same probe whether the features came from the cache or were just extracted
    probe = build_probe(p.probe, [f.shape[1] for f in train_feats], num_classes, p.feature_norm).to(device)
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    opt = ProbeOptimizer(probe, p, steps_per_epoch(n, p.batch_size, 2 if p.feature_norm else 1))
    work = p.batch_size * num_classes * sum(f.shape[1] for f in train_feats)
    with threads_for(work, device):
        for epoch in tqdm(range(p.epochs), desc="probe epochs", leave=False, mininterval=5):
            probe.train()
            order = torch.randperm(n, generator=g)
            for i in range(0, n, p.batch_size):
                idx = order[i:i + p.batch_size]
                if p.feature_norm and len(idx) < 2:  # BatchNorm cannot normalise a single sample
                    continue
                feats = [f[idx].to(device).float() for f in train_feats]
                opt.step(criterion(probe(feats), labels[idx].to(device)))
            opt.end_epoch()
            if after_epoch is not None:
                after_epoch(probe.eval(), epoch + 1)
    return probe.eval()


@torch.no_grad()
def evaluate_on_features(probe: torch.nn.Module, feats: Sequence[torch.Tensor], labels: torch.Tensor,
                         device: torch.device, batch_size: int = 4096) -> List[Dict[str, float]]:
    """Top-1/top-5 (%) of each head on in-memory features."""
    counts = [{1: 0, 5: 0} for _ in feats]
    for i in range(0, len(labels), batch_size):
        y = labels[i:i + batch_size].to(device)
        logits = probe([f[i:i + batch_size].to(device).float() for f in feats])
        for c, l in zip(counts, logits):
            for k, v in topk_correct(l, y).items():
                c[k] += v
    return [accuracy_rows(c, len(labels)) for c in counts]


def feature_data_digest(ctx: RunContext) -> str:
    """Key of a feature cache: the dataset block and the folder it read (another copy is other data)."""
    root = str(Path(ctx.data_root).resolve())
    return hashlib.sha256(f"{ctx.dataset.digest()}:{root}".encode()).hexdigest()


class LazySubnets(Mapping):
    """The requested sub-networks by name, each extracted (and BN-calibrated) on first access, once.

    Cached features need no network: a kNN run after ``linear-fast`` on the same checkpoint builds
    none, and a DSPNet depth variant is calibrated once per run rather than once per split.
    """

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.specs = {str(s): s for s in ctx.subnets}
        self.built: Dict[str, torch.nn.Module] = {}

    def __getitem__(self, name: str) -> torch.nn.Module:
        if name not in self.built:
            self.built[name] = extract_subnet(self.ctx, self.specs[name]).requires_grad_(False)
        return self.built[name]

    def __iter__(self):
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)


Features = Tuple[Dict[str, torch.Tensor], torch.Tensor]


def subnet_features(ctx: RunContext, batch_size: int, workers: int,
                    splits: Sequence[str] = ("train", "val")) -> Dict[str, Features]:
    """Center-crop features of every requested sub-network on each split: {split: ({subnet: N x C}, labels)}.

    Cached per (checkpoint, data, split, subnet) and sharded under torchrun; a sub-network is
    extracted only if one of its splits is not cached yet.
    """
    d = ctx.dataset
    cache = FeatureCache(ctx.cache_dir, ctx.checkpoint_digest, feature_data_digest(ctx))
    nets = LazySubnets(ctx)
    return {split: cached_features(nets, lambda s=split: d.split(ctx.data_root, s, d.eval_transform()), split,
                                   cache, ctx.device, batch_size, workers)
            for split in splits}


@register_protocol
class LinearFastProtocol(Protocol):
    """The switchable probe trained on cached center-crop features: minutes instead of GPU-days."""

    name = "linear-fast"
    Params = ProbeParams
    Dataset = ClassificationData
    description = "switchable linear probe on cached features (no augmentation); top-1/top-5 and wall time"

    def run(self, ctx: RunContext) -> Iterator[Result]:
        start = time.perf_counter()
        torch.manual_seed(ctx.seed)
        p = ctx.params
        feats = subnet_features(ctx, p.eval_batch_size, p.workers)
        (train_f, train_y), (val_f, val_y) = feats["train"], feats["val"]
        feature_time = time.perf_counter() - start
        names = [str(s) for s in ctx.subnets]
        num_classes = ctx.dataset.num_classes(ctx.data_root)
        due = set(evaluated_epochs(p))
        history: Dict[int, Accuracies] = {}

        def evaluate(probe: torch.nn.Module, epoch: int) -> None:
            if epoch in due:
                accs = evaluate_on_features(probe, [val_f[n] for n in names], val_y, ctx.device)
                history[epoch] = {n: (a["top1"], a["top5"]) for n, a in zip(names, accs)}

        train_probe_on_features([train_f[n] for n in names], train_y, num_classes, p,
                                probe_criterion(p, ctx.subnets), ctx.device, ctx.seed, after_epoch=evaluate)
        wall = time.perf_counter() - start
        log.info("linear-fast: features %.1f s, total %.1f s", feature_time, wall)
        yield from result_rows(ctx, history, wall, {"feature_time_s": feature_time})

    def describe(self, ctx: RunContext) -> Dict[str, Any]:
        p, d = ctx.params, ctx.dataset
        iters = None
        if ctx.data_error is None:
            iters = steps_per_epoch(len(d.split(ctx.data_root, "train", None)), p.batch_size,
                                    2 if p.feature_norm else 1)
        return describe_probe(ctx, iters, p.batch_size, 1, ["cached center-crop features (no augmentation)"])
