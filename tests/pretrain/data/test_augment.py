"""Two-view augmentations, each operation checked against its upstream definition.

Upstream: mzhaoshuai/SlimCLR ``dataset/dataloader.py`` (``data_transforms``: ``ssl_aug == 'mocov2'``
and ``'mocov3'``, "follow BYOL's augmentation recipe") and ``dataset/transforms.py`` (``GaussianBlur``:
``x.filter(ImageFilter.GaussianBlur(radius=random.uniform(.1, 2.)))``; ``Solarize``:
``ImageOps.solarize(x)``), the same lists as facebookresearch/moco ``main_moco.py`` (``--aug-plus``)
and moco-v3 ``main_moco.py``.
"""
import pytest
import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms as T

from benchmarks.perf.augment import sample_photo
from pretrain.data.augment import DeviceNormalize, PILGaussianBlur, two_view_transforms
from pretrain.data.loader import TwoViewDataset

# (op, its parameters, the probability of its RandomApply) per upstream list, in upstream's order
UPSTREAM_MOCOV2 = [("crop", (0.2, 1.0), None), ("jitter", (0.4, 0.4, 0.4, 0.1), 0.8), ("gray", 0.2, None),
                   ("blur", (0.1, 2.0), 0.5), ("flip", 0.5, None)]
UPSTREAM_BYOL_1 = [("crop", (0.2, 1.0), None), ("jitter", (0.4, 0.4, 0.2, 0.1), 0.8), ("gray", 0.2, None),
                   ("blur", (0.1, 2.0), 1.0), ("flip", 0.5, None)]
UPSTREAM_BYOL_2 = [("crop", (0.2, 1.0), None), ("jitter", (0.4, 0.4, 0.2, 0.1), 0.8), ("gray", 0.2, None),
                   ("blur", (0.1, 2.0), 0.1), ("solarize", 128, 0.2), ("flip", 0.5, None)]
# SlimCLR dataset/dataloader.py ssl_aug == 'simclr' (SimCLR's appendix A): jitter 0.8/0.8/0.8/0.2, scale 0.08-1
UPSTREAM_SIMCLR = [("crop", (0.08, 1.0), None), ("jitter", (0.8, 0.8, 0.8, 0.2), 0.8), ("gray", 0.2, None),
                   ("blur", (0.1, 2.0), 0.5), ("flip", 0.5, None)]


def describe(view):
    """The view's PIL operations as (op, parameters, RandomApply p), the tensor conversion left out."""
    out = []
    for t in view.transforms:
        inner, p = (t.transforms[0], t.p) if isinstance(t, T.RandomApply) else (t, None)
        if isinstance(inner, T.RandomResizedCrop):
            assert inner.ratio == (3 / 4, 4 / 3) and inner.interpolation == T.InterpolationMode.BILINEAR
            out.append(("crop", inner.scale, p))
        elif isinstance(inner, T.ColorJitter):
            b, c, s = (inner.brightness[1] - 1, inner.contrast[1] - 1, inner.saturation[1] - 1)
            out.append(("jitter", tuple(round(v, 6) for v in (b, c, s, inner.hue[1])), p))
        elif isinstance(inner, T.RandomGrayscale):
            out.append(("gray", inner.p, p))
        elif isinstance(inner, PILGaussianBlur):
            out.append(("blur", inner.sigma, p))
        elif isinstance(inner, T.RandomSolarize):
            out.append(("solarize", inner.threshold, inner.p))
        elif isinstance(inner, T.RandomHorizontalFlip):
            out.append(("flip", inner.p, p))
        elif not isinstance(inner, (T.PILToTensor, T.ToTensor, T.Normalize)):
            raise AssertionError(f"unexpected operation {inner}")
    return out


def photo(size=(96, 80)):
    return Image.open(sample_photo()).convert("RGB").resize(size)


def test_mocov2_views_are_upstreams_list():
    v1, v2 = two_view_transforms("mocov2", 224)
    assert v1 is v2 and describe(v1) == UPSTREAM_MOCOV2
    assert v1.transforms[0].size == (224, 224)


