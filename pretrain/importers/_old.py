"""Importers: foreign weight layouts into SlimBench checkpoints.

- ``slimclr``: the upstream SlimCLR release (MoCo v2 keys under ``module.encoder_q.``, MoCo v3
  under ``module.base_encoder.``), blocks stored flat as ``features.{k}`` with ``shortcut.{0,1}``
  and switchable BN ``bn.{i}`` indexed by that release's descending width list.
- ``torchvision``: a torchvision-layout ResNet state dict of one width (1.0, or a plain narrow
  network such as a ResNet-50 x0.5) and optionally one depth.
"""
from __future__ import annotations

import logging
import re
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .checkpoint import Checkpoint, CheckpointError, read_torch_file
from .resnet import ARCHS, SlimResNet
from .spec import SubnetSpec, format_width

log = logging.getLogger(__name__)

SLIMCLR_WIDTHS = (1.0, 0.75, 0.5, 0.25)
SLIMCLR_PREFIXES = ("module.encoder_q.", "module.base_encoder.", "encoder_q.", "base_encoder.")
IMPORTERS: Dict[str, Callable[..., Checkpoint]] = {}


def register_importer(name: str):
    """Register an importer under ``name`` (``bench import --from NAME``)."""
    def deco(fn):
        IMPORTERS[name] = fn
        return fn
    return deco


def _unwrap(obj, src) -> Dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{src}: expected a state dict of tensors, found {type(obj).__name__}")
    return obj


def _depth_from_blocks(counts: Sequence[int], bottleneck: bool, src) -> int:
    for depth, (kind, blocks) in ARCHS.items():
        if tuple(blocks) == tuple(counts) and (kind == "bottleneck") == bottleneck:
            return depth
    raise CheckpointError(f"{src}: blocks per stage {list(counts)} match no ResNet of depth {sorted(ARCHS)}")


def _load_into(model: SlimResNet, sd: Dict[str, torch.Tensor], src) -> None:
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{src}: {len(result.missing_keys)} keys missing (e.g. {result.missing_keys[:4]}), "
                              f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:4]})")


@register_importer("torchvision")
def import_torchvision(src, state_dict: Optional[dict] = None, width: float = 1.0,
                       blocks: Optional[Sequence[int]] = None) -> Checkpoint:
    """A torchvision-layout ResNet state dict of one width (and, with ``blocks``, one depth) as a checkpoint.

    A plain narrow network (e.g. a ResNet-50 x0.5 pretrained elsewhere) becomes a one-width
    checkpoint of that width, the layout of SlimBench's own individual baselines. With ``blocks``
    (leading blocks per stage) it is a depth variant inside the smallest ResNet that holds it; the
    blocks it lacks stay at their initialisation and the variant is recorded as desired.
    """
    sd = _unwrap(state_dict if state_dict is not None else read_torch_file(src, "torchvision file"), src)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    if "conv1.weight" not in sd:
        raise CheckpointError(f"{src}: no 'conv1.weight': not a torchvision ResNet state dict")
    counts = [len({int(m.group(1)) for k in sd for m in [re.match(rf"layer{s}\.(\d+)\.", k)] if m})
              for s in range(1, 5)]
    bottleneck = "layer1.0.conv3.weight" in sd
    if blocks is None:
        depth = _depth_from_blocks(counts, bottleneck, src)
    else:
        if list(blocks) != counts:
            raise CheckpointError(f"{src}: --blocks {'.'.join(map(str, blocks))} but the file has "
                                  f"{'.'.join(map(str, counts))} blocks per stage")
        depth = _smallest_depth_holding(counts, bottleneck, src)
    stem = "small" if sd["conv1.weight"].shape[-1] == 3 else "imagenet"
    num_classes = sd["fc.weight"].shape[0] if "fc.weight" in sd else None
    model = SlimResNet(depth, widths=[width], stem=stem, num_classes=num_classes)
    spec = SubnetSpec(width, None if blocks is None else tuple(blocks)).canonical(model.stage_blocks)
    bn_modules = {n for n, m in model.named_modules() if n.endswith(".bn.0")}
    mapped = {}
    for k, v in sd.items():
        module, leaf = k.rsplit(".", 1)
        mapped[f"{module}.bn.0.{leaf}" if f"{module}.bn.0" in bn_modules else k] = v
    _check_channel_plan(model, mapped, sd, width, src)
    kept = model.state_dict()
    absent = [k for k in kept if k not in mapped and not _in_dropped_blocks(k, counts)]
    unexpected = [k for k in mapped if k not in kept]
    if absent or unexpected:
        raise CheckpointError(f"{src}: {len(absent)} keys missing (e.g. {absent[:4]}), "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:4]})")
    kept.update(mapped)
    model.load_state_dict(kept)
    desired = [str(spec)] if spec.depth is not None else []
    return Checkpoint.from_model(model, method="import:torchvision", desired=desired,
                                 config={"source": str(src), "width": width,
                                         "blocks": None if blocks is None else list(blocks)})


