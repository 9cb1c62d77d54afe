"""Protocol ``mmseg``: semantic segmentation of every sub-network with MMSegmentation.

For each sub-network: extract it, export it with the ``backbone.`` prefix, size the base config
(FCN or UPerNet) to it, write the complete config to its work folder, train with MMEngine's
``Runner`` and evaluate with MMSeg's ``IoUMetric`` (mIoU, mAcc, aAcc, in percent). Runs scale
out through MMEngine's launcher (``launcher: pytorch`` under ``torchrun``, or ``slurm``), with
SyncBN. Each training works in ``ctx.work_dir(spec)``, which ``bench run`` keeps across reruns: a
killed run resumes there through MMEngine's own ``resume`` (the last checkpoint of ``work_dir``),
and a sub-network whose ``results.json`` is there is not trained again.

Datasets use MMSeg's folder layouts: a generic ``img_dir/ann_dir`` folder, ADE20K
(``ADEChallengeData2016``), VOC2012 + SBD augmented, Cityscapes, and ``demo-scenes`` (the
Fashion-MNIST scenes of ``transfer.scenes``, generated on first use).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Tuple

from pretrain.checkpoints.format import atomic_write_bytes
from pretrain.data.datasets import FMNIST_CLASSES, find_fmnist
from pretrain.errors import DataError
from pretrain.checkpoints.extract import extract
from transfer.engine_resume import MMENGINE, repair_last_checkpoint
from transfer.protocols.base import Protocol, Result, RunContext, bn_batch_info, register_protocol, warn_bn_batch
from transfer.scenes import SceneSettings, ensure_scenes

from .schedule import BatchSplit, Schedule, split_batch

log = logging.getLogger(__name__)

METRICS = ("mIoU", "mAcc", "aAcc")
DEMO_CLASSES = ("background",) + tuple(FMNIST_CLASSES)


@dataclass(frozen=True)
class Layout:
    """Where one kind of dataset keeps its files, and which MMSeg dataset class reads them."""

    dataset_type: str
    default_root: str
    train: Tuple[Tuple[str, str, Optional[str]], ...]   # (img_path, seg_map_path, ann_file) per part
    val: Tuple[str, str, Optional[str]]
    img_suffix: Optional[str] = None       # None: the MMSeg class's default
    seg_map_suffix: Optional[str] = None
    reduce_zero_label: Optional[bool] = None
    described: str = ""


LAYOUTS: Dict[str, Layout] = {
    "folder": Layout("BaseSegDataset", "", (("img_dir/{train}", "ann_dir/{train}", None),),
                     ("img_dir/{val}", "ann_dir/{val}", None), ".jpg", ".png", False,
                     "ROOT/img_dir/{train,val}/*.jpg and ROOT/ann_dir/{train,val}/*.png (class index per pixel, "
                     "255 ignored)"),
    "demo-scenes": Layout("BaseSegDataset", "demo-scenes", (("img_dir/train", "ann_dir/train", None),),
                          ("img_dir/val", "ann_dir/val", None), ".png", ".png", False,
                          "generated from Fashion-MNIST into ROOT/img_dir and ROOT/ann_dir"),
    "ade20k": Layout("ADE20KDataset", "ADEChallengeData2016", (("images/training", "annotations/training", None),),
                     ("images/validation", "annotations/validation", None), reduce_zero_label=True,
                     described="ROOT/images/{training,validation}/*.jpg and ROOT/annotations/{training,validation}/*.png "
                               "(the ADEChallengeData2016 release)"),
    "voc-aug": Layout("PascalVOCDataset", "VOCdevkit/VOC2012",
                      (("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt"),
                       ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation/aug.txt")),
                      ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/val.txt"),
                      described="ROOT/JPEGImages, ROOT/SegmentationClass, ROOT/SegmentationClassAug (SBD converted by "
                                "MMSeg's tools/dataset_converters/voc_aug.py) and "
                                "ROOT/ImageSets/Segmentation/{train,val,aug}.txt"),
    "cityscapes": Layout("CityscapesDataset", "cityscapes", (("leftImg8bit/train", "gtFine/train", None),),
                         ("leftImg8bit/val", "gtFine/val", None),
                         described="ROOT/leftImg8bit/{train,val}/CITY/*_leftImg8bit.png and "
                                   "ROOT/gtFine/{train,val}/CITY/*_gtFine_labelTrainIds.png (made by MMSeg's "
                                   "tools/dataset_converters/cityscapes.py)"),
}


@dataclass
class Dataset:
    """The suite's ``dataset:`` block: a folder layout (``kind``) and where it lives (relative to the data root)."""

    kind: Literal["folder", "demo-scenes", "ade20k", "voc-aug", "cityscapes"] = "folder"
    root: Optional[str] = None              # default: the kind's usual folder name
    classes: Optional[List[str]] = None     # required for 'folder'
    train_split: str = "train"              # 'folder' only: sub-folder names of img_dir/ann_dir
    val_split: str = "val"
    img_suffix: Optional[str] = None
    seg_map_suffix: Optional[str] = None
    reduce_zero_label: Optional[bool] = None
    num_train: int = 200                    # 'demo-scenes' only: scene counts and seed
    num_val: int = 50
    seed: int = 0

    def validate(self) -> None:
        if self.kind == "folder" and not self.classes:
            raise ValueError("kind 'folder' needs 'classes': the class names, index 0 first")
        if self.kind != "folder" and self.classes is not None:
            raise ValueError(f"kind {self.kind!r} has fixed classes; 'classes' applies to kind 'folder' only")
        if min(self.num_train, self.num_val) < 1:
            raise ValueError("num_train and num_val must be at least 1")

    @property
    def spec(self) -> Layout:
        return LAYOUTS[self.kind]

    def path(self, data_root: Path) -> Path:
        """The dataset folder: ``root`` (absolute, or under ``data_root``) or the kind's default."""
        root = Path(self.root if self.root is not None else self.spec.default_root)
        return root if root.is_absolute() else Path(data_root) / root

    def scene_settings(self) -> SceneSettings:
        return SceneSettings(num_train=self.num_train, num_val=self.num_val, seed=self.seed)

    def _parts(self) -> List[Tuple[str, str, Optional[str]]]:
        fill = dict(train=self.train_split, val=self.val_split)
        return [tuple(p.format(**fill) if p else p for p in part) for part in (*self.spec.train, self.spec.val)]

    def check(self, data_root: Path) -> None:
        """Raise DataError naming the expected layout when a required folder or file is missing."""
        root = self.path(data_root)
        if self.kind == "demo-scenes":
            find_fmnist(data_root)  # the scenes are generated from it on first use
            return
        missing = [str(root / p) for part in self._parts() for p in part if p and not (root / p).exists()]
        if missing:
            raise DataError(f"dataset {self.kind!r} at {root}: missing {', '.join(missing[:3])}"
                            f"{' ...' if len(missing) > 3 else ''}; expected {self.spec.described.replace('ROOT', str(root))}")

    def prepare(self, data_root: Path) -> Path:
        """The dataset folder, generating the demo scenes on first use."""
        root = self.path(data_root)
        if self.kind == "demo-scenes":
            ensure_scenes(root, self.scene_settings(), data_root=data_root)
        return root

    def classes_tuple(self) -> Tuple[str, ...]:
        """Class names, index 0 first."""
        if self.kind == "folder":
            return tuple(self.classes)
        if self.kind == "demo-scenes":
            return DEMO_CLASSES
        from mmseg.registry import DATASETS
        return tuple(DATASETS.get(self.spec.dataset_type).METAINFO["classes"])

    def mmseg_datasets(self, data_root: Path, train_pipeline: list, test_pipeline: list) -> Tuple[dict, dict]:
        """MMSeg dataset configs (train, val) for this layout."""
        root = str(self.path(data_root))
        common: Dict[str, Any] = dict(type=self.spec.dataset_type, data_root=root)
        for key in ("img_suffix", "seg_map_suffix", "reduce_zero_label"):
            value = getattr(self, key)
            value = getattr(self.spec, key) if value is None else value
            if value is not None:
                common[key] = value
        if self.kind in ("folder", "demo-scenes"):
            common["metainfo"] = dict(classes=self.classes_tuple())

        def one(part, pipeline):
            img, seg, ann = part
            d = dict(common, data_prefix=dict(img_path=img, seg_map_path=seg), pipeline=pipeline)
            if ann:
                d["ann_file"] = ann
            return d

        parts = self._parts()
        train = [one(p, train_pipeline) for p in parts[:-1]]
        train_ds = train[0] if len(train) == 1 else dict(type="ConcatDataset", datasets=train)
        return train_ds, one(parts[-1], test_pipeline)


