"""The GPU check: R50 pretraining steps, the input path and feature extraction on one accelerator.

Needs only torch and torchvision (DALI when installed). Prints one table:

- SlimCLR-MoCo v2 (after the slow start: every width) and DSPNet R50 training steps at 224 px with
  float16 AMP, the shipped recipes at a per-GPU batch of 128 (an 8-GPU node's share of 1024), with and
  without ``channels_last``: images/s and peak memory;
- the input path: two-view ``mocov2`` pairs/s from the PIL loader (one worker per CPU core, views
  copied to the GPU and normalised there) and from DALI (GPU decoding) when it is installed;
- ``linear-fast``'s feature extraction: an extracted R50 w1.0 forward under AMP, images/s.

Synthetic views for the training steps (the input path is measured on its own), real JPEGs made from
matplotlib's sample photo for the input path. ``quick=True`` runs tiny sizes on any device (a test).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from pretrain.data.augment import DeviceNormalize
from pretrain.methods import StepContext, build_method
from pretrain.recipe import load_recipe
from pretrain.checkpoints.extract import extract
from pretrain.trainer import build_encoder

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {"SlimCLR-MoCo v2 R50": "configs/pretrain/slimclr-mocov2-r50-200ep.yaml",
           "DSPNet R50": "configs/pretrain/dspnet-byol-r50.yaml"}

# ``quick``: the same code on an R18 at two widths, small heads and queue (seconds on a CPU)
_SMALL = ["model.arch=slim_resnet18", "model.widths=[1.0,0.5]"]
QUICK = {RECIPES["SlimCLR-MoCo v2 R50"]: _SMALL + ["method.queue_size=64", "method.proj_dims=[512,32]"],
         RECIPES["DSPNet R50"]: _SMALL + ["method.proj_dims=[64,32]", "method.pred_dims=[64,32]",
                                          "method.depths=[[1,1,1,1]]", "method.desired=[w1.0,w0.5]",
                                          "method.num_random=1"]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(recipe_path: str, device: torch.device, batch: int, size: int, steps: int,
                channels_last: bool, overrides: List[str] = ()) -> Dict[str, float]:
    """Images/s and peak memory (GiB) of ``steps`` training steps of a recipe on synthetic views."""
    recipe = load_recipe(ROOT / recipe_path, ["data.root=unused", *overrides])
    method = build_method(recipe, build_encoder(recipe)).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    method.to(memory_format=fmt)
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    views = [torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt) for _ in range(2)]
    method.train()

    def step(i: int) -> None:
        ctx = StepContext(i, 10 ** 6, 0.0, slim_active=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss, _ = method(views[0], views[1], ctx)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        method.update_target(ctx)

    for i in range(2):   # warm-up: cuDNN autotuning, allocator
        step(i)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(2 + i)
    _sync(device)
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    del method, opt, views
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"images_per_s": batch * steps / elapsed, "peak_gib": peak}


def pil_pairs(folder: Path, device: torch.device, batch: int, batches: int, workers: int, size: int) -> float:
    """Two-view pairs/s of the PIL loader with ``workers`` workers, views normalised on ``device``."""
    from pretrain.data.loader import build_loader
    from pretrain.recipe import DataRecipe

    data = DataRecipe(dataset="imagefolder", root=str(folder), image_size=size, batch_size=batch, workers=workers)
    loader, sampler = build_loader(data, 0, pin_memory=device.type == "cuda")
    sampler.set_position(0, 0, end_epoch=1 + batches // sampler.batches_per_epoch)
    normalize = DeviceNormalize().to(device)
    return _drain(((normalize(a.to(device, non_blocking=True)), normalize(b.to(device, non_blocking=True)))
                   for a, b in loader), batch, batches, device)


def dali_pairs(folder: Path, device: torch.device, batch: int, batches: int, workers: int, size: int) -> Optional[float]:
    """Two-view pairs/s of the DALI loader (GPU decoding on CUDA), or None without DALI."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return None
    from pretrain.data.dali import build_dali_loader
    from pretrain.recipe import DataRecipe

    data = DataRecipe(dataset="imagefolder", root=str(folder), image_size=size, batch_size=batch,
                      workers=workers, backend="dali")
    loader, sampler = build_dali_loader(data, 0, 0, 1, device)
    sampler.set_position(0, 0, end_epoch=1 + batches // sampler.batches_per_epoch)
    return _drain(iter(loader), batch, batches, device)


def _drain(batches, batch: int, count: int, device: torch.device) -> float:
    next(batches)   # start-up (workers, pipeline build) is not throughput
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(count):
        next(batches)
    _sync(device)
    return batch * count / (time.perf_counter() - t0)


def feature_images(device: torch.device, batch: int, size: int, steps: int) -> float:
    """Images/s of the extracted R50 w1.0 forward under AMP (linear-fast's feature extraction)."""
    from pretrain.models.resnet import SlimResNet

    net = extract(SlimResNet(50, widths=[1.0, 0.75, 0.5, 0.25]), "w1.0", device=device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    amp = device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        for _ in range(2):
            net(x)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            net(x)
        _sync(device)
    return batch * steps / (time.perf_counter() - t0)


def run(quick: bool = False) -> Dict[str, object]:
    """Run every measurement and print the table (``quick``: tiny sizes, any device)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not quick:
        raise SystemExit("python -m benchmarks.perf gpu: no CUDA device here; this check is for an accelerator")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    size, batch, steps = (32, 4, 2) if quick else (224, 128, 20)
    rows = []
    for name, path in RECIPES.items():
        extra = QUICK[path] if quick else []
        if "mocov2" in path:
            extra = extra + ["method.shuffle_bn=false"]   # Shuffling BN needs several processes
        for cl in (False, True):
            r = train_steps(path, device, batch, size, steps, cl, extra)
            rows.append((f"{name} step, AMP{', channels_last' if cl else ''}",
                         f"{r['images_per_s']:.0f} img/s", f"{r['peak_gib']:.1f} GiB peak"))
    workers = 0 if quick else max(1, (os.cpu_count() or 2) - 1)
    with tempfile.TemporaryDirectory() as tmp:
        from benchmarks.perf.augment import make_image_folder
        folder = make_image_folder(Path(tmp), copies=2 if quick else 40)
        n = 2 if quick else 30
        pil = pil_pairs(folder, device, batch, n, workers, size)
        rows.append((f"input path, PIL, {workers} workers", f"{pil:.0f} pairs/s", "mocov2 views"))
        dali = dali_pairs(folder, device, batch, n, min(workers, 4), size)
        rows.append(("input path, DALI" + (" (mixed decoding)" if device.type == "cuda" else " (CPU operators)"),
                     "not installed" if dali is None else f"{dali:.0f} pairs/s", "mocov2 views"))
    feats = feature_images(device, 2 * batch, size, steps)
    rows.append(("linear-fast features, R50 w1.0, AMP", f"{feats:.0f} img/s", f"batch {2 * batch}"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"GPU check on {name}, torch {torch.__version__}, {size} px, batch {batch} per step")
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"  {label:<{width}}  {value:>16}  {note}")
    return {"device": name, "rows": rows}
