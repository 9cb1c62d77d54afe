"""Detectron2 configs for one sub-network: (base config, sub-network, architecture) -> CfgNode.

A width-w R50/R101 with an ImageNet stem is what Detectron2's own ResNet builds from
``STEM_OUT_CHANNELS = 64w``, ``RES2_OUT_CHANNELS = 256w``, ``WIDTH_PER_GROUP = 64w`` (every stage
doubles); those configs use Detectron2's builders unchanged. Everything else (R18/R34, depth
variants, the small stem, widths whose channels do not double exactly) uses the SlimBench
backbone of ``transfer.detection.backbone``, built from the same channel plan. Either way the
recipe of the SSL community is applied: torchvision pixel mean/std in RGB, stride on the 3x3,
nothing frozen, SyncBN across processes (BN in one process), and, for C4 heads, the extra norm
after res5 (``Res5ROIHeadsExtraNorm`` in the base configs).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from transfer.detection import backbone as d2_backbone  # registers backbones and heads
from transfer.detection import slimmable  # registers the slimmable backbone
from transfer.detection.compat import import_detectron2

import_detectron2()

from detectron2.config import CfgNode, get_cfg  # noqa: E402

from pretrain.checkpoints.format import atomic_write_bytes  # noqa: E402
from pretrain.errors import ConfigError  # noqa: E402
from pretrain.models.resnet import ARCHS, BlockPlan, ResNetPlan, plan_resnet  # noqa: E402
from pretrain.models.spec import SubnetSpec  # noqa: E402
from transfer.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "detectron2"
# torchvision's normalization in Detectron2's 0-255 pixel units (RGB order)
PIXEL_MEAN = [round(255.0 * m, 3) for m in IMAGENET_MEAN]
PIXEL_STD = [round(255.0 * s, 3) for s in IMAGENET_STD]
# config keys whose "BN"/"SyncBN" follows the number of processes
NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")
# the training schedule a suite takes from its base config (departures are recorded with the run)
SCHEDULE_KEYS = ("SOLVER.MAX_ITER", "SOLVER.STEPS", "SOLVER.IMS_PER_BATCH", "SOLVER.BASE_LR", "SOLVER.WARMUP_ITERS")
# backbones of Detectron2 this builder knows how to size, and the SlimBench backbone replacing each
D2_BACKBONES = {"build_resnet_backbone": d2_backbone.BACKBONE_NAME,
                "build_resnet_fpn_backbone": d2_backbone.FPN_BACKBONE_NAME}


def base_config_path(name: str) -> Path:
    """A base config by name (``configs/detectron2/NAME.yaml``) or by path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("Base-")))
        raise ConfigError(f"unknown Detectron2 base config {name!r}: no file {path}; expected a YAML path or one of {known}")
    return path


def detectron2_plan(depth: int, stem_out: int, res2_out: int, width_per_group: int) -> Optional[ResNetPlan]:
    """The channel plan Detectron2's ``build_resnet_backbone`` builds (bottleneck depths only)."""
    kind, blocks = ARCHS[depth]
    if kind != "bottleneck":
        return None
    stages, in_ch = [], stem_out
    for s, n in enumerate(blocks):
        out, inner, stride = res2_out * 2 ** s, width_per_group * 2 ** s, 1 if s == 0 else 2
        stage = []
        for b in range(n):
            stage.append(BlockPlan(in_ch, inner, out, stride if b == 0 else 1, in_ch != out))
            in_ch = out
        stages.append(tuple(stage))
    return ResNetPlan("bottleneck", stem_out, False, tuple(stages))


def uses_detectron2_resnet(plan: ResNetPlan, depth: int) -> bool:
    """Whether Detectron2's own ResNet options build exactly this plan."""
    inner = plan.stages[0][0].inner
    return (not plan.small_stem and depth in ARCHS and
            detectron2_plan(depth, plan.stem_channels, plan.stage_channels[0], inner) == plan)


