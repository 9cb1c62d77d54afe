"""NVIDIA DALI input path (``data.backend: dali``): JPEG decoding and augmentation on the GPU.

The field's fast path (upstream SlimCLR's ``dataset/imagenet_dali.py``, solo-learn's DALI loaders):
files of an ImageFolder are decoded by nvJPEG (``mixed``: the Huffman stage on the CPU, the rest on
the GPU, and only the crop is decoded), and crop, resize, colour jitter, grayscale, blur, solarize,
flip and normalisation run as DALI operators on the GPU. Without a GPU the same pipeline runs on
DALI's CPU operators (``device_id=None``), which is what the tests do; there the PIL path is the
faster default.

What differs from the PIL path, and what does not:

- **Parameters are the PIL path's.** Each sample's augmentation parameters are drawn by walking the
  PIL path's own operations (``pretrain.data.augment.view_ops``) under the sample's seed from
  ``pretrain.data.loader.augment_seed``, in the order torchvision draws them. So every image gets the same
  crop window, jitter factors, grayscale, blur radius, solarize and flip on both backends, and the
  views are a function of (run seed, epoch, index) alone: a resumed run, or one with more workers,
  sees exactly the views of an uninterrupted one. On one device kind DALI's pixels are then
  bit-identical across runs (checked on CPU in the tests); they are not bit-identical to PIL's.
- **Pixel operations are DALI's.** Resize is bilinear with antialiasing as torchvision's; the blur is
  a true Gaussian (PIL approximates it with three box passes); DALI's ``color_twist`` applies
  brightness, contrast, saturation and hue in one fixed order, where torchvision draws a random
  order, and pivots contrast at 128 rather than at the image's mean grey; grayscale is saturation 0
  in DALI's YIQ space (the luma PIL's ``L`` conversion uses). Hue is given in degrees
  (torchvision's 0.1 of a turn = 36 degrees; upstream SlimCLR's DALI path passes 0.1 degrees).
- **The sample order is ``ResumableSampler``'s** (every image once per epoch, each rank its slice of
  every global batch), not DALI's reader shuffle, whose buffered shuffle cannot resume mid-epoch.

The parameters are drawn in DALI's parallel external source (``data.workers`` Python processes);
the JPEG bytes are read there too.
"""
from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from pretrain.data.augment import (IMAGENET_MEAN, IMAGENET_STD, SOLARIZE_THRESHOLD, PILGaussianBlur, view_ops,
                      view_params)
from pretrain.errors import ConfigError
from pretrain.data.loader import ResumableSampler, build_sampler

# one view's parameters, packed in one float32 vector per sample
FIELDS = ("left", "top", "crop_w", "crop_h", "brightness", "contrast", "saturation", "hue_deg",
          "blur", "sigma", "solarize", "flip")
INSTALL_HINT = "pip install '.[dali]' (the nvidia-dali-cuda120 wheel)"


def import_dali():
    """DALI's modules, or one clear error naming the extra to install."""
    try:
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def
    except ImportError as e:
        raise ConfigError(f"data.backend: dali needs NVIDIA DALI ({e}); {INSTALL_HINT}, or use data.backend: pil") from None
    return fn, types, pipeline_def