@dataclass
class Params(Schedule):
    """The suite's ``params:`` block: the training ``Schedule`` plus model, pipeline and evaluation keys.

    ``batch_size`` is the global batch; each process takes its share (``split_batch``), in steps of
    at most ``max_batch_per_step`` images with MMEngine's gradient accumulation.
    """

    model: Literal["fcn", "upernet"] = "fcn"
    base_config: Optional[str] = None       # a path to one's own base config instead of `model`'s
    crop_size: List[int] = field(default_factory=lambda: [512, 512])      # (h, w)
    resize_scale: List[int] = field(default_factory=lambda: [2048, 512])  # (long, short) before the crop
    ratio_range: List[float] = field(default_factory=lambda: [0.5, 2.0])
    cat_max_ratio: float = 0.75
    photometric: bool = True
    test_mode: Literal["whole", "slide"] = "whole"
    slide_stride: Optional[List[int]] = None
    launcher: Literal["auto", "none", "pytorch", "slurm", "mpi"] = "auto"   # auto: pytorch under torchrun
    model_overrides: Dict[str, Any] = field(default_factory=dict)  # dotted keys under `model`

    def validate(self) -> None:
        for name in ("crop_size", "resize_scale", "ratio_range"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"{name} must have two entries, got {getattr(self, name)}")
        if min(self.iterations, self.batch_size, self.checkpoint_interval, self.log_interval) < 1:
            raise ValueError("iterations, batch_size, checkpoint_interval and log_interval must be positive")
        if self.max_batch_per_step is not None and self.max_batch_per_step < 1:
            raise ValueError(f"max_batch_per_step must be positive, got {self.max_batch_per_step}")
        if self.test_mode == "slide" and (self.slide_stride is None or len(self.slide_stride) != 2):
            raise ValueError("test_mode 'slide' needs slide_stride: [h, w]")
        if self.schedule == "step" and not self.steps:
            raise ValueError("schedule 'step' needs steps: [iteration, ...]")