def _get(cfg: CfgNode, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _set(cfg: CfgNode, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value


def _rename_fpn_levels(cfg: CfgNode, plan: ResNetPlan) -> None:
    """Point RPN/ROI heads at the FPN level names the backbone's strides give (``p0``.. for a small stem)."""
    strides = d2_backbone.declared_shapes(plan)
    # the base config names levels for strides 4..32 (p2..p5) plus the max-pool level p6
    standard = {f"p{i + 2}": d2_backbone.fpn_level_name(strides[f"res{i + 2}"][1]) for i in range(4)}
    standard["p6"] = d2_backbone.fpn_level_name(2 * strides["res5"][1])
    for key in ("MODEL.RPN.IN_FEATURES", "MODEL.ROI_HEADS.IN_FEATURES"):
        _set(cfg, key, [standard.get(f, f) for f in _get(cfg, key)])


def build_config(base: str, spec: SubnetSpec, arch: Mapping[str, Any], *, weights: Optional[Path] = None,
                 num_classes: Optional[int] = None, distributed: bool = False, device: str = "cpu",
                 overrides: Optional[Mapping[str, Any]] = None, out_dir: Optional[Path] = None,
                 write: bool = True) -> CfgNode:
    """The Detectron2 config of sub-network ``spec`` of a checkpoint with architecture ``arch``.

    ``arch`` is a checkpoint's ``arch`` block (depth, stem). ``overrides`` maps dotted Detectron2
    keys to values and is applied last. With ``out_dir`` the config becomes the run's ``OUTPUT_DIR``
    and, with ``write``, is written to ``out_dir/config.yaml``. A schedule whose ``SOLVER.STEPS``
    reach past ``SOLVER.MAX_ITER`` is refused (Detectron2 would drop those steps with a warning).
    """
    path = base_config_path(base)
    cfg = load_config(path)
    depth, stem = int(arch["depth"]), str(arch.get("stem", "imagenet"))
    spec = SubnetSpec.parse(spec)
    plan = plan_resnet(depth, spec.width, spec.depth, stem)

    s = cfg.MODEL.SLIMBENCH
    s.DEPTH, s.WIDTH, s.STEM = depth, spec.width, stem
    s.BLOCKS = list(spec.depth) if spec.depth else []
    r = cfg.MODEL.RESNETS
    r.DEPTH = depth
    r.STEM_OUT_CHANNELS = plan.stem_channels
    r.RES2_OUT_CHANNELS = plan.stage_channels[0]
    r.WIDTH_PER_GROUP = plan.stages[0][0].inner
    r.NUM_GROUPS = 1
    r.STRIDE_IN_1X1 = False           # torchvision puts the stride on the 3x3
    r.RES5_DILATION = 1
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # fine-tune everything, stem included
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = list(PIXEL_MEAN), list(PIXEL_STD)
    cfg.INPUT.FORMAT = "RGB"

    slim = cfg.MODEL.BACKBONE.NAME == slimmable.SLIMMABLE_FPN_BACKBONE
    if slim:   # one detector holding every width of the checkpoint (SlimCLR's protocol)
        s.WIDTHS = [float(w) for w in arch["widths"]]   # trained together; the sub-network only picks the test width
        s.WIDTH = s.WIDTHS[0]
        plan = plan_resnet(depth, s.WIDTH, None, stem)
        if stem == "small":
            _rename_fpn_levels(cfg, plan)
    elif not uses_detectron2_resnet(plan, depth):
        name = cfg.MODEL.BACKBONE.NAME
        if name not in D2_BACKBONES:
            raise ConfigError(f"{path}: MODEL.BACKBONE.NAME {name!r} cannot be given sub-network {spec} of "
                              f"{arch.get('arch')}; expected one of {', '.join(D2_BACKBONES)}")
        cfg.MODEL.BACKBONE.NAME = D2_BACKBONES[name]
        if cfg.MODEL.BACKBONE.NAME == d2_backbone.FPN_BACKBONE_NAME:
            _rename_fpn_levels(cfg, plan)

    norm = "SyncBN" if distributed else "BN"  # SyncBN needs a process group; one process uses BN
    for key in NORM_KEYS:
        # the slimmable backbone keeps its own switchable BNs, per process as upstream's (RESNETS.NORM unused)
        if _get(cfg, key) in ("BN", "SyncBN") and not (slim and key == "MODEL.RESNETS.NORM"):
            _set(cfg, key, norm)
    cfg.MODEL.DEVICE = device
    if weights is not None:
        cfg.MODEL.WEIGHTS = str(weights)
    if num_classes is not None:
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = int(num_classes)
        cfg.MODEL.RETINANET.NUM_CLASSES = int(num_classes)
    if overrides:
        apply_overrides(cfg, overrides, source=str(path))
    check_schedule(cfg, str(path))
    if out_dir is not None:
        cfg.OUTPUT_DIR = str(out_dir)
        if write:
            atomic_write_bytes(Path(out_dir) / "config.yaml", cfg.dump().encode())
    cfg.freeze()
    return cfg


def check_schedule(cfg: CfgNode, source: str) -> None:
    """Refuse ``SOLVER.STEPS`` that are not increasing or reach past ``SOLVER.MAX_ITER``."""
    steps, max_iter = [int(s) for s in cfg.SOLVER.STEPS], int(cfg.SOLVER.MAX_ITER)
    if any(b <= a for a, b in zip(steps, steps[1:])) or any(s > max_iter for s in steps):
        raise ConfigError(f"{source} with the suite's params: SOLVER.STEPS {steps} do not fit SOLVER.MAX_ITER "
                          f"{max_iter} (expected increasing steps up to MAX_ITER); a schedule is the base "
                          f"config's, so set params.iterations and params.steps together")


def schedule_departures(cfg: CfgNode, base: str) -> Dict[str, Dict[str, Any]]:
    """``{key: {base_config: value, suite: value}}`` for each ``SCHEDULE_KEYS`` value differing from ``base``'s."""
    base_cfg = load_config(base_config_path(base))
    out = {}
    for key in SCHEDULE_KEYS:
        ours, theirs = _plain(_get(cfg, key)), _plain(_get(base_cfg, key))
        if ours != theirs:
            out[key] = {"base_config": theirs, "suite": ours}
    return out


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def apply_overrides(cfg: CfgNode, overrides: Mapping[str, Any], source: str = "overrides") -> None:
    """Set dotted Detectron2 keys, with a ConfigError naming a key the config does not have."""
    pairs: Sequence[Any] = []
    for key, value in overrides.items():
        try:
            _get(cfg, key)
        except (KeyError, TypeError):
            raise ConfigError(f"{source}: Detectron2 config has no key {key!r}") from None
        pairs = [*pairs, key, value]
    try:
        cfg.merge_from_list(list(pairs))
    except (AssertionError, ValueError, KeyError) as e:
        raise ConfigError(f"{source}: Detectron2 config override rejected: {e}") from None


def load_config(path: Path) -> CfgNode:
    """Read a base config or one written by ``build_config`` (SlimBench keys included)."""
    cfg = d2_backbone.add_slimbench_config(get_cfg())
    cfg.merge_from_file(str(path))
    return cfg
