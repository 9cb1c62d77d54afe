"""``detectron2``: fine-tune and evaluate each sub-network as a Detectron2 detector; AP per sub-network.

For every sub-network: extract it, export it as a MoCo-convention ``.pkl``, build its Detectron2
config from the suite's base config, then train with Detectron2's ``DefaultTrainer`` under
Detectron2's ``launch`` (one CPU process, N GPUs, or several machines) and evaluate with
Detectron2's evaluators (COCO through pycocotools, or Pascal VOC). One training per sub-network
at the run's seed; ``bench run --seeds 0,1,2`` repeats it, and the leaderboard reports mean ± std.

Each training works in ``ctx.work_dir(spec)``, which ``bench run`` keeps across reruns: a killed
run resumes there with Detectron2's ``resume_or_load(resume=True)``, and a sub-network whose
``results.json`` is there is not trained again.
"""
from __future__ import annotations

import json
import logging
import re
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from pretrain.checkpoints.format import atomic_write_bytes
from pretrain.errors import ConfigError
from pretrain.checkpoints.extract import extract
from pretrain.models.spec import SubnetSpec
from transfer.protocols.base import Protocol, Result, RunContext, register_protocol

from .data import VOC_NUM_CLASSES, DetectionData
from .metrics import NO_PREDICTIONS, SLIMMABLE_FPN_BACKBONE

SLIMMABLE_FOLDER = "slimmable"   # the slimmable detector's work folder (all widths in one)

log = logging.getLogger(__name__)

# evaluator keys -> metric name prefix; AP values are percentages, as Detectron2 reports them


