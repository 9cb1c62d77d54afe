"""Two-view augmentations of the recipes, built from torchvision transforms at any image size.

- ``mocov2``: both views RandomResizedCrop (scale 0.2-1), colour jitter 0.4/0.4/0.4/0.1 with
  p 0.8, grayscale p 0.2, Gaussian blur p 0.5, horizontal flip (MoCo v2, SlimCLR-MoCo v2).
- ``byol``: colour jitter 0.4/0.4/0.2/0.1, and asymmetric views: blur p 1.0 / 0.1 and solarize
  p 0 / 0.2 (BYOL, MoCo v3, DSPNet).

The blur kernel is about a tenth of the image size (23 px at 224, as the PIL blur of MoCo
amounts to), with sigma drawn from [0.1, 2.0]. ``blur=False`` drops it, as SimCLR does for
CIFAR-sized images: at 28 px a 3 px blur erases the detail that tells the classes apart.
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("mocov2", "byol")


def blur_kernel(image_size: int) -> int:
    """Odd Gaussian-blur kernel of about 10% of the image size (at least 3)."""
    k = max(3, int(0.1 * image_size))
    return k if k % 2 == 1 else k + 1


def _view(image_size: int, crop_scale: Sequence[float], jitter: Tuple[float, float, float, float],
          blur_p: float, solarize_p: float) -> T.Compose:
    ops = [
        T.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True),
        T.RandomApply([T.ColorJitter(*jitter)], p=0.8),
        T.RandomGrayscale(p=0.2),
    ]
    if blur_p > 0:
        ops.append(T.RandomApply([T.GaussianBlur(blur_kernel(image_size), sigma=(0.1, 2.0))], p=blur_p))
    if solarize_p > 0:
        ops.append(T.RandomSolarize(threshold=128, p=solarize_p))
    ops += [T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops)


def two_view_transforms(kind: str, image_size: int, crop_scale: Sequence[float] = (0.2, 1.0),
                        blur: bool = True) -> Tuple[Callable, Callable]:
    """The (first view, second view) transforms of augmentation ``kind`` at ``image_size`` pixels."""
    on = 1.0 if blur else 0.0
    if kind == "mocov2":
        view = _view(image_size, crop_scale, (0.4, 0.4, 0.4, 0.1), blur_p=0.5 * on, solarize_p=0.0)
        return view, view
    if kind == "byol":
        jitter = (0.4, 0.4, 0.2, 0.1)
        return (_view(image_size, crop_scale, jitter, blur_p=1.0 * on, solarize_p=0.0),
                _view(image_size, crop_scale, jitter, blur_p=0.1 * on, solarize_p=0.2))
    raise ValueError(f"unknown augmentation {kind!r}; expected one of {', '.join(AUGMENTATIONS)}")
