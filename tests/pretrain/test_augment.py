"""Two-view augmentations: the recipes' operations and probabilities, at any image size."""
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from pretrain.augment import blur_kernel, two_view_transforms


def ops(view, kind):
    """The transforms of ``kind`` in ``view``, looking inside RandomApply."""
    found = []
    for t in view.transforms:
        inner = t.transforms if isinstance(t, T.RandomApply) else [t]
        found += [(i, getattr(t, "p", None)) for i in inner if isinstance(i, kind)]
    return found


def test_mocov2_views_follow_the_recipe():
    v1, v2 = two_view_transforms("mocov2", 224)
    assert v1 is v2
    (crop, _), = ops(v1, T.RandomResizedCrop)
    assert crop.size == (224, 224) and crop.scale == (0.2, 1.0)
    (jitter, p), = ops(v1, T.ColorJitter)
    assert p == 0.8 and (jitter.brightness, jitter.contrast, jitter.saturation) == ((0.6, 1.4),) * 3
    assert jitter.hue == (-0.1, 0.1)
    assert ops(v1, T.RandomGrayscale)[0][0].p == 0.2
    (blur, p), = ops(v1, T.GaussianBlur)
    assert p == 0.5 and blur.kernel_size == (23, 23) and blur.sigma == (0.1, 2.0)
    assert not ops(v1, T.RandomSolarize)


def test_byol_views_are_asymmetric():
    v1, v2 = two_view_transforms("byol", 96, crop_scale=(0.08, 1.0))
    assert [p for _, p in ops(v1, T.GaussianBlur)] == [1.0] and [p for _, p in ops(v2, T.GaussianBlur)] == [0.1]
    assert not ops(v1, T.RandomSolarize) and ops(v2, T.RandomSolarize)[0][0].p == 0.2
    assert ops(v1, T.RandomResizedCrop)[0][0].scale == (0.08, 1.0)


@pytest.mark.parametrize("kind", ["mocov2", "byol"])
def test_blur_can_be_dropped_and_views_have_the_image_size(kind):
    for view in two_view_transforms(kind, 28, blur=False):
        assert not ops(view, T.GaussianBlur)
        out = view(Image.new("RGB", (40, 30), (120, 60, 200)))
        assert out.shape == (3, 28, 28) and out.dtype == torch.float32
    assert ops(two_view_transforms(kind, 28)[0], T.GaussianBlur)


def test_blur_kernel_is_odd_and_about_a_tenth():
    assert [blur_kernel(s) for s in (8, 28, 96, 224)] == [3, 3, 9, 23]


def test_unknown_augmentation_is_named():
    with pytest.raises(ValueError, match="unknown augmentation 'simclr'"):
        two_view_transforms("simclr", 32)
