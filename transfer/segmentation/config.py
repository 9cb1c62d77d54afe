"""Width-aware MMSeg configs: (base config, sub-network) -> a runnable MMEngine ``Config``.

The base configs in ``configs/mmseg/`` hold the head recipe (FCN, UPerNet) on MMSeg's
``type='ResNet'``. ``model_config`` sizes them to one sub-network: the backbone's channels
(``stem_channels = base_channels = 64·w``), or ``SlimBenchResNet`` when MMSeg's ``ResNet``
cannot express the network; the heads' ``in_channels`` read from the network's channel plan;
``SyncBN`` when distributed, ``BN`` otherwise; the exported weights through ``init_cfg``.
``runner_config`` adds data, schedule and runtime, so the file written to the run folder is a
complete config that MMSeg's own ``tools/train.py`` reruns.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict

from pretrain.errors import ConfigError
from pretrain.models.resnet import ARCHS, ResNetPlan, plan_resnet
from pretrain.models.slim_ops import channels
from pretrain.models.spec import SubnetSpec

from .export import PREFIX
from .schedule import BatchSplit, Schedule, split_batch

BASE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "mmseg"
# importing this module applies the compat layer and registers SlimBenchResNet (backbone.py)
CUSTOM_IMPORTS = ["transfer.segmentation.backbone"]
# keys of the base backbone that describe the layout and carry over to SlimBenchResNet
_LAYOUT_KEYS = ("strides", "dilations", "contract_dilation", "out_indices", "norm_eval")


def base_config(name_or_path: "str | Path") -> Config:
    """A base config by name (``fcn``, ``upernet`` in configs/mmseg) or path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = BASE_CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in BASE_CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"MMSeg base config {name_or_path!r}: no file {path}; expected a path or one of {known}")
    cfg = Config.fromfile(str(path))
    if "model" not in cfg or "backbone" not in cfg.model or "decode_head" not in cfg.model:
        raise ConfigError(f"{path}: expected a 'model' with 'backbone' and 'decode_head'")
    return cfg


def mmseg_resnet_fits(plan: ResNetPlan, depth: int, width: float, full_blocks: bool) -> bool:
    """Whether MMSeg's ``ResNet(stem_channels=base_channels=int(64w))`` builds exactly ``plan``."""
    if plan.small_stem or not full_blocks:
        return False
    base = channels(64, width)
    expansion = 4 if ARCHS[depth][0] == "bottleneck" else 1
    if plan.stem_channels != base:
        return False
    return all(block.inner == base * 2 ** s and block.out_channels == base * 2 ** s * expansion
               for s, stage in enumerate(plan.stages) for block in stage)


def _in_channels(head: ConfigDict, stage_channels: Sequence[int]):
    index = head.get("in_index", -1)
    if isinstance(index, (list, tuple)):
        return [stage_channels[i] for i in index]
    return stage_channels[index]


def backbone_config(base: ConfigDict, depth: int, stem: str, spec: SubnetSpec, norm_cfg: dict,
                    pretrained: Optional[Path]) -> Tuple[ConfigDict, ResNetPlan]:
    """The backbone entry for ``spec`` and the channel plan it builds."""
    blocks = spec.full_depth(ARCHS[depth][1])
    plan = plan_resnet(depth, spec.width, blocks, stem)
    full = tuple(blocks) == tuple(ARCHS[depth][1])
    if base.get("type") == "ResNet" and mmseg_resnet_fits(plan, depth, spec.width, full):
        cfg = copy.deepcopy(base)
        cfg.update(depth=depth, stem_channels=plan.stem_channels, base_channels=plan.stem_channels)
    else:
        cfg = ConfigDict(type="SlimBenchResNet", depth=depth, width=spec.width,
                         blocks=None if full else list(blocks), stem=stem,
                         **{k: copy.deepcopy(base[k]) for k in _LAYOUT_KEYS if k in base})
    cfg.norm_cfg = dict(norm_cfg)
    if pretrained is not None:
        cfg.init_cfg = dict(type="Pretrained", checkpoint=str(pretrained), prefix=PREFIX)
    return cfg, plan