def resolve_launcher(requested: str, env: Optional[Dict[str, str]] = None) -> str:
    """MMEngine's launcher: ``auto`` is ``pytorch`` under torchrun (WORLD_SIZE > 1), else ``none``."""
    if requested != "auto":
        return requested
    env = os.environ if env is None else env
    return "pytorch" if int(env.get("WORLD_SIZE", "1")) > 1 else "none"


def launcher_processes(launcher: str, env: Optional[Dict[str, str]] = None) -> int:
    """How many processes MMEngine's ``launcher`` trains with (the environment each launcher reads)."""
    env = os.environ if env is None else env
    key = {"pytorch": "WORLD_SIZE", "slurm": "SLURM_NTASKS", "mpi": "OMPI_COMM_WORLD_SIZE"}.get(launcher)
    return int(env.get(key, "1") or 1) if key else 1


def pipelines(p: Params) -> Tuple[list, list]:
    """MMSeg's standard train (random resize, crop, flip, photometric) and test pipelines.

    ``LoadAnnotations`` takes ``reduce_zero_label`` from the dataset (MMSeg 1.x deprecates setting it twice).
    """
    train = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
             dict(type="RandomResize", scale=tuple(p.resize_scale), ratio_range=tuple(p.ratio_range), keep_ratio=True),
             dict(type="RandomCrop", crop_size=tuple(p.crop_size), cat_max_ratio=p.cat_max_ratio),
             dict(type="RandomFlip", prob=0.5)]
    if p.photometric:
        train.append(dict(type="PhotoMetricDistortion"))
    train.append(dict(type="PackSegInputs"))
    test = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=tuple(p.resize_scale), keep_ratio=True),
            dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    return train, test


@dataclass(frozen=True)
class RunPlan:
    """What the configs of one run's sub-networks share: base config, launcher, batch split, datasets, classes."""

    base: Any                 # the MMEngine Config of configs/mmseg/<model>.yaml
    launcher: str
    batch: BatchSplit
    train_dataset: dict
    val_dataset: dict
    num_classes: int


def run_plan(ctx: RunContext) -> RunPlan:
    """The run's shared settings; ConfigError when the global batch cannot be split over its processes."""
    from .config import base_config

    p, d = ctx.params, ctx.dataset
    launcher = resolve_launcher(ctx.launch.get("launcher", p.launcher))
    batch = split_batch(p.batch_size, launcher_processes(launcher), p.max_batch_per_step)
    train_pipe, test_pipe = pipelines(p)
    train_ds, val_ds = d.mmseg_datasets(ctx.data_root, train_pipe, test_pipe)
    return RunPlan(base_config(p.base_config or p.model), launcher, batch, train_ds, val_ds, len(d.classes_tuple()))


def bn_batch(batch) -> Dict[str, Any]:
    """Images per BatchNorm batch: one forward pass of each process, SyncBN joining the processes; MMSeg's
    recipes (``4xbN``, SyncBN over 4 GPUs, no accumulation) normalize their whole global batch."""
    return bn_batch_info(batch.per_step * batch.processes, batch.global_batch,
                         f"the recipe's SyncBN over its global batch of {batch.global_batch}")


