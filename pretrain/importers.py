"""Importers: foreign weight layouts into SlimBench checkpoints.

- ``slimclr``: the upstream SlimCLR release (MoCo v2 keys under ``module.encoder_q.``, MoCo v3
  under ``module.base_encoder.``), blocks stored flat as ``features.{k}`` with ``shortcut.{0,1}``
  and switchable BN ``bn.{i}`` indexed by that release's descending width list.
- ``torchvision``: a torchvision ResNet state dict, one width (1.0).
"""
from __future__ import annotations

import logging
import re
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .checkpoint import Checkpoint, CheckpointError, read_torch_file
from .resnet import ARCHS, SlimResNet

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
def import_torchvision(src, state_dict: Optional[dict] = None) -> Checkpoint:
    """A torchvision ResNet (18/34/50/101) state dict as a one-width (1.0) checkpoint."""
    sd = _unwrap(state_dict if state_dict is not None else read_torch_file(src, "torchvision file"), src)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    if "conv1.weight" not in sd:
        raise CheckpointError(f"{src}: no 'conv1.weight': not a torchvision ResNet state dict")
    counts = [len({int(m.group(1)) for k in sd for m in [re.match(rf"layer{s}\.(\d+)\.", k)] if m})
              for s in range(1, 5)]
    depth = _depth_from_blocks(counts, "layer1.0.conv3.weight" in sd, src)
    stem = "small" if sd["conv1.weight"].shape[-1] == 3 else "imagenet"
    num_classes = sd["fc.weight"].shape[0] if "fc.weight" in sd else None
    model = SlimResNet(depth, widths=[1.0], stem=stem, num_classes=num_classes)
    bn_modules = {n for n, m in model.named_modules() if n.endswith(".bn.0")}
    mapped = {}
    for k, v in sd.items():
        module, leaf = k.rsplit(".", 1)
        mapped[f"{module}.bn.0.{leaf}" if f"{module}.bn.0" in bn_modules else k] = v
    _load_into(model, mapped, src)
    return Checkpoint.from_model(model, method="import:torchvision", config={"source": str(src)})


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
