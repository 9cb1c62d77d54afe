"""Sub-networks for classification protocols, including widths the checkpoint does not store.

A stored width at full depth is extracted with its own BatchNorm; any other width, and any
shallower network, gets fresh BN statistics calibrated on the suite's own training images (center
crops, a seeded shuffle), as US-Nets do for widths and BigNAS for depths.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from pretrain.models.plain_resnet import PlainResNet
from pretrain.checkpoints.extract import extract, stores_statistics
from pretrain.models.spec import SubnetSpec

CALIB_BATCHES = 50
CALIB_BATCH_SIZE = 64


def extract_subnet(ctx, spec: SubnetSpec) -> PlainResNet:
    """``extract`` on ``ctx.device`` in eval mode, calibrating BN on training images unless stored."""
    loader = None
    if not stores_statistics(ctx.checkpoint.widths, spec):
        train = ctx.dataset.split(ctx.data_root, "train", ctx.dataset.eval_transform())
        loader = DataLoader(train, batch_size=CALIB_BATCH_SIZE, shuffle=True,
                            generator=torch.Generator().manual_seed(ctx.seed))
    return extract(ctx.checkpoint, spec, calib_loader=loader, calib_batches=CALIB_BATCHES, device=ctx.device).eval()


def architecture(ctx, spec: SubnetSpec) -> PlainResNet:
    """The untrained ``PlainResNet`` that ``extract_subnet`` returns for ``spec`` (no weights, no data read):
    what a dry run builds optimizers over."""
    model = ctx.checkpoint.build_model()
    return PlainResNet(model.plan(model.check_subnet(spec, allow_any_width=True)))