def subnet_config(ctx: RunContext, spec, plan: RunPlan):
    """The complete MMEngine config one sub-network trains with, reading ``backbone.pth`` in its work folder."""
    from .config import model_config, runner_config

    p, folder = ctx.params, ctx.work_dir(spec)
    arch = ctx.checkpoint.arch
    model_cfg = model_config(plan.base, int(arch["depth"]), arch.get("stem", "imagenet"), spec, plan.num_classes,
                             folder / "backbone.pth", distributed=plan.launcher != "none",
                             overrides=p.model_overrides)
    model_cfg.model.data_preprocessor.size = tuple(p.crop_size)
    if p.test_mode == "slide":
        model_cfg.model.test_cfg = dict(mode="slide", crop_size=tuple(p.crop_size), stride=tuple(p.slide_stride))
    return runner_config(model_cfg, plan.train_dataset, plan.val_dataset, p, folder / "work_dir", plan.launcher,
                         experiment_name=f"{ctx.suite_name}-{spec}-{time.time_ns()}",
                         cuda=ctx.device.type == "cuda", seed=ctx.seed, batch=plan.batch)


@register_protocol
class MMSegProtocol(Protocol):
    """Train and evaluate a segmentation head on every sub-network with MMSeg."""

    name = "mmseg"
    Params = Params
    Dataset = Dataset
    description = "semantic segmentation with MMSegmentation (FCN / UPerNet): mIoU, mAcc, aAcc"
    uses_engine = True

    def run(self, ctx: RunContext) -> Iterator[Result]:
        from .compat import import_mmseg

        import_mmseg()
        from mmengine.dist import is_main_process
        from mmengine.runner import Runner

        from . import backbone  # noqa: F401  (registers SlimBenchResNet in MMSeg's MODELS)
        from .compat import trusted_run_checkpoints
        from .export import export_mmseg

        plan = run_plan(ctx)
        ctx.dataset.prepare(ctx.data_root)
        b = plan.batch
        log.info("mmseg %s: global batch %d = %d process(es) (launcher %s) x %d images x %d accumulated step(s)",
                 ctx.suite_name, b.global_batch, b.processes, plan.launcher, b.per_step, b.accumulative_counts)
        ctx.info.update({"processes": b.processes, "global_batch_size": b.global_batch,
                         "batch_per_process": b.per_process, "batch_per_step": b.per_step,
                         "accumulative_counts": b.accumulative_counts, **bn_batch(b)})
        warn_bn_batch(ctx, ctx.info)
        for i, spec in enumerate(ctx.subnets):
            folder = ctx.work_dir(spec)
            log.info("mmseg %s: sub-network %s (%d of %d) seed %d in %s", ctx.suite_name, spec, i + 1,
                     len(ctx.subnets), ctx.seed, folder)
            results_path = folder / "results.json"
            if results_path.is_file():
                log.info("mmseg %s: trained and evaluated by an earlier run", spec)
                metrics = json.loads(results_path.read_text())
                yield from (Result(str(spec), metric, float(metrics[metric])) for metric in METRICS)
                continue
            cfg = subnet_config(ctx, spec, plan)
            export_mmseg(extract(ctx.checkpoint, spec), folder / "backbone.pth")
            atomic_write_bytes(folder / "config.py", cfg.pretty_text.encode())
            repair_last_checkpoint(Path(cfg.work_dir), MMENGINE)
            runner = Runner.from_cfg(cfg)
            with trusted_run_checkpoints(Path(cfg.work_dir)):
                runner.train()   # resumes from work_dir's last checkpoint when there is one
            evaluated = runner.val_loop.run()
            metrics = {metric: float(evaluated[metric]) for metric in METRICS}
            if is_main_process():
                atomic_write_bytes(results_path, json.dumps(metrics, indent=1).encode())
            for metric in METRICS:
                yield Result(str(spec), metric, metrics[metric])

    def describe(self, ctx: RunContext) -> Dict[str, Any]:
        """Per sub-network, the MMEngine config a run would train and its batch split; no data read, nothing written."""
        from .compat import import_mmseg

        import_mmseg()
        from . import backbone  # noqa: F401  (registers SlimBenchResNet, as in run)

        plan = run_plan(ctx)
        return {str(spec): {"mmengine_config": plain_data(subnet_config(ctx, spec, plan).to_dict()),
                            "batch": {**plan.batch.as_dict(), **bn_batch(plan.batch)}}
                for spec in ctx.subnets}


def plain_data(value: Any) -> Any:
    """``value`` with tuples as lists and ConfigDicts as dicts, so ``yaml.safe_dump`` writes it."""
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value
