"""A torchvision-named ResNet state dict (``conv1``, ``bn1``, ``layerS.B.*``, ``downsample.{0,1}``) as a checkpoint.

Every layout but SlimCLR's stores its encoder under these names once its prefix is removed (MoCo,
MoCo v3, solo-learn, MMSelfSup's ``ResNet``, VISSL's trunk, lightly, timm). Depth comes from the
blocks per stage (a shallower network becomes a depth variant of the smallest ResNet holding it)
and width from the channels (the width whose channel plan gives every tensor its shape).
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Sequence

import torch

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.models.resnet import ARCHS, SlimResNet
from pretrain.models.spec import SubnetSpec, format_width


def refuse_foreign_resnets(sd: Mapping[str, torch.Tensor], src) -> None:
    """Raise, with the reason, for ResNet variants SlimBench's ResNet cannot hold."""
    if any(k.startswith("stem.") for k in sd):
        raise CheckpointError(f"{src}: a deep stem (stem.* : three 3x3 convolutions, MMPretrain/MMCls "
                              f"ResNetV1c/ResNetV1d); SlimBench's ResNet has torchvision's single 7x7 stem, "
                              f"so this network cannot be held")
    if "conv1.0.weight" in sd:
        raise CheckpointError(f"{src}: a deep stem (conv1.0/conv1.3/conv1.6: timm's stem_type='deep', e.g. "
                              f"resnet50d); SlimBench's ResNet has torchvision's single 7x7 stem, so this "
                              f"network cannot be held")
    avg_down = [k for k, v in sd.items() if re.match(r"layer\d\.\d+\.downsample\.1\.weight$", k) and v.dim() == 4]
    if avg_down or any(re.match(r"layer\d\.\d+\.downsample\.2\.", k) for k in sd):
        raise CheckpointError(f"{src}: an average-pool shortcut (avg_down, ResNet-D: downsample.1 is a "
                              f"convolution); SlimBench's shortcut is a strided 1x1 convolution, so this "
                              f"network cannot be held")
    se = sorted({m.group(1) for k in sd for m in [re.match(r"(layer\d\.\d+)\.se(_module)?\.", k)] if m})
    if se:
        raise CheckpointError(f"{src}: a ResNet with squeeze-and-excitation blocks ({se[0]}.se.* and {len(se) - 1} "
                              f"more: timm's seresnet*, attn_layer='se'); SE blocks are not part of the ResNet "
                              f"SlimBench can slim (convolutions, BatchNorm, shortcuts), so this network cannot be held")
    if "conv1.weight" not in sd:
        raise CheckpointError(f"{src}: no 'conv1.weight': not a torchvision-named ResNet state dict "
                              f"(first keys: {list(sd)[:4]})")


def _depth_from_blocks(counts: Sequence[int], bottleneck: bool) -> Optional[int]:
    return next((d for d, (kind, b) in ARCHS.items() if tuple(b) == tuple(counts) and (kind == "bottleneck") == bottleneck),
                None)


def _smallest_depth_holding(counts: Sequence[int], bottleneck: bool, src) -> int:
    """The shallowest standard ResNet of this block kind with at least ``counts`` blocks per stage."""
    for depth, (kind, full) in sorted(ARCHS.items()):
        if (kind == "bottleneck") == bottleneck and all(c <= f for c, f in zip(counts, full)):
            return depth
    raise CheckpointError(f"{src}: blocks per stage {list(counts)} fit in no ResNet of depth {sorted(ARCHS)}")


def _in_dropped_blocks(key: str, counts: Sequence[int]) -> bool:
    m = re.match(r"layer(\d)\.(\d+)\.", key)
    return bool(m) and int(m.group(2)) >= counts[int(m.group(1)) - 1]


def _shape_errors(model: SlimResNet, mapped: Mapping[str, torch.Tensor]) -> List[tuple]:
    expected = model.state_dict()
    return [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in mapped.items()
            if k in expected and tuple(v.shape) != tuple(expected[k].shape)]


