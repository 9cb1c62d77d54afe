"""Exact sub-network extraction and BatchNorm calibration.

``extract`` turns one sub-network of a slimmable checkpoint into a ``PlainResNet`` whose eval
outputs equal the slimmable network's at that spec. Every adapter (torchvision, Detectron2,
MMSeg) starts from this network; none slices weights on its own.
"""
from __future__ import annotations

import logging
from typing import Iterable, Optional, Sequence, Union

import torch
import torch.nn as nn

from pretrain.checkpoints.format import Checkpoint, load_checkpoint
from pretrain.models.plain_resnet import PlainResNet
from pretrain.models.resnet import SlimResNet
from pretrain.models.spec import SubnetError, SubnetSpec

log = logging.getLogger(__name__)

Source = Union[str, "os.PathLike", Checkpoint, SlimResNet]


def as_model(source: Source) -> SlimResNet:
    """A SlimResNet from a checkpoint path, a Checkpoint, or a model."""
    if isinstance(source, SlimResNet):
        return source
    if isinstance(source, Checkpoint):
        return source.build_model()
    return load_checkpoint(source).build_model()


def _bn_key(plain_key: str, index: int) -> str:
    module, leaf = plain_key.rsplit(".", 1)
    return f"{module}.bn.{index}.{leaf}"


def _slice_to(src: torch.Tensor, shape) -> torch.Tensor:
    if src.dim() != len(shape) or any(s < t for s, t in zip(src.shape, shape)):
        raise SubnetError(f"cannot take shape {tuple(shape)} from a tensor of shape {tuple(src.shape)}")
    return src[tuple(slice(0, n) for n in shape)].clone()


def stores_statistics(widths: Sequence[float], spec: SubnetSpec) -> bool:
    """True when a checkpoint of ``widths`` holds BN running statistics for the canonical ``spec``:
    a listed width at full depth."""
    return spec.depth is None and round(spec.width, 6) in [round(float(w), 6) for w in widths]


def extract(source: Source, spec, calib_loader: Optional[Iterable] = None, calib_batches: int = 50,
            device: Union[str, torch.device, None] = None) -> PlainResNet:
    """Extract sub-network ``spec`` as a plain ResNet (eval mode, on CPU unless ``device``).

    A width in the stored list gets that width's own BatchNorm. Any other width takes the affine
    parameters of the nearest larger listed width (its leading channels) and fresh running
    statistics calibrated on ``calib_loader`` (cumulative averages over ``calib_batches``), as
    US-Nets do; without a loader such a width is refused. A stored width's running statistics
    are those of its full-depth network, so a shallower network is calibrated too when a loader
    is given (as BigNAS and OFA calibrate their children), and otherwise keeps them with a warning.
    """
    model = as_model(source)
    spec = SubnetSpec.parse(spec)
    listed = spec.width in model.widths
    spec = model.check_subnet(spec, allow_any_width=not listed and calib_loader is not None)
    if listed:
        index = model.width_index(spec.width)
    else:
        index = model.width_index(min(w for w in model.widths if w >= spec.width))
    plain = PlainResNet(model.plan(spec), num_classes=model.num_classes)
    src = model.state_dict()
    target = plain.state_dict()
    new = {}
    for key, value in target.items():
        skey = key if key in src else _bn_key(key, index)
        if skey not in src:
            raise SubnetError(f"extraction: no source for {key} (looked for {skey})")
        s = src[skey]
        new[key] = s.clone() if s.dim() == 0 else _slice_to(s, value.shape)
    plain.load_state_dict(new, strict=True)
    if device is not None:
        plain.to(device)
    if calib_loader is not None and not stores_statistics(model.widths, spec):
        log.info("calibrating BN of %s on %d batches (affine from width %s)", spec, calib_batches,
                 model.widths[index])
        calibrate_bn(plain, calib_loader, calib_batches)
    elif spec.depth is not None:
        log.warning("%s keeps the running BN statistics of the full-depth w%s: pass calibration data "
                    "(--calib-data DIR, or calib_loader=) to estimate its own", spec, model.widths[index])
    return plain.eval()


@torch.no_grad()
def calibrate_bn(model: nn.Module, loader: Iterable, num_batches: int = 50) -> int:
    """Re-estimate every BatchNorm's running statistics as cumulative averages over ``num_batches``.

    Returns the number of batches used.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    device = next(model.parameters()).device
    was_training = model.training
    model.train()
    used = 0
    try:
        for batch in loader:
            if used >= num_batches:
                break
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            model(images.to(device))
            used += 1
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.train(was_training)
    if used == 0:
        raise ValueError("BN calibration got no batches from its data loader")
    return used