@dataclass
class Detectron2Params:
    """Training schedule and scale-out of the ``detectron2`` protocol; unset values keep the base config's.

    The schedule belongs to the base config: ``iterations`` and ``steps`` are set together or not at
    all, and every value that differs from the base config's is recorded with the run
    (``schedule_departures``).
    """

    base_config: str = "faster_rcnn_R_50_C4_voc_24k"   # configs/detectron2/NAME.yaml or a YAML path
    iterations: Optional[int] = None       # SOLVER.MAX_ITER (with steps)
    batch_size: Optional[int] = None       # SOLVER.IMS_PER_BATCH, over all processes
    lr: Optional[float] = None             # SOLVER.BASE_LR
    steps: Optional[List[int]] = None      # SOLVER.STEPS (with iterations)
    warmup_iters: Optional[int] = None     # SOLVER.WARMUP_ITERS
    min_size_train: Optional[List[int]] = None   # INPUT.MIN_SIZE_TRAIN (multi-scale)
    max_size_train: Optional[int] = None
    min_size_test: Optional[int] = None
    max_size_test: Optional[int] = None
    precise_bn: Optional[bool] = None      # TEST.PRECISE_BN.ENABLED
    checkpoint_period: Optional[int] = None
    num_workers: int = 4                   # DATALOADER.NUM_WORKERS per process
    evaluator: Optional[Literal["coco", "voc"]] = None   # default: voc for kind voc, coco otherwise
    overrides: Dict[str, Any] = field(default_factory=dict)  # any Detectron2 key, e.g. MODEL.ANCHOR_GENERATOR.SIZES
    num_gpus: Optional[int] = None         # per machine; default: every visible GPU, or one CPU process
    num_machines: int = 1
    machine_rank: int = 0
    dist_url: str = "auto"

    def validate(self) -> None:
        for key in ("iterations", "batch_size", "num_machines", "max_size_train", "min_size_test",
                    "max_size_test", "checkpoint_period"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.num_workers < 0 or (self.num_gpus is not None and self.num_gpus < 0):
            raise ValueError("num_workers and num_gpus must be >= 0")
        if not 0 <= self.machine_rank < self.num_machines:
            raise ValueError(f"machine_rank must be in [0, num_machines), got {self.machine_rank}")
        # a MAX_ITER without its STEPS (or the reverse) mixes two schedules, e.g. 1x steps in a 2x run
        for given, missing in (("iterations", "steps"), ("steps", "iterations")):
            if getattr(self, given) is not None and getattr(self, missing) is None:
                raise ValueError(f"params.{given} {getattr(self, given)} without params.{missing}: the schedule is "
                                 f"base config {self.base_config}'s (SOLVER.MAX_ITER and SOLVER.STEPS); set both "
                                 f"params.iterations and params.steps, or neither")

    def detectron2_overrides(self) -> Dict[str, Any]:
        """The set values as dotted Detectron2 keys, then ``overrides`` (which win)."""
        keys = {"iterations": "SOLVER.MAX_ITER", "batch_size": "SOLVER.IMS_PER_BATCH", "lr": "SOLVER.BASE_LR",
                "steps": "SOLVER.STEPS", "warmup_iters": "SOLVER.WARMUP_ITERS",
                "min_size_train": "INPUT.MIN_SIZE_TRAIN", "max_size_train": "INPUT.MAX_SIZE_TRAIN",
                "min_size_test": "INPUT.MIN_SIZE_TEST", "max_size_test": "INPUT.MAX_SIZE_TEST",
                "precise_bn": "TEST.PRECISE_BN.ENABLED", "checkpoint_period": "SOLVER.CHECKPOINT_PERIOD"}
        out = {d2: tuple(v) if isinstance(v, list) else v
               for name, d2 in keys.items() if (v := getattr(self, name)) is not None}
        out["DATALOADER.NUM_WORKERS"] = self.num_workers
        out.update(self.overrides)
        return out


@dataclass(frozen=True)
class LaunchPlan:
    """How Detectron2's ``launch`` runs one training: processes per machine, machines, rendezvous."""

    num_gpus: int
    num_machines: int
    machine_rank: int
    dist_url: str

    @property
    def world_size(self) -> int:
        return max(1, self.num_gpus) * self.num_machines

    @classmethod
    def resolve(cls, p: Detectron2Params, launch: Dict[str, Any], device: torch.device,
                check_devices: bool = True) -> "LaunchPlan":
        """Command-line launch settings (``ctx.launch``) over the suite's, defaults from the device.

        ``check_devices=False`` (a dry run) describes a launch on GPUs this machine does not have.
        """
        def get(key: str, default):
            value = getattr(p, key)
            return launch.get(key, default if value is None else value)

        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        plan = cls(int(get("num_gpus", gpus)), int(get("num_machines", 1)), int(get("machine_rank", 0)),
                   str(get("dist_url", "auto")))
        if check_devices and plan.num_gpus > 1 and plan.num_gpus > torch.cuda.device_count():
            raise ConfigError(f"num_gpus {plan.num_gpus}: Detectron2's launch runs one process per GPU, "
                              f"and this machine has {torch.cuda.device_count()}")
        if plan.num_gpus == 0 and plan.num_machines > 1:
            raise ConfigError("num_machines > 1 needs GPUs: Detectron2's launch runs one process per GPU")
        return plan


@dataclass(frozen=True)
class DataSettings:
    """What a config takes from the dataset: class count, mask format and the catalog names of its splits."""

    num_classes: Optional[int]          # None: the base config's MODEL.ROI_HEADS.NUM_CLASSES
    mask_format: Optional[str]          # INPUT.MASK_FORMAT read from the training json; None: the base config's
    train_sets: Tuple[str, ...]
    test_sets: Tuple[str, ...]


def catalog_prefix(suite_name: str) -> str:
    """The prefix of the catalog names a suite registers its splits under."""
    return "slimbench_" + re.sub(r"\W", "_", suite_name)


def subnet_config(ctx: RunContext, spec, world_size: int, data: DataSettings, write: bool = True,
                  folder: Optional[str] = None, weights: str = "backbone.pkl"):
    """The Detectron2 config one sub-network trains with, in its work folder (written there with ``write``);
    ``folder`` names a work folder other than the sub-network's (the slimmable detector's)."""
    from transfer.detection.config import build_config

    p, work_dir = ctx.params, ctx.work_dir(folder or spec)
    overrides = p.detectron2_overrides()
    if data.mask_format:   # an INPUT.MASK_FORMAT in params.overrides still wins
        overrides.setdefault("INPUT.MASK_FORMAT", data.mask_format)
    overrides.update({"SEED": ctx.seed, "DATASETS.TRAIN": tuple(data.train_sets),
                      "DATASETS.TEST": tuple(data.test_sets)})
    return build_config(p.base_config, spec, ctx.checkpoint.arch, weights=work_dir / weights,
                        num_classes=data.num_classes, distributed=world_size > 1, device=ctx.device.type,
                        overrides=overrides, out_dir=work_dir, write=write)


def train_and_evaluate(cfg, dataset: DetectionData, data_root: Path, weights: Path, seed: int, prefix: str,
                       evaluator: str, metrics_path: Path, widths: Sequence[float] = ()) -> None:
    """One Detectron2 training and evaluation (a ``launch`` worker; rank 0 writes ``metrics_path``)."""
    from transfer.detection.trainer import run_training

    metrics = run_training(cfg, dataset, data_root, weights, seed, prefix, evaluator, widths)
    if metrics is not None:
        atomic_write_bytes(metrics_path, json.dumps(metrics, indent=1).encode())


@register_protocol
class Detectron2Protocol(Protocol):
    name = "detectron2"
    Params = Detectron2Params
    Dataset = DetectionData
    description = "Detectron2 Faster/Mask R-CNN fine-tuning per sub-network; box (and mask) AP, AP50, AP75"
    uses_engine = True
    spawns_own_processes = ("Detectron2's launch spawns its own processes (params.num_gpus per machine; "
                            "params.num_machines, params.machine_rank and params.dist_url across machines)")

    def records_run(self, params: Detectron2Params) -> bool:
        """Only machine 0 records the run: it holds Detectron2's rank 0, which alone evaluates and reports."""
        return params.machine_rank == 0

    def run(self, ctx: RunContext) -> Iterator[Result]:
        from transfer.detection.config import build_config, schedule_departures  # Detectron2, via compat
        from transfer.detection.slimmable import check_slimmable

        p, d = ctx.params, ctx.dataset
        evaluator = self._evaluator(ctx)
        launch_plan = LaunchPlan.resolve(p, ctx.launch, ctx.device)
        # the suite's config before any data: whether it trains masks, how it changes the base schedule
        suite_cfg = build_config(p.base_config, ctx.subnets[0], ctx.checkpoint.arch, overrides=p.detectron2_overrides())
        trains_masks, departures = suite_cfg.MODEL.MASK_ON, schedule_departures(suite_cfg, p.base_config)
        slim = suite_cfg.MODEL.BACKBONE.NAME == SLIMMABLE_FPN_BACKBONE
        if slim:   # depth variants and mixed precision are refused before any work
            check_slimmable(suite_cfg, ctx.subnets)
        d.prepare(ctx.data_root)
        contents = d.inspect(ctx.data_root)   # each annotation json read once, before any training
        mask_format = d.mask_format_for(contents, p.base_config) if trains_masks else None
        prefix = catalog_prefix(ctx.suite_name)
        train_sets, test_sets = d.register(ctx.data_root, prefix, evaluator)
        data = DataSettings(contents.num_classes, mask_format, tuple(train_sets), tuple(test_sets))
        if departures:
            log.warning("%s: the suite changes base config %s's schedule: %s", ctx.suite_name, p.base_config,
                        departures)
        ctx.info.update({"detectron2_base_config": p.base_config, "world_size": launch_plan.world_size,
                         "mask_format": mask_format, "schedule_departures": departures})
        run = self._run_slimmable if slim else self._run_per_subnet
        yield from run(ctx, launch_plan, data, prefix, evaluator)
        if ctx.info.get(NO_PREDICTIONS):
            log.warning("%s on %s: the detector predicted nothing for %s; their AP is stored as 0",
                        ctx.suite_name, ctx.checkpoint_digest[:12] or "this checkpoint",
                        "; ".join(f"{n} ({', '.join(t)})" for n, t in ctx.info[NO_PREDICTIONS].items()))

    def _run_per_subnet(self, ctx: RunContext, launch_plan: "LaunchPlan", data: DataSettings, prefix: str,
                        evaluator: str) -> Iterator[Result]:
        """MoCo's and MMSelfSup's protocols: one detector per extracted sub-network."""
        from transfer.detection.export import export_detectron2
        from detectron2.engine import launch

        for spec in tqdm(ctx.subnets, desc=f"{ctx.suite_name}: detectron2", unit="training"):
            name, work_dir = str(spec), ctx.work_dir(spec)
            metrics_path = work_dir / "results.json"   # Detectron2 writes its own metrics.json there
            if metrics_path.is_file():
                log.info("detectron2 %s seed %d: trained and evaluated by an earlier run in %s", name, ctx.seed,
                         work_dir)
            else:
                cfg = subnet_config(ctx, spec, launch_plan.world_size, data)
                weights = export_detectron2(extract(ctx.checkpoint, spec), Path(cfg.MODEL.WEIGHTS))
                log.info("detectron2 %s seed %d: training %d iterations of %s (%s) in %s", name, ctx.seed,
                         cfg.SOLVER.MAX_ITER, ctx.params.base_config, cfg.MODEL.BACKBONE.NAME, work_dir)
                launch(train_and_evaluate, launch_plan.num_gpus, num_machines=launch_plan.num_machines,
                       machine_rank=launch_plan.machine_rank, dist_url=launch_plan.dist_url,
                       args=(cfg, ctx.dataset, ctx.data_root, weights, ctx.seed, prefix, evaluator, metrics_path))
            if launch_plan.machine_rank != 0:
                continue   # only the first machine evaluates and reports
            yield from self._rows(ctx, name, json.loads(metrics_path.read_text()))

    @staticmethod
    def _rows(ctx: RunContext, name: str, metrics: Dict[str, Any]) -> Iterator[Result]:
        """One sub-network's stored metrics as rows; tasks nothing was predicted for are noted in the run info."""
        metrics = dict(metrics)
        empty = metrics.pop(NO_PREDICTIONS, [])
        if empty:   # stored as 0 AP, so every task keeps its column; the run says which were empty
            ctx.info.setdefault(NO_PREDICTIONS, {})[name] = empty
        for metric, value in metrics.items():
            yield Result(name, metric, value)

    def _run_slimmable(self, ctx: RunContext, launch_plan: "LaunchPlan", data: DataSettings, prefix: str,
                       evaluator: str) -> Iterator[Result]:
        """SlimCLR's protocol: one slimmable detector trained at every width, then evaluated at each."""
        from transfer.detection.slimmable import save_encoder
        from detectron2.engine import launch

        widths = [float(w) for w in ctx.checkpoint.arch["widths"]]
        work_dir = ctx.work_dir(SLIMMABLE_FOLDER)
        metrics_path = work_dir / "results.json"   # {"w1.0": metrics, ...}: every width, whichever were asked
        if metrics_path.is_file():
            log.info("detectron2 slimmable seed %d: trained and evaluated by an earlier run in %s", ctx.seed, work_dir)
        else:
            cfg = subnet_config(ctx, SubnetSpec(widths[0]), launch_plan.world_size, data, folder=SLIMMABLE_FOLDER,
                                weights="encoder.pth")
            weights = save_encoder(ctx.checkpoint.build_model(), Path(cfg.MODEL.WEIGHTS))
            log.info("detectron2 slimmable seed %d: training %d iterations of %s at widths %s in %s", ctx.seed,
                     cfg.SOLVER.MAX_ITER, ctx.params.base_config, widths, work_dir)
            launch(train_and_evaluate, launch_plan.num_gpus, num_machines=launch_plan.num_machines,
                   machine_rank=launch_plan.machine_rank, dist_url=launch_plan.dist_url,
                   args=(cfg, ctx.dataset, ctx.data_root, weights, ctx.seed, prefix, evaluator, metrics_path, widths))
        if launch_plan.machine_rank != 0:
            return
        per_width = json.loads(metrics_path.read_text())
        ctx.info["slimmable_detector"] = {"trained_widths": widths, "work_dir": str(work_dir)}
        for spec in ctx.subnets:
            yield from self._rows(ctx, str(spec), per_width[str(spec)])

    def describe(self, ctx: RunContext) -> Dict[str, Any]:
        """Per sub-network, the resolved Detectron2 config a run would train, without data or training.

        The config is built by ``subnet_config``, as in ``run``; what only the dataset can tell
        (COCO's class count and mask format) keeps the base config's value and is listed under
        ``from_the_dataset``.
        """
        import yaml

        from transfer.detection.config import schedule_departures

        p, d = ctx.params, ctx.dataset
        self._evaluator(ctx)
        launch_plan = LaunchPlan.resolve(p, ctx.launch, ctx.device, check_devices=False)
        train_sets, test_sets = d.split_names(catalog_prefix(ctx.suite_name))
        data = DataSettings(VOC_NUM_CLASSES if d.kind == "voc" else None, None, tuple(train_sets), tuple(test_sets))
        out = {}
        for spec in ctx.subnets:
            cfg = subnet_config(ctx, spec, launch_plan.world_size, data, write=False)
            from_data = [] if d.kind == "voc" else ["MODEL.ROI_HEADS.NUM_CLASSES (the training json's categories)"]
            if cfg.MODEL.MASK_ON and d.kind != "voc":
                from_data.append("INPUT.MASK_FORMAT (the training json's masks: polygon or bitmask)")
            if cfg.MODEL.BACKBONE.NAME == SLIMMABLE_FPN_BACKBONE:
                from_data.append(f"one detector trained at widths {list(cfg.MODEL.SLIMBENCH.WIDTHS)}, tested at "
                                 f"{spec} (SlimCLR's slimmable protocol)")
            out[str(spec)] = {"detectron2_config": yaml.safe_load(cfg.dump()), "world_size": launch_plan.world_size,
                              "launch": dataclasses.asdict(launch_plan),
                              "schedule_departures": schedule_departures(cfg, p.base_config),
                              "from_the_dataset": from_data}
        return out

    @staticmethod
    def _evaluator(ctx: RunContext) -> str:
        """The suite's evaluator, or its dataset's default; refused when the dataset cannot feed it."""
        evaluator = ctx.params.evaluator or ctx.dataset.default_evaluator
        if evaluator == "voc" and ctx.dataset.kind != "voc":
            raise ConfigError(f"suite {ctx.suite_name}: evaluator 'voc' needs a dataset of kind 'voc' "
                              f"(VOC XML annotations), got kind {ctx.dataset.kind!r}")
        return evaluator