def draw_view(ops: Sequence, height: int, width: int, record: Optional[Dict] = None) -> np.ndarray:
    """One view's parameters, drawn from torch's generator exactly as ``T.Compose(ops)`` draws them.

    ``record``, when given, also receives what DALI does not use (the jitter order, grayscale).
    """
    p = dict(left=0.0, top=0.0, crop_w=float(width), crop_h=float(height), brightness=1.0, contrast=1.0,
             saturation=1.0, hue_deg=0.0, blur=0.0, sigma=1.0, solarize=0.0, flip=0.0)
    gray = False
    for t in ops:
        op = t
        if isinstance(t, T.RandomApply):
            if t.p < torch.rand(1):       # RandomApply.forward: skip when p < rand
                continue
            (op,) = t.transforms
        if isinstance(op, T.RandomResizedCrop):
            # get_params reads only the size of its input: a stride-0 view of the right shape
            top, left, h, w = op.get_params(torch.empty(1, 1, 1).expand(3, height, width), op.scale, op.ratio)
            p.update(left=float(left), top=float(top), crop_w=float(w), crop_h=float(h))
        elif isinstance(op, T.ColorJitter):
            order, b, c, s, hue = op.get_params(op.brightness, op.contrast, op.saturation, op.hue)
            if record is not None:
                record["jitter_order"] = order.tolist()
            p.update(brightness=b, contrast=c, saturation=s, hue_deg=hue * 360.0)
        elif isinstance(op, T.RandomGrayscale):
            gray = bool(torch.rand(1) < op.p)
        elif isinstance(op, PILGaussianBlur):
            p.update(blur=1.0, sigma=float(torch.empty(1).uniform_(*op.sigma)))
        elif isinstance(op, T.RandomSolarize):
            if torch.rand(1).item() < op.p:
                if op.threshold != SOLARIZE_THRESHOLD:
                    raise ConfigError(f"DALI path: solarize threshold {op.threshold} is not {SOLARIZE_THRESHOLD}")
                p["solarize"] = 1.0
        elif isinstance(op, T.RandomHorizontalFlip):
            p["flip"] = float(torch.rand(1) < op.p)
        else:
            raise ConfigError(f"DALI path: no DALI operator for {op!r}")
    if record is not None:
        record["gray"] = gray
    if gray:   # grayscale after the jitter: saturation 0 (hue no longer matters)
        p["saturation"] = 0.0
    return np.array([p[f] for f in FIELDS], dtype=np.float32)


def jpeg_size(data: bytes) -> Tuple[int, int]:
    """(height, width) of an encoded image, from its header only."""
    with Image.open(io.BytesIO(data)) as img:
        return img.height, img.width


class ViewSource:
    """DALI's per-sample external source: the k-th sample of this rank's stream and its views' parameters.

    Picklable (plain paths, a copy of the sampler and the view operations), so DALI's Python workers
    each hold a copy; each caches the shuffled order of the epoch it is in (``ResumableSampler.item``).
    """

    def __init__(self, files: Sequence[str], labels: Sequence[int], sampler: ResumableSampler, views: List[list]):
        self.files, self.labels, self.views = list(files), np.asarray(labels, dtype=np.int64), views
        self.sampler = copy.copy(sampler)   # this pass's position, whatever the trainer does to its own
        self.length = len(sampler)

    def __call__(self, info):
        k = info.idx_in_epoch
        if k >= self.length:
            raise StopIteration
        index, seed = self.sampler.item(k)
        data = np.fromfile(self.files[index], dtype=np.uint8)
        height, width = jpeg_size(data.tobytes())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            params = [draw_view(ops, height, width) for ops in self.views]
        return (data, *params, np.array(self.labels[index], dtype=np.int64))


def _augment(fn, types, jpegs, p, size: int, decoder: str):
    """The DALI operators of one view, driven by its parameter vector ``p`` (``FIELDS``)."""
    f = {name: i for i, name in enumerate(FIELDS)}
    img = fn.decoders.image_slice(jpegs, p[f["left"]:f["top"] + 1], p[f["crop_w"]:f["crop_h"] + 1],
                                  normalized_anchor=False, normalized_shape=False, device=decoder,
                                  output_type=types.RGB)
    img = fn.resize(img, size=[size, size], interp_type=types.INTERP_LINEAR, antialias=True)
    img = fn.color_twist(img, brightness=p[f["brightness"]], contrast=p[f["contrast"]],
                         saturation=p[f["saturation"]], hue=p[f["hue_deg"]])
    if p[f["blur"]] > 0.5:
        img = fn.gaussian_blur(img, sigma=p[f["sigma"]])
    if p[f["solarize"]] > 0.5:   # ImageOps.solarize: invert every value >= 128
        img = fn.cast(img * (img < SOLARIZE_THRESHOLD) + (255 - img) * (img >= SOLARIZE_THRESHOLD),
                      dtype=types.UINT8)
    return fn.crop_mirror_normalize(img, dtype=types.FLOAT, output_layout="CHW",
                                    mean=[255 * m for m in IMAGENET_MEAN], std=[255 * s for s in IMAGENET_STD],
                                    mirror=fn.cast(p[f["flip"]], dtype=types.INT32))