def test_byol_views_are_upstreams_asymmetric_lists():
    v1, v2 = two_view_transforms("byol", 224)
    assert describe(v1) == UPSTREAM_BYOL_1 and describe(v2) == UPSTREAM_BYOL_2


def test_simclr_views_are_upstreams_list():
    v1, v2 = two_view_transforms("simclr", 224, crop_scale=(0.08, 1.0))
    assert describe(v1) == UPSTREAM_SIMCLR and describe(v2) == UPSTREAM_SIMCLR


def test_crop_scale_reaches_both_views():
    for view in two_view_transforms("byol", 96, crop_scale=(0.08, 1.0)):
        assert describe(view)[0] == ("crop", (0.08, 1.0), None)


def test_blur_is_pils_gaussian_blur_with_the_drawn_radius():
    image, blur = photo(), PILGaussianBlur((0.1, 2.0))
    for seed in range(5):
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        got = blur(image)
        torch.set_rng_state(state)
        sigma = torch.empty(1).uniform_(0.1, 2.0).item()   # the one draw the op makes
        assert 0.1 <= sigma <= 2.0
        assert got.tobytes() == image.filter(ImageFilter.GaussianBlur(radius=sigma)).tobytes()


def test_blur_radius_is_uniform_over_upstreams_range():
    torch.manual_seed(0)
    blur, radii = PILGaussianBlur(), []
    original = ImageFilter.GaussianBlur.__init__

    def spy(self, radius=2):
        radii.append(radius)
        original(self, radius)
    ImageFilter.GaussianBlur.__init__ = spy
    try:
        for _ in range(400):
            blur(Image.new("RGB", (4, 4)))
    finally:
        ImageFilter.GaussianBlur.__init__ = original
    assert min(radii) >= 0.1 and max(radii) <= 2.0
    assert abs(sum(radii) / len(radii) - 1.05) < 0.06   # U(0.1, 2.0) has mean 1.05, sd 0.55


def test_solarize_is_pils_solarize():
    image = photo()
    ours = T.RandomSolarize(threshold=128, p=1.0)
    assert ours(image).tobytes() == ImageOps.solarize(image).tobytes()


def test_uint8_views_normalised_on_the_device_equal_to_tensor_and_normalize():
    image = photo()
    reference = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(image)
    got = DeviceNormalize()(T.PILToTensor()(image).unsqueeze(0))[0]
    assert got.dtype == torch.float32 and torch.equal(got, reference)


@pytest.mark.parametrize("kind", ["mocov2", "byol"])
def test_per_sample_seed_fixes_both_views(kind):
    base = [(photo(), 0)]
    ds = TwoViewDataset(base, *two_view_transforms(kind, 64, as_uint8=True))
    a, b, c = ds[(0, 11)], ds[(0, 11)], ds[(0, 12)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert a[0].dtype == torch.uint8 and a[0].shape == (3, 64, 64)


@pytest.mark.parametrize("kind", ["mocov2", "byol"])
def test_blur_can_be_dropped_and_views_have_the_image_size(kind):
    for view in two_view_transforms(kind, 28, blur=False):
        assert "blur" not in [op for op, _, _ in describe(view)]
        out = view(Image.new("RGB", (40, 30), (120, 60, 200)))
        assert out.shape == (3, 28, 28) and out.dtype == torch.float32
    assert "blur" in [op for op, _, _ in describe(two_view_transforms(kind, 28)[0])]


def test_unknown_augmentation_is_named():
    with pytest.raises(ValueError, match="unknown augmentation 'swav'"):
        two_view_transforms("swav", 32)


def test_sampler_item_is_what_iteration_yields_kth():
    from pretrain.data.loader import ResumableSampler

    sampler = ResumableSampler(10, 2, seed=3, rank=1, world_size=2)
    sampler.set_position(0, 1, end_epoch=3)
    assert [sampler.item(k) for k in range(len(sampler))] == list(sampler)