def model_config(base: Config, depth: int, stem: str, spec: SubnetSpec, num_classes: int,
                 pretrained: Optional[Path] = None, distributed: bool = False,
                 overrides: Optional[Dict[str, Any]] = None) -> Config:
    """``base`` sized to sub-network ``spec`` of a ResNet-``depth``; ``overrides`` are dotted model keys."""
    cfg = copy.deepcopy(base)
    if overrides:
        cfg.merge_from_dict({f"model.{k}": v for k, v in overrides.items()})
    norm_cfg = dict(type="SyncBN" if distributed else "BN", requires_grad=True)
    model = cfg.model
    model.backbone, plan = backbone_config(model.backbone, depth, stem, spec, norm_cfg, pretrained)
    model.pop("pretrained", None)  # weights come only through the backbone's init_cfg
    for key in ("decode_head", "auxiliary_head"):
        head = model.get(key)
        if head is None:
            continue
        for h in head if isinstance(head, list) else [head]:
            h.in_channels = _in_channels(h, plan.stage_channels)
            h.num_classes = num_classes
            h.norm_cfg = dict(norm_cfg)
    cfg.custom_imports = dict(imports=list(CUSTOM_IMPORTS), allow_failed_imports=False)
    return cfg


def _scheduler(s: Schedule, steps_per_update: int) -> List[dict]:
    # MMEngine's ParamSchedulerHook steps every iteration, accumulating or not: count in iterations
    end = s.iterations * steps_per_update
    if s.schedule == "poly":
        return [dict(type="PolyLR", eta_min=s.min_lr, power=s.power, begin=0, end=end, by_epoch=False)]
    if s.schedule == "step":
        return [dict(type="MultiStepLR", milestones=[m * steps_per_update for m in s.steps], gamma=0.1, begin=0,
                     end=end, by_epoch=False)]
    raise ConfigError(f"schedule: unknown schedule {s.schedule!r}; expected poly or step")


def runner_config(model_cfg: Config, train_dataset: dict, val_dataset: dict, schedule: Schedule,
                  work_dir: Path, launcher: str = "none", experiment_name: Optional[str] = None,
                  cuda: bool = False, seed: int = 0, batch: Optional[BatchSplit] = None) -> Config:
    """A complete MMEngine Runner config: model, data, optimiser, schedule, hooks, evaluator.

    ``batch`` splits the schedule's global batch over the processes (default: one process); with
    gradient accumulation every iteration count is multiplied by the steps per update, so the
    updates, their lr and the checkpoints per update stay the schedule's.
    """
    cfg = copy.deepcopy(model_cfg)
    s = schedule
    batch = batch or split_batch(s.batch_size, 1, s.max_batch_per_step)
    n = batch.accumulative_counts
    max_iters = s.iterations * n
    loader = dict(num_workers=s.num_workers, persistent_workers=s.num_workers > 0)
    cfg.merge_from_dict(dict(
        default_scope="mmseg",
        work_dir=str(work_dir),
        experiment_name=experiment_name,
        launcher=launcher,
        randomness=dict(seed=seed),
        train_dataloader=dict(batch_size=batch.per_step, sampler=dict(type="InfiniteSampler", shuffle=True),
                              dataset=train_dataset, **loader),
        val_dataloader=dict(batch_size=1, sampler=dict(type="DefaultSampler", shuffle=False),
                            dataset=val_dataset, **loader),
        val_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]),
        optim_wrapper=dict(type="OptimWrapper", clip_grad=None, accumulative_counts=n,
                           optimizer=dict(type="SGD", lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)),
        param_scheduler=_scheduler(s, n),
        # val_begin past the end: the loop never validates; the protocol evaluates once, after training
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=max_iters, val_begin=max_iters + 1,
                       val_interval=max_iters),
        val_cfg=dict(type="ValLoop"),
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=s.log_interval * n, log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=s.checkpoint_interval * n,
                            max_keep_ckpts=1, save_last=True),
            sampler_seed=dict(type="DistSamplerSeedHook")),
        env_cfg=dict(cudnn_benchmark=cuda, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend="nccl" if cuda else "gloo")),
        log_processor=dict(by_epoch=False),
        # TensorBoard event files in the run's work_dir, under the same runs/ tree as the pretraining's
        visualizer=dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend"),
                                                         dict(type="TensorboardVisBackend")]),
        log_level="INFO",
        load_from=None,
        # an interrupted run continues from the last checkpoint in its own work_dir
        resume=True,
    ))
    cfg.val_dataloader.persistent_workers = False
    return cfg
