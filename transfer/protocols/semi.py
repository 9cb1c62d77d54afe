"""``semi``: fine-tune each whole extracted sub-network on 1% or 10% of the training labels.

``params.subset`` names the labelled images: ``simclr-1pct`` / ``simclr-10pct`` are SimCLR's ImageNet
file lists, shipped in ``imagenet_subsets/`` beside this module; ``file`` reads the user's own list
(``subset_file``, one image file name per line, e.g. ``n01440764_10026.JPEG``); ``balanced`` draws
``label_fraction`` of every class, deterministically from ``seed``. A list naming images the training
folder lacks fails before any training. The subset's digest is stored with the run, so results on
different subsets are never confused.

The fine-tuning is SimCLR's (Chen et al. 2020, appendix B.5; google-research/simclr ``model_util.py``):
SGD with Nesterov momentum 0.9 on every parameter alike at ``base_lr * batch_size / 256`` (0.8 at batch
4096), cosine decay per step without warm-up, no weight decay, a zero-initialised logits layer, global
BatchNorm, random crop + flip only. As SimCLR's input pipeline, the labelled set is reshuffled every
epoch and streamed in full global batches across epoch boundaries, ``n * epochs // batch + 1`` steps.
A smaller batch (``params.batch_size``) scales the lr by the same rule; the run records the batch it used.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler, Subset
from torchvision import transforms as T
from tqdm import tqdm

from pretrain.errors import ConfigError, DataError
from transfer.classify import distributed as dist
from transfer.classify.data import CenterCropFraction, ClassificationData, classes_of, targets_of, transform_names
from transfer.classify.metrics import topk_correct
from transfer.classify.probe import accuracy_rows
from transfer.classify.subnets import architecture, extract_subnet

from .base import (Protocol, Result, RunContext, bn_batch_info, describe_optimizer, register_protocol,
                   warn_bn_batch)

log = logging.getLogger(__name__)

# SimCLR's lists (google-research/simclr, imagenet_subsets/, Apache-2.0), found beside this module
SUBSETS_DIR = Path(__file__).resolve().parent / "imagenet_subsets"
SIMCLR_SUBSETS = {"simclr-1pct": SUBSETS_DIR / "1percent.txt", "simclr-10pct": SUBSETS_DIR / "10percent.txt"}
MISSING_SHOWN = 5                    # missing image names quoted in the error
SIMCLR_BN_BATCH = 4096               # SimCLR's fine-tuning batch, all of it in one global BN (run.py global_bn)


@dataclass
class SemiData(ClassificationData):
    """The dataset block with SimCLR's views (google-research/simclr ``data_util.py``): training crops
    resized bicubic (``crop_and_resize``); evaluation crops the central ``crop_fraction`` of the
    shorter side, then resizes it bicubic to ``resolution`` (``center_crop``, ``CROP_PROPORTION``)."""

    interpolation: Literal["bilinear", "bicubic"] = "bicubic"
    crop_fraction: Optional[float] = 0.875   # null: resize the shorter side to `resize`, then center crop

    def validate(self) -> None:
        super().validate()
        if self.crop_fraction is not None and not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1] or null, got {self.crop_fraction}")
        if self.crop_fraction is not None and self.resize is not None:
            raise ValueError(f"resize is not read when crop_fraction is set (SimCLR's view crops "
                             f"{self.crop_fraction} of the shorter side, then resizes to resolution); set one")

    def eval_view(self) -> list:
        if self.crop_fraction is None:
            return super().eval_view()
        return [CenterCropFraction(self.crop_fraction),
                T.Resize((self.resolution, self.resolution), interpolation=self._mode)]


@dataclass
class SemiParams:
    """Which images keep their labels, and SimCLR's fine-tuning recipe (appendix B.5)."""

    subset: Literal["simclr-1pct", "simclr-10pct", "balanced", "file"] = "simclr-1pct"
    subset_file: Optional[str] = None  # subset: file; a relative path is read from --data-root
    label_fraction: Optional[float] = None  # subset: balanced; fraction of every class that keeps its label
    seed: int = 0                    # subset: balanced; seed of the draw
    epochs: int = 60
    batch_size: int = 4096           # global batch, split across DDP processes
    base_lr: float = 0.05            # every parameter's lr is base_lr * batch_size / 256 (SimCLR's linear rule)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    head_init: Literal["zeros", "normal"] = "zeros"   # SimCLR's zero_init_logits_layer; normal: N(0, 0.01)
    global_bn: bool = True           # SyncBatchNorm across DDP processes (SimCLR's global_bn); false: per process
    rrc_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    eval_batch_size: int = 256
    workers: int = 8

    @property
    def lr(self) -> float:
        """The lr of every parameter at step 0."""
        return self.base_lr * self.batch_size / 256

    def validate(self) -> None:
        if self.label_fraction is not None and not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.subset == "balanced" and self.label_fraction is None:
            raise ValueError("subset: balanced needs label_fraction (the fraction of every class that keeps its label)")
        if self.subset != "balanced" and self.label_fraction is not None:
            raise ValueError(f"label_fraction is used only with subset: balanced; subset: {self.subset} names its "
                             f"own images")
        if self.subset == "file" and not self.subset_file:
            raise ValueError("subset: file needs subset_file (a list of image file names, one per line)")
        if self.subset != "file" and self.subset_file:
            raise ValueError(f"subset_file is read only with subset: file (got subset: {self.subset})")
        if self.epochs < 1 or self.base_lr <= 0:
            raise ValueError("epochs and base_lr must be positive")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (BatchNorm trains on batches), got {self.batch_size}")
        if self.nesterov and self.momentum <= 0:
            raise ValueError("nesterov needs momentum > 0")

    def subset_path(self, data_root: Optional[Path]) -> Optional[Path]:
        """The file list this subset reads (None for ``balanced``)."""
        if self.subset in SIMCLR_SUBSETS:
            return SIMCLR_SUBSETS[self.subset]
        if self.subset == "file":
            path = Path(self.subset_file).expanduser()
            return path if path.is_absolute() or data_root is None else Path(data_root) / path
        return None


