"""The pretraining loader on CPU: pairs per second, and the share of a step spent waiting for data.

Two ways to drive the same ``pretrain.data.loader`` dataset, sampler and workers over several epochs:

- ``one pass`` (the trainer now): one loader over every epoch, persistent workers, prefetching
  across epoch boundaries;
- ``per epoch`` (the trainer before): a new iterator each epoch without persistent workers, so the
  workers restart and the first batches of every epoch are waited for.

Each is measured twice: draining the loader (pairs/s), and with a simulated device step that
sleeps (a GPU step leaves the CPU to the workers) for as long as the loader takes for a batch,
where an ideal loader hides all of its work and the wait share is what it failed to hide. Epochs
are short (a few batches of real 224 px JPEGs) so boundaries are frequent; ImageNet's 5000-step
epochs make the per-epoch cost rarer but no smaller.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Dict

import torch
from torch.utils.data import DataLoader

from pretrain.data.loader import TwoViewDataset, build_image_dataset, build_sampler
from pretrain.data.augment import two_view_transforms
from pretrain.recipe import DataRecipe

from benchmarks.perf.augment import make_image_folder


def _loader(data: DataRecipe, persistent: bool):
    views = two_view_transforms(data.augment, data.image_size, data.crop_scale, data.blur, as_uint8=True)
    dataset = TwoViewDataset(build_image_dataset(data), *views)
    sampler = build_sampler(data, len(dataset), 0, 0, 1)
    loader = DataLoader(dataset, batch_size=sampler.batch_per_rank, sampler=sampler, num_workers=data.workers,
                        drop_last=True, persistent_workers=persistent, prefetch_factor=data.prefetch)
    return loader, sampler


def drive(data: DataRecipe, mode: str, epochs: int, step_s: float) -> Dict[str, float]:
    """Pairs/s and the share of wall time spent waiting for a batch over ``epochs`` epochs."""
    loader, sampler = _loader(data, persistent=mode == "one pass")
    one_pass = mode == "one pass"
    sampler.set_position(0, 0, end_epoch=epochs if one_pass else None)
    wait, pairs = 0.0, 0
    start = time.perf_counter()
    for epoch in range(1 if one_pass else epochs):
        if not one_pass:
            sampler.set_position(epoch, 0)   # a fresh iterator below: the workers start again
        batches = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                view1, _ = next(batches)
            except StopIteration:
                break
            wait += time.perf_counter() - t0
            pairs += view1.shape[0]
            if step_s:
                time.sleep(step_s)   # the device step: the CPU is left to the workers
    elapsed = time.perf_counter() - start
    return {"pairs_per_s": pairs / elapsed, "wait_share": wait / elapsed}


def run(workers: int = 2, batch: int = 8, epochs: int = 4, images: int = 48) -> Dict[str, Dict[str, float]]:
    """Print pairs/s and wait share of both modes, drained and with a simulated device step."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_image_folder(Path(tmp), copies=images // 6)
        data = DataRecipe(dataset="imagefolder", root=str(root), image_size=224, augment="mocov2",
                          batch_size=batch, workers=workers)
        drained = {mode: drive(data, mode, epochs, 0.0) for mode in ("per epoch", "one pass")}
        step_s = batch / drained["one pass"]["pairs_per_s"]   # a device step as long as a batch of data
        stepped = {mode: drive(data, mode, epochs, step_s) for mode in ("per epoch", "one pass")}
    print(f"pretraining loader, mocov2 224 px views of real JPEGs, {workers} workers, batch {batch}, "
          f"{images // batch} batches an epoch, {epochs} epochs:")
    for mode in ("per epoch", "one pass"):
        print(f"  {mode:<9}  drained {drained[mode]['pairs_per_s']:6.1f} pairs/s   with a {1000 * step_s:.0f} ms "
              f"step: {stepped[mode]['pairs_per_s']:6.1f} pairs/s, waiting {100 * stepped[mode]['wait_share']:4.1f}%")
    ratio = stepped["one pass"]["pairs_per_s"] / stepped["per epoch"]["pairs_per_s"]
    print(f"loader one-pass/per-epoch pairs per second (with the step): {ratio:.2f}")
    return {"drained": drained, "stepped": stepped, "step_s": step_s}