def _to_switchable(model: SlimResNet, sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """torchvision BN names -> the one-width switchable BN names (``....bn.0.*``)."""
    bn_modules = {n for n, _ in model.named_modules() if n.endswith(".bn.0")}
    out = {}
    for k, v in sd.items():
        module, leaf = k.rsplit(".", 1)
        out[f"{module}.bn.0.{leaf}" if f"{module}.bn.0" in bn_modules else k] = v
    return out


def width_from_tensors(sd: Mapping[str, torch.Tensor], depth: int, stem: str, num_classes, src) -> float:
    """The width whose channel plan gives every tensor its shape (1.0, 0.5, 0.75, ...), the shortest decimal first."""
    bottleneck = ARCHS[depth][0] == "bottleneck"
    last = sd["layer4.0.conv3.weight" if bottleneck else "layer4.0.conv2.weight"].shape[0]
    ratio = last / (2048 if bottleneck else 512)
    for digits in (2, 3, 4):
        w = round(ratio, digits)
        if not 0 < w <= 4:
            continue
        with torch.device("meta"):   # shapes only: no memory, no initialisation
            model = SlimResNet(depth, widths=[w], stem=stem, num_classes=num_classes)
        if not _shape_errors(model, _to_switchable(model, sd)):
            return w
    raise CheckpointError(f"{src}: its channels fit no width of a ResNet-{depth} (stem {sd['conv1.weight'].shape[0]} "
                          f"channels, last stage {last}); SlimBench's channel rule is int(c * width)")


def resnet_checkpoint(sd: Mapping[str, torch.Tensor], src, method: str, width: Optional[float] = None,
                      blocks: Optional[Sequence[int]] = None, config: Optional[dict] = None,
                      extra: Optional[dict] = None) -> Checkpoint:
    """A one-width checkpoint of a torchvision-named ResNet; ``fc`` is kept as the classifier when present."""
    refuse_foreign_resnets(sd, src)
    counts = [len({int(m.group(1)) for k in sd for m in [re.match(rf"layer{s}\.(\d+)\.", k)] if m})
              for s in range(1, 5)]
    bottleneck = "layer1.0.conv3.weight" in sd
    if blocks is not None and list(blocks) != counts:
        raise CheckpointError(f"{src}: --blocks {'.'.join(map(str, blocks))} but the file has "
                              f"{'.'.join(map(str, counts))} blocks per stage")
    depth = _depth_from_blocks(counts, bottleneck)
    variant = depth is None
    depth = depth or _smallest_depth_holding(counts, bottleneck, src)
    stem = "small" if sd["conv1.weight"].shape[-1] == 3 else "imagenet"
    num_classes = sd["fc.weight"].shape[0] if "fc.weight" in sd else None
    if width is None:
        width = width_from_tensors(sd, depth, stem, num_classes, src)
    model = SlimResNet(depth, widths=[width], stem=stem, num_classes=num_classes)
    spec = SubnetSpec(width, tuple(counts) if variant else None).canonical(model.stage_blocks)
    mapped = _to_switchable(model, sd)
    wrong = _shape_errors(model, mapped)
    if wrong:
        shown = "; ".join(f"{k}: {list(got)}, expected {list(want)}" for k, got, want in wrong[:3])
        raise CheckpointError(f"{src}: does not fit width {format_width(width)} of {model.arch} "
                              f"({len(wrong)} tensors differ; {shown}); its stem has "
                              f"{sd['conv1.weight'].shape[0]} channels, as width {sd['conv1.weight'].shape[0] / 64:g} would")
    kept = model.state_dict()
    absent = [k for k in kept if k not in mapped and not _in_dropped_blocks(k, counts)]
    unexpected = [k for k in mapped if k not in kept]
    if absent or unexpected:
        raise CheckpointError(f"{src}: {len(absent)} keys missing (e.g. {absent[:4]}), "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:4]})")
    kept.update(mapped)
    model.load_state_dict(kept)
    desired = [str(spec)] if spec.depth is not None else []
    cfg = {"source": str(src), "width": width, "blocks": list(counts) if variant else None, **(config or {})}
    return Checkpoint.from_model(model, method=method, desired=desired, config=cfg, extra=extra)