def _file_names(ds) -> Optional[List[str]]:
    """Image file names of an ImageFolder (or a subset of one), else None."""
    base, idx = (ds.dataset, ds.indices) if isinstance(ds, Subset) else (ds, range(len(ds)))
    samples = getattr(base, "samples", None)
    return None if samples is None else [Path(samples[j][0]).name for j in idx]


def label_subset(ds, fraction: Optional[float], seed: int,
                 subset_file: Optional[Path] = None) -> Tuple[List[int], str]:
    """Indices of the labelled images and the digest of that subset (sha256 of its sorted names or indices).

    With ``subset_file`` the images it lists (all of them must be in ``ds``), else ``fraction`` of every
    class drawn with ``seed``."""
    names = _file_names(ds)
    if subset_file is not None:
        if names is None:
            raise DataError(f"subset file {subset_file}: a file list needs an ImageFolder dataset (kind: imagefolder)")
        if not subset_file.is_file():
            raise DataError(f"subset file {subset_file}: no such file; expected one image file name per line "
                            f"(the SimCLR format, e.g. n01440764_10026.JPEG)")
        wanted = {line.strip().split("/")[-1] for line in subset_file.read_text().splitlines() if line.strip()}
        indices = [i for i, n in enumerate(names) if n in wanted]
        missing = sorted(wanted - {names[i] for i in indices})
        if missing:
            base = ds.dataset if isinstance(ds, Subset) else ds
            where = getattr(base, "root", "the training set")
            raise DataError(f"subset file {subset_file}: {len(missing)} of {len(wanted)} listed images are not in "
                            f"{where} ({len(names)} images); first missing: {', '.join(missing[:MISSING_SHOWN])}")
    else:
        if fraction is None:
            raise ValueError("a class-balanced subset needs a label fraction")
        targets = targets_of(ds)
        g = torch.Generator().manual_seed(seed)
        indices = []
        for c in torch.unique(targets).tolist():
            members = torch.nonzero(targets == c).flatten()
            take = max(1, int(round(fraction * len(members))))
            indices += members[torch.randperm(len(members), generator=g)[:take]].tolist()
        indices.sort()
    keys = sorted(names[i] for i in indices) if names is not None else [str(i) for i in indices]
    return indices, hashlib.sha256("\n".join(keys).encode()).hexdigest()


def total_steps(labelled: int, p: SemiParams) -> int:
    """SimCLR's step count (``model_util.get_train_steps``): ``labelled * epochs // batch + 1``."""
    return labelled * p.epochs // p.batch_size + 1


def process_batch(p: SemiParams, world: int) -> int:
    """Each process's share of the global batch; a batch the processes cannot split evenly is an error."""
    if p.batch_size % world or p.batch_size // world < 2:
        raise ConfigError(f"params.batch_size={p.batch_size}: expected a multiple of the {world} processes "
                          f"with at least 2 images each (BatchNorm trains on batches)")
    return p.batch_size // world