class DaliLoader:
    """Batches of augmented views (float, normalised, on ``device``) and labels, from a DALI pipeline.

    One pass covers the sampler's span (``ResumableSampler.set_position``); iterate again after moving it.
    """

    def __init__(self, files: Sequence[str], labels: Sequence[int], sampler: ResumableSampler, views: List[list],
                 image_size: int, device: torch.device, workers: int = 0, prefetch: int = 2, threads: int = 4):
        self.files, self.labels, self.sampler, self.views = files, labels, sampler, views
        self.image_size, self.device = image_size, torch.device(device)
        self.workers, self.prefetch, self.threads = workers, prefetch, threads
        self.fn, self.types, self.pipeline_def = import_dali()

    def _pipeline(self, source: ViewSource):
        fn, types = self.fn, self.types
        gpu = self.device.type == "cuda"
        decoder = "mixed" if gpu else "cpu"
        size, n = self.image_size, len(self.views)

        @self.pipeline_def(enable_conditionals=True)
        def pipe():
            outs = fn.external_source(source, num_outputs=n + 2, batch=False, parallel=self.workers > 0)
            jpegs, params, labels = outs[0], outs[1:1 + n], outs[-1]
            return (*[_augment(fn, types, jpegs, p, size, decoder) for p in params], labels)

        kwargs = dict(py_num_workers=self.workers, py_start_method="spawn") if self.workers > 0 else {}
        return pipe(batch_size=self.sampler.batch_per_rank, num_threads=self.threads,
                    device_id=(self.device.index or 0) if gpu else None, seed=self.sampler.seed,
                    prefetch_queue_depth=self.prefetch, **kwargs)

    def __len__(self) -> int:
        return len(self.sampler) // self.sampler.batch_per_rank

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, ...]]:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        pipe = self._pipeline(ViewSource(self.files, self.labels, self.sampler, self.views))
        pipe.build()
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        try:
            for _ in range(len(self)):
                outs = pipe.run()
                batch = []
                for out in outs:
                    dense = out.as_tensor()
                    dtype = torch.int64 if out is outs[-1] else torch.float32
                    target = torch.empty(dense.shape(), dtype=dtype,
                                         device=self.device if out is not outs[-1] else "cpu")
                    feed_ndarray(dense, target, cuda_stream=stream)
                    batch.append(target)
                yield tuple(batch)
        finally:
            del pipe


def image_files(dataset) -> Tuple[List[str], List[int]]:
    """(paths, labels) of an ImageFolder, or of a ``Subset`` of one, in the dataset's own index order."""
    indices = None
    if isinstance(dataset, torch.utils.data.Subset):
        dataset, indices = dataset.dataset, list(dataset.indices)
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise ConfigError(f"data.backend: dali reads image files; {type(dataset).__name__} has none "
                          f"(use an imagefolder dataset)")
    if indices is not None:
        samples = [samples[i] for i in indices]
    return [str(p) for p, _ in samples], [int(c) for _, c in samples]


class _TwoViews:
    """Adapts ``DaliLoader`` to the trainer's (view1, view2) batches."""

    def __init__(self, loader: DaliLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for view1, view2, _ in self.loader:
            yield view1, view2


def build_dali_loader(data, seed: int, rank: int, world_size: int,
                      device: torch.device) -> Tuple[_TwoViews, ResumableSampler]:
    """The DALI two-view loader of the recipe's ``data`` section and its resumable sampler."""
    from pretrain.data.loader import build_image_dataset

    import_dali()
    files, labels = image_files(build_image_dataset(data))
    sampler = build_sampler(data, len(files), seed, rank, world_size)
    views = [view_ops(data.image_size, data.crop_scale, **p) for p in view_params(data.augment, data.blur)]
    loader = DaliLoader(files, labels, sampler, views, data.image_size, device, data.workers, data.prefetch)
    return _TwoViews(loader), sampler