def _smallest_depth_holding(counts: Sequence[int], bottleneck: bool, src) -> int:
    """The shallowest standard ResNet of this block kind with at least ``counts`` blocks per stage."""
    for depth, (kind, full) in sorted(ARCHS.items()):
        if (kind == "bottleneck") == bottleneck and all(c <= f for c, f in zip(counts, full)):
            return depth
    raise CheckpointError(f"{src}: blocks per stage {list(counts)} fit in no ResNet of depth {sorted(ARCHS)}")


def _in_dropped_blocks(key: str, counts: Sequence[int]) -> bool:
    m = re.match(r"layer(\d)\.(\d+)\.", key)
    return bool(m) and int(m.group(2)) >= counts[int(m.group(1)) - 1]


def _check_channel_plan(model: SlimResNet, mapped: Dict[str, torch.Tensor], original: Dict[str, torch.Tensor],
                        width: float, src) -> None:
    """Every tensor must have the shape the channel plan of ``width`` gives it; name the ones that do not."""
    expected = model.state_dict()
    wrong = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in mapped.items()
             if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if not wrong:
        return
    stem_width = original["conv1.weight"].shape[0] / 64
    shown = "; ".join(f"{k}: {list(got)}, expected {list(want)}" for k, got, want in wrong[:3])
    raise CheckpointError(f"{src}: does not fit width {format_width(width)} of {model.arch} "
                          f"({len(wrong)} tensors differ; {shown}); its stem has "
                          f"{original['conv1.weight'].shape[0]} channels, as width {stem_width:g} would")


@register_importer("slimclr")
def import_slimclr(src, state_dict: Optional[dict] = None,
                   widths: Sequence[float] = SLIMCLR_WIDTHS) -> Checkpoint:
    """The upstream SlimCLR release layout as a slimmable checkpoint (its width order kept)."""
    sd = _unwrap(state_dict if state_dict is not None else read_torch_file(src, "SlimCLR file"), src)
    prefix = next((p for p in SLIMCLR_PREFIXES if any(k.startswith(p) for k in sd)), None)
    if prefix is None:
        raise CheckpointError(f"{src}: no keys under any of {list(SLIMCLR_PREFIXES)}: not a SlimCLR release "
                              f"(first keys: {list(sd)[:3]})")
    enc = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    n_blocks = len({int(m.group(1)) for k in enc for m in [re.match(r"features\.(\d+)\.", k)] if m})
    bottleneck = "features.0.conv3.weight" in enc
    depth = next((d for d, (kind, b) in ARCHS.items()
                  if sum(b) == n_blocks and (kind == "bottleneck") == bottleneck), None)
    if depth is None:
        raise CheckpointError(f"{src}: {n_blocks} blocks under features.* match no ResNet depth")
    n_bn = len({k.split(".")[2] for k in enc if k.startswith("bn1.bn.")})
    if n_bn != len(widths):
        raise CheckpointError(f"{src}: stem BN has {n_bn} switchable entries but {len(widths)} widths "
                              f"were given ({list(widths)})")
    stage_blocks = ARCHS[depth][1]
    block_names: List[str] = [f"layer{s + 1}.{b}" for s, n in enumerate(stage_blocks) for b in range(n)]
    mapped, dropped = {}, []
    for k, v in enc.items():
        m = re.match(r"features\.(\d+)\.(.*)$", k)
        if m:
            rest = m.group(2).replace("shortcut.0.", "downsample.0.").replace("shortcut.1.", "downsample.1.")
            mapped[f"{block_names[int(m.group(1))]}.{rest}"] = v
        elif k.startswith(("conv1.", "bn1.")):
            mapped[k] = v
        else:
            dropped.append(k)  # projection heads and classifiers are not part of the backbone
    model = SlimResNet(depth, widths=widths)
    _load_into(model, mapped, src)
    if dropped:
        log.info("slimclr import: dropped %d non-backbone keys (e.g. %s)", len(dropped), dropped[:3])
    method = "import:slimclr-" + ("mocov2" if "encoder_q" in prefix else "mocov3")
    return Checkpoint.from_model(model, method=method, config={"source": str(src)},
                                 extra={"dropped_keys": dropped})