class StreamBatches(Sampler):
    """SimCLR's input stream: the labelled set reshuffled every epoch and cut into full global batches
    across epoch boundaries, ``steps`` of them; each process takes its share of every global batch."""

    def __init__(self, n: int, batch: int, steps: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.steps, self.seed, self.rank, self.world = n, batch, steps, seed, rank, world

    def __iter__(self) -> Iterator[List[int]]:
        g = torch.Generator().manual_seed(self.seed)
        pending: List[int] = []
        for _ in range(self.steps):
            while len(pending) < self.batch:
                pending += torch.randperm(self.n, generator=g).tolist()
            batch, pending = pending[:self.batch], pending[self.batch:]
            yield batch[self.rank::self.world]

    def __len__(self) -> int:
        return self.steps


def bn_mode(p: SemiParams, world: int, device: torch.device) -> str:
    """How BatchNorm normalizes during fine-tuning: over the global batch, or each process's share."""
    if world == 1:
        return "global (one process)"
    return "global (SyncBatchNorm)" if p.global_bn and device.type == "cuda" else "per process"


def bn_batch(p: SemiParams, world: int, device: torch.device) -> Dict[str, Any]:
    """Images per BatchNorm batch here against SimCLR's (global BN over its batch of 4096, for its subsets)."""
    here = p.batch_size if bn_mode(p, world, device).startswith("global") else p.batch_size // world
    published = SIMCLR_BN_BATCH if p.subset in SIMCLR_SUBSETS else None
    return bn_batch_info(here, published, f"SimCLR's global BN over its batch of {SIMCLR_BN_BATCH}")


def prepare_model(net: nn.Module, p: SemiParams, world: int, device: torch.device, desc: str) -> nn.Module:
    """``net`` as fine-tuning trains it: SyncBatchNorm where ``global_bn`` spans several CUDA processes."""
    if p.global_bn and world > 1:
        if device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(net)
        # torch's SyncBatchNorm runs on GPUs only
        log.warning("%s: global_bn needs CUDA; BatchNorm normalizes each process's %d images", desc,
                    p.batch_size // world)
    return net


def new_head(features: int, num_classes: int, init: str) -> nn.Linear:
    """The logits layer: zeros (SimCLR's ``zero_init_logits_layer``) or N(0, 0.01) weights and zero bias."""
    head = nn.Linear(features, num_classes)
    if init == "zeros":
        nn.init.zeros_(head.weight)
    else:
        nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    return head


def build_optimizer(net: nn.Module, p: SemiParams, steps: int):
    """SGD (Nesterov) over every parameter at ``p.lr``, and its cosine decay per step (no warm-up)."""
    opt = torch.optim.SGD(net.parameters(), lr=p.lr, momentum=p.momentum, nesterov=p.nesterov,
                          weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, steps) / steps)))
    return opt, sched


