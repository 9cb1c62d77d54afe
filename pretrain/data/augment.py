"""Two-view augmentations of the recipes, as upstream SlimCLR / MoCo define them, at any image size.

- ``mocov2``: both views RandomResizedCrop (scale 0.2-1), colour jitter 0.4/0.4/0.4/0.1 with
  p 0.8, grayscale p 0.2, Gaussian blur p 0.5, horizontal flip (MoCo v2; SlimCLR's
  ``dataset/dataloader.py`` ``ssl_aug == 'mocov2'``).
- ``byol``: colour jitter 0.4/0.4/0.2/0.1, and asymmetric views: blur p 1.0 / 0.1 and solarize
  p 0 / 0.2 (BYOL; SlimCLR's and MoCo v3's ``'mocov3'`` lists).
- ``simclr``: SimCLR's list as SlimCLR runs SlimCLR-SimCLR (``ssl_aug == 'simclr'``, after SimCLR's
  appendix A): both views as ``mocov2`` but colour jitter 0.8/0.8/0.8/0.2 (strength 1.0); RandomResizedCrop
  scale 0.08-1 is the recipe's ``crop_scale``.
- ``slim``: the supervised slimmable network's list (SlimCLR's ``ssl_aug == 'slim'``, from
  slimmable_networks): RandomResizedCrop (``crop_scale``, upstream 0.08-1), colour jitter 0.4/0.4/0.4
  always, AlexNet's PCA lighting noise of std 0.1 (``Lighting``, ImageNet's eigenvalues and vectors of
  ``dataset/transforms.py``), horizontal flip. Both views of a two-view method would be this list.

The blur is PIL's ``ImageFilter.GaussianBlur(radius=sigma)`` with sigma drawn from [0.1, 2.0], as
upstream's ``GaussianBlur`` of ``dataset/transforms.py`` (MoCo's ``main_moco.py``): PIL blurs with
three box passes whose cost does not grow with sigma, where a tensor convolution of a 23 px kernel
was 5x slower than the rest of the view. Upstream draws sigma from Python's ``random``; here it comes
from torch's generator, so the per-sample seeds of ``pretrain.data.loader`` decide it like every other
parameter. ``blur=False`` drops it, as SimCLR does for CIFAR-sized images: at 28 px a blur of
radius up to 2 erases the detail that tells the classes apart.

Views leave the CPU as ``uint8`` tensors (``as_uint8=True``): a quarter of float32's bytes to pin
and copy, and the division by 255 and the mean/std normalisation run on the device
(``DeviceNormalize``) in the same order and precision as ``ToTensor`` + ``Normalize``.
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch
import numpy as np
from PIL import Image, ImageFilter
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("mocov2", "byol", "simclr", "slim")
# ImageNet's RGB principal components (SlimCLR dataset/transforms.py imagenet_pca, from fb.resnet.torch)
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))
BLUR_SIGMA = (0.1, 2.0)
SOLARIZE_THRESHOLD = 128     # PIL's ImageOps.solarize default, as upstream's Solarize


class PILGaussianBlur:
    """PIL Gaussian blur of radius sigma ~ U(sigma_min, sigma_max), sigma drawn from torch's generator."""

    def __init__(self, sigma: Sequence[float] = BLUR_SIGMA):
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, image):
        sigma = float(torch.empty(1).uniform_(*self.sigma))
        return image.filter(ImageFilter.GaussianBlur(radius=sigma))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


class PILLighting:
    """AlexNet's PCA lighting noise on a PIL image, as upstream's ``Lighting``: add ``eigvec @ (a * eigval)``
    to every pixel's RGB (0-255 scale, clipped), ``a ~ N(0, alphastd)`` drawn from torch's generator."""

    def __init__(self, alphastd: float, eigval: Sequence[float] = PCA_EIGVAL,
                 eigvec: Sequence[Sequence[float]] = PCA_EIGVEC):
        self.alphastd = float(alphastd)
        self.eigval = torch.tensor(eigval, dtype=torch.float64)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float64)

    def __call__(self, image):
        if self.alphastd == 0:
            return image
        alpha = torch.randn(3) * self.alphastd   # float32, as upstream's rnd.astype('float32')
        inc = (self.eigvec @ (alpha.double() * self.eigval)).numpy()
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64) + inc
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alphastd={self.alphastd})"


class DeviceNormalize(torch.nn.Module):
    """``ToTensor`` + ``Normalize`` of a uint8 batch, on whatever device the batch is on."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:   # already normalised (a float pipeline)
            return images
        # ToTensor divides by 255 in float32, then Normalize subtracts and divides: same order here
        x = images.to(torch.float32).div_(255)
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))


def view_ops(image_size: int, crop_scale: Sequence[float], jitter: Tuple[float, float, float, float],
             blur_p: float, solarize_p: float) -> list:
    """The PIL operations of one view, in upstream's order (before the tensor conversion)."""
    ops = [
        T.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True),
        T.RandomApply([T.ColorJitter(*jitter)], p=0.8),
        T.RandomGrayscale(p=0.2),
    ]
    if blur_p > 0:
        ops.append(T.RandomApply([PILGaussianBlur(BLUR_SIGMA)], p=blur_p))
    if solarize_p > 0:
        ops.append(T.RandomSolarize(threshold=SOLARIZE_THRESHOLD, p=solarize_p))
    ops.append(T.RandomHorizontalFlip())
    return ops


def slim_ops(image_size: int, crop_scale: Sequence[float]) -> list:
    """The supervised slimmable list (SlimCLR ``dataloader.py`` ``'slim'``), before the tensor conversion."""
    return [T.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
            PILLighting(0.1),
            T.RandomHorizontalFlip()]


def _compose(ops: list, as_uint8: bool) -> T.Compose:
    tail = [T.PILToTensor()] if as_uint8 else [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops + tail)


def view_params(kind: str, blur: bool = True) -> Tuple[dict, dict]:
    """Per-view jitter, blur and solarize probabilities of augmentation ``kind`` (shared with the DALI path)."""
    on = 1.0 if blur else 0.0
    if kind == "mocov2":
        view = dict(jitter=(0.4, 0.4, 0.4, 0.1), blur_p=0.5 * on, solarize_p=0.0)
        return view, view
    if kind == "simclr":
        view = dict(jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5 * on, solarize_p=0.0)
        return view, view
    if kind == "byol":
        jitter = (0.4, 0.4, 0.2, 0.1)
        return (dict(jitter=jitter, blur_p=1.0 * on, solarize_p=0.0),
                dict(jitter=jitter, blur_p=0.1 * on, solarize_p=0.2))
    raise ValueError(f"unknown augmentation {kind!r}; expected one of {', '.join(AUGMENTATIONS)}")


def two_view_transforms(kind: str, image_size: int, crop_scale: Sequence[float] = (0.2, 1.0),
                        blur: bool = True, as_uint8: bool = False) -> Tuple[Callable, Callable]:
    """The (first view, second view) transforms of augmentation ``kind`` at ``image_size`` pixels.

    ``as_uint8`` ends each view in a uint8 tensor, to be normalised on the device by ``DeviceNormalize``.
    """
    if kind == "slim":
        view = _compose(slim_ops(image_size, crop_scale), as_uint8)
        return view, view
    p1, p2 = view_params(kind, blur)
    view1 = _compose(view_ops(image_size, crop_scale, **p1), as_uint8)
    view2 = view1 if p2 is p1 else _compose(view_ops(image_size, crop_scale, **p2), as_uint8)
    return view1, view2
