"""The DALI input path on DALI's CPU operators: the PIL path's parameters, its views' statistics, exact resume."""
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

from benchmarks.perf.augment import make_image_folder
from pretrain.data.augment import DeviceNormalize, PILGaussianBlur, two_view_transforms, view_ops, view_params
from pretrain.data.loader import ResumableSampler, TwoViewDataset, augment_seed

dali = pytest.importorskip("nvidia.dali", reason="the optional DALI extra is not installed")
from pretrain.data.dali import FIELDS, DaliLoader, draw_view, image_files  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("jpegs"), copies=2)   # 12 real JPEGs


def views_of(kind):
    return [view_ops(SIZE, (0.2, 1.0), **p) for p in view_params(kind)]


def replay(image, params, record):
    """The PIL view that ``params`` describe, rebuilt from torchvision's functional ops."""
    p = dict(zip(FIELDS, params.tolist()))
    out = F.resized_crop(image, int(p["top"]), int(p["left"]), int(p["crop_h"]), int(p["crop_w"]), [SIZE, SIZE],
                         T.InterpolationMode.BILINEAR, antialias=True)
    if "jitter_order" in record:
        sat = p["saturation"] if not record["gray"] else record["saturation"]
        ops = [lambda x: F.adjust_brightness(x, p["brightness"]), lambda x: F.adjust_contrast(x, p["contrast"]),
               lambda x: F.adjust_saturation(x, sat), lambda x: F.adjust_hue(x, p["hue_deg"] / 360.0)]
        for i in record["jitter_order"]:
            out = ops[i](out)
    if record["gray"]:
        out = F.rgb_to_grayscale(out, num_output_channels=3)
    if p["blur"]:
        from PIL import ImageFilter
        out = out.filter(ImageFilter.GaussianBlur(radius=p["sigma"]))
    if p["solarize"]:
        out = F.solarize(out, 128)
    if p["flip"]:
        out = F.hflip(out)
    return F.pil_to_tensor(out)


@pytest.mark.parametrize("kind", ["mocov2", "byol"])
def test_parameters_are_the_ones_the_pil_path_draws(folder, kind):
    files, _ = image_files(__import__("torchvision").datasets.ImageFolder(folder))
    pil = TwoViewDataset(__import__("torchvision").datasets.ImageFolder(folder),
                         *two_view_transforms(kind, SIZE, as_uint8=True))
    for index in range(6):
        seed = augment_seed(3, 1, index)
        image = Image.open(files[index]).convert("RGB")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            drawn = []
            for ops in views_of(kind):
                record = {}
                params = draw_view(ops, image.height, image.width, record)
                # the saturation factor before grayscale folds it to 0 (replay needs the drawn one)
                record["saturation"] = params[FIELDS.index("saturation")]
                drawn.append((params, record))
        for (params, record), view in zip(drawn, pil[(index, seed)]):
            if record["gray"]:
                continue   # the folded saturation hides the drawn factor; the other samples check it
            assert torch.equal(replay(image, params, record), view), (kind, index)


def dali_batches(folder, kind, epoch=0, start_batch=0, end_epoch=None, workers=0, batch=4):
    ds = __import__("torchvision").datasets.ImageFolder(folder)
    files, labels = image_files(ds)
    sampler = ResumableSampler(len(files), batch, seed=5)
    sampler.set_position(epoch, start_batch, end_epoch)
    loader = DaliLoader(files, labels, sampler, views_of(kind), SIZE, torch.device("cpu"), workers=workers, threads=1)
    return list(loader), sampler


@pytest.mark.parametrize("kind", ["mocov2", "byol"])
def test_dali_views_match_the_pil_views_statistics(folder, kind):
    batches, sampler = dali_batches(folder, kind, end_epoch=2)
    pil = TwoViewDataset(__import__("torchvision").datasets.ImageFolder(folder),
                         *two_view_transforms(kind, SIZE, as_uint8=True))
    keys = list(sampler)
    normalize = DeviceNormalize()
    for view in (0, 1):
        got = torch.cat([b[view] for b in batches])
        want = normalize(torch.stack([pil[k][view] for k in keys]))
        assert got.shape == want.shape == (len(keys), 3, SIZE, SIZE) and got.dtype == torch.float32
        # same crops, flips and factors: close per image, and the batch statistics agree
        assert (got - want).abs().mean() < 0.2
        assert torch.allclose(got.mean((0, 2, 3)), want.mean((0, 2, 3)), atol=0.1)
        assert torch.allclose(got.std((0, 2, 3)), want.std((0, 2, 3)), atol=0.1)
    labels = torch.cat([b[2] for b in batches])
    assert labels.tolist() == [0] * len(keys)


def test_resumed_dali_loader_yields_the_uninterrupted_runs_batches(folder):
    full, sampler = dali_batches(folder, "byol", end_epoch=2)          # 3 batches an epoch, 6 in all
    resumed, _ = dali_batches(folder, "byol", epoch=0, start_batch=2, end_epoch=2)   # from step 2
    assert sampler.batches_per_epoch == 3 and len(full) == 6 and len(resumed) == 4
    for a, b in zip(full[2:], resumed):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_parallel_workers_yield_the_same_views(folder):
    serial, _ = dali_batches(folder, "mocov2")
    parallel, _ = dali_batches(folder, "mocov2", workers=1)
    assert all(torch.equal(x, y) for a, b in zip(serial, parallel) for x, y in zip(a, b))


def test_pretraining_on_dali_resumes_bit_identical(folder, tmp_path):
    from pretrain.recipe import parse_recipe
    from pretrain.trainer import train
    from tests.pretrain.test_trainer import final_state, assert_same, tiny_recipe_dict

    data = tiny_recipe_dict("slimclr-mocov2")
    data["data"] = {"dataset": "imagefolder", "root": str(folder), "backend": "dali", "image_size": 8,
                    "batch_size": 4, "workers": 0, "augment": "byol"}
    full = train(parse_recipe(data, "tiny"), tmp_path / "full", progress=False)
    assert full.steps == 6   # 12 images, batch 4, 2 epochs
    data["run"]["max_steps"] = 4
    train(parse_recipe(data, "tiny"), tmp_path / "part", progress=False)
    del data["run"]["max_steps"]
    train(parse_recipe(data, "tiny"), tmp_path / "part", resume=True, progress=False)
    for a, b in zip(final_state(tmp_path / "full"), final_state(tmp_path / "part")):
        assert_same(a, b)


def test_dali_backend_refuses_fashion_mnist():
    from pretrain.recipe import parse_recipe
    from pretrain.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="backend: dali reads JPEG files"):
        parse_recipe({"method": {"name": "slimclr-mocov2"}, "data": {"dataset": "fashion-mnist", "backend": "dali"}},
                     "recipe.yaml")
