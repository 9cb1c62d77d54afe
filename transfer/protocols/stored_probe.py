"""``stored-probe``: evaluate the linear probe a checkpoint carries, per sub-network, without training.

A checkpoint imported with ``bench import --from slimclr-linear`` (SlimCLR's "-Linear" releases) stores
its switchable probe, one linear layer per width (``Checkpoint.probe``). This protocol extracts each
requested sub-network frozen in eval mode, applies that sub-network's stored layer to its pooled
features of the suite's evaluation view (resize, center crop, normalise: ``ClassificationData.eval_transform``,
256 -> 224 for ImageNet), and reports top-1/top-5 on the validation split. Only the validation folder
is read (a width the checkpoint does not store is refused, since calibrating its BN would need
training images and its probe does not exist). ImageFolder's sorted class folders give ImageNet's
standard class order (n01440764 ... n15075141), the order the released probes were trained in.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

import torch

from pretrain.errors import ConfigError, DataError
from pretrain.checkpoints.extract import stores_statistics
from transfer.classify.data import ClassificationData
from transfer.classify.probe import SwitchableProbe

from .base import Protocol, Result, RunContext, register_protocol
from .linear import evaluate_probe, frozen_subnets

log = logging.getLogger(__name__)


@dataclass
class StoredProbeParams:
    """Evaluation only: batch size and loader workers."""

    eval_batch_size: int = 256
    workers: int = 8

    def validate(self) -> None:
        if self.eval_batch_size < 1 or self.workers < 0:
            raise ValueError("eval_batch_size must be positive and workers >= 0")


@dataclass
class ValidationData(ClassificationData):
    """The classification ``dataset:`` block, of which only the validation split is read."""

    def check(self, data_root: Path) -> None:
        if self.kind == "fmnist":
            return super().check(data_root)
        folder = Path(data_root) / self.val
        if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
            raise DataError(f"dataset folder {folder} not found or has no class folders; expected the ImageNet "
                            f"validation layout {data_root}/{self.val}/CLASS/IMAGE (set --data-root)")

    def num_classes(self, data_root: Path) -> int:
        if self.kind == "fmnist":
            return super().num_classes(data_root)
        from torchvision.datasets.folder import find_classes

        return len(find_classes(str(Path(data_root) / self.val))[0])


def stored_heads(ctx: RunContext) -> List[int]:
    """For each requested sub-network, the index of its layer in the stored probe; a clear error otherwise."""
    probe = ctx.checkpoint.probe
    where = f"checkpoint {ctx.checkpoint.path}"
    if probe is None:
        raise ConfigError(f"{where}: stores no linear probe; suite {ctx.suite_name} evaluates a stored probe "
                          f"(import one with `bench import --from slimclr-linear`, or run a linear suite)")
    missing = [str(s) for s in ctx.subnets if str(s) not in probe["subnets"]]
    if missing:
        raise ConfigError(f"{where}: its stored probe has layers for {', '.join(probe['subnets'])}, not for "
                          f"{', '.join(missing)} (choose --subnets among them)")
    unstored = [str(s) for s in ctx.subnets if not stores_statistics(ctx.checkpoint.widths, s)]
    if unstored:
        raise ConfigError(f"{where}: {', '.join(unstored)} not stored with BatchNorm statistics (widths "
                          f"{ctx.checkpoint.widths}); a stored probe is evaluated on stored networks only")
    classes = ctx.dataset.num_classes(ctx.data_root)
    if classes != probe["num_classes"]:
        raise DataError(f"{where}: its probe predicts {probe['num_classes']} classes but "
                        f"{Path(ctx.data_root) / ctx.dataset.val} has {classes} class folders")
    return [probe["subnets"].index(str(s)) for s in ctx.subnets]


def build_probe(probe: dict, heads: List[int]) -> SwitchableProbe:
    """A ``SwitchableProbe`` holding the stored layers ``heads``, in that order."""
    dims = [probe["state_dict"][f"heads.{i}.weight"].shape[1] for i in heads]
    out = SwitchableProbe(dims, probe["num_classes"], bool(probe.get("feature_norm", False)))
    sd = {}
    for j, i in enumerate(heads):
        for leaf in ("weight", "bias"):
            sd[f"heads.{j}.{leaf}"] = probe["state_dict"][f"heads.{i}.{leaf}"]
    out.load_state_dict(sd)
    return out


@register_protocol
class StoredProbeProtocol(Protocol):
    """Top-1/top-5 of a checkpoint's stored switchable probe on the validation split, per sub-network."""

    name = "stored-probe"
    Params = StoredProbeParams
    Dataset = ValidationData
    description = "the checkpoint's stored linear probe (e.g. SlimCLR's -Linear releases) on val; no training"

    def run(self, ctx: RunContext) -> Iterator[Result]:
        start = time.perf_counter()
        p, d = ctx.params, ctx.dataset
        heads = stored_heads(ctx)
        nets = frozen_subnets(ctx)
        dims = {name: net.num_features for name, net in nets.items()}
        probe = build_probe(ctx.checkpoint.probe, heads).to(ctx.device)
        wrong = [f"{name} ({dims[name]} features, layer reads {probe.heads[j].in_features})"
                 for j, name in enumerate(nets) if probe.heads[j].in_features != dims[name]]
        if wrong:
            raise ConfigError(f"checkpoint {ctx.checkpoint.path}: stored probe does not fit {', '.join(wrong)}")
        val = d.split(ctx.data_root, "val", d.eval_transform())
        accs = evaluate_probe(nets, probe, val, p, ctx.device)
        wall = time.perf_counter() - start
        for name, acc in accs.items():
            log.info("stored-probe %s: top-1 %.2f%%", name, acc["top1"])
            for metric, value in acc.items():
                yield Result(name, metric, value)
            yield Result(name, "wall_time_s", wall)