def fine_tune(net: nn.Module, train, p: SemiParams, device: torch.device, seed: int, desc: str) -> nn.Module:
    """Train every parameter of ``net`` (BN in train mode) with cross-entropy; returns the trained network."""
    world = dist.world_size()
    local = process_batch(p, world)
    net = prepare_model(net, p, world, device, desc)
    net.to(device).train()
    net.requires_grad_(True)
    model = dist.wrap_ddp(net, device)
    steps = total_steps(len(train), p)
    opt, sched = build_optimizer(net, p, steps)
    batches = StreamBatches(len(train), p.batch_size, steps, seed, dist.rank(), world)
    loader = DataLoader(train, batch_sampler=batches, num_workers=p.workers, pin_memory=device.type == "cuda")
    log.info("%s: %d steps of %d images (%d per process), lr %.4g", desc, steps, p.batch_size, local, p.lr)
    every = max(1, steps // 10)
    for step, (images, targets) in enumerate(tqdm(loader, desc=desc, leave=False, mininterval=5,
                                                  disable=not dist.is_main())):
        loss = F.cross_entropy(model(images.to(device)), targets.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % every == 0 or step + 1 == steps:
            log.info("%s step %d/%d: loss %.4f, lr %.4g", desc, step + 1, steps, loss.item(), opt.param_groups[0]["lr"])
    return net.eval()


@torch.no_grad()
def evaluate(net: nn.Module, val, batch_size: int, workers: int, device: torch.device) -> dict:
    """Top-1/top-5 (%) of a classifier on ``val`` (sharded over DDP processes)."""
    loader = DataLoader(Subset(val, dist.shard(len(val))), batch_size=batch_size, num_workers=workers)
    counts = [0.0, 0.0, 0.0]
    for images, targets in tqdm(loader, desc="eval", leave=False, mininterval=5):
        c = topk_correct(net(images.to(device)), targets.to(device))
        counts = [counts[0] + c[1], counts[1] + c[5], counts[2] + len(targets)]
    top1, top5, n = dist.sum_across(counts, device)
    return accuracy_rows({1: top1, 5: top5}, n)


@register_protocol
class SemiProtocol(Protocol):
    name = "semi"
    Params = SemiParams
    Dataset = SemiData
    description = "fine-tune each sub-network on a labelled subset (SimCLR 1%/10% list, a file, balanced); top-1/top-5"

    def run(self, ctx: RunContext) -> Iterator[Result]:
        p, d, device = ctx.params, ctx.dataset, ctx.device
        local = process_batch(p, dist.world_size())        # before any work
        train_full = d.split(ctx.data_root, "train", d.train_transform(p.rrc_scale))
        subset_file = p.subset_path(ctx.data_root)
        indices, digest = label_subset(train_full, p.label_fraction, p.seed, subset_file)  # before any training
        source = (f"class-balanced {p.label_fraction} seed {p.seed}" if subset_file is None
                  else f"{p.subset} ({subset_file})")
        ctx.info.update(subset_digest=digest, subset_size=len(indices), subset_source=source,
                        global_batch=local * dist.world_size(), lr=p.lr, steps=total_steps(len(indices), p),
                        batch_norm=bn_mode(p, dist.world_size(), device), **bn_batch(p, dist.world_size(), device))
        warn_bn_batch(ctx, ctx.info)
        log.info("semi: %d labelled images (subset digest %s)", len(indices), digest[:12])
        train = Subset(train_full, indices)
        val = d.split(ctx.data_root, "val", d.eval_transform())
        num_classes = len(classes_of(train_full))
        for spec in ctx.subnets:
            start = time.perf_counter()
            torch.manual_seed(ctx.seed)
            net = extract_subnet(ctx, spec).cpu()
            net.fc = new_head(net.num_features, num_classes, p.head_init)
            net = fine_tune(net, train, p, device, ctx.seed, f"semi {spec}")
            for metric, value in evaluate(net, val, p.eval_batch_size, p.workers, device).items():
                yield Result(str(spec), metric, value)
            yield Result(str(spec), "wall_time_s", time.perf_counter() - start)

    def labelled_images(self, ctx: RunContext) -> Optional[int]:
        """How many images keep their labels, from the list alone when there is one; None when only the
        (absent) dataset could say."""
        p, d = ctx.params, ctx.dataset
        path = p.subset_path(ctx.data_root)
        if path is not None and path.is_file() and (ctx.data_error is not None or p.subset in SIMCLR_SUBSETS):
            return len({line.strip().split("/")[-1] for line in path.read_text().splitlines() if line.strip()})
        if ctx.data_error is not None:
            return None
        return len(label_subset(d.split(ctx.data_root, "train", None), p.label_fraction, p.seed, path)[0])

    def describe(self, ctx: RunContext) -> Dict[str, Any]:
        p, d = ctx.params, ctx.dataset
        world = dist.world_size()
        local = process_batch(p, world)
        labelled = self.labelled_images(ctx)
        steps = total_steps(labelled, p) if labelled is not None else None
        num_classes = d.num_classes(ctx.data_root) if ctx.data_error is None else None
        out = {}
        for spec in ctx.subnets:
            net = architecture(ctx, spec)
            net.fc = new_head(net.num_features, num_classes or 1, p.head_init)
            opt, _ = build_optimizer(net, p, steps or 1)
            out[str(spec)] = {
                "optimizer": describe_optimizer(opt),
                "trainable_tensors": sum(1 for q in net.parameters() if q.requires_grad),
                "schedule": {"kind": "cosine per step", "base_lr": p.base_lr, "lr": p.lr, "warmup_steps": 0,
                             "steps": steps},
                "batch": {"global": local * world, "per_process": local, "processes": world},
                "epochs": p.epochs, "labelled_images": labelled, "subset": p.subset,
                "num_classes": num_classes, "head_init": p.head_init,
                "batch_norm": bn_mode(p, world, ctx.device), **bn_batch(p, world, ctx.device),
                "norm_layers": sorted({type(m).__name__ for m in prepare_model(net, p, world, ctx.device, str(spec))
                                       .modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}),
                "train_transform": transform_names(d.train_transform(p.rrc_scale)),
                "eval_transform": transform_names(d.eval_transform()),
            }
        return out
