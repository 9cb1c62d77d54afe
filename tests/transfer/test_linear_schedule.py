"""The probe's learning-rate schedules, observed on the optimizer itself at every iteration of tiny runs.

``schedule: cosine`` must give 0.5 * lr * (1 + cos(pi * T / T_total)) at iteration T (SlimCLR's
lr_scheduler 'cos' mode, no warm-up); ``schedule: step`` multiplies the lr by gamma once per
milestone epoch reached (MoCo's main_lincls.py). The expected values are computed here from
those formulas, never by the code under test.
"""
import functools
import math
from contextlib import contextmanager

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from pretrain.checkpoints.format import load_checkpoint
from pretrain.config import from_dict
from pretrain.models.spec import SubnetSpec
from transfer.protocols.base import RunContext, get_protocol
from transfer.classify.probe import switchable_loss
from transfer.protocols.linear import ProbeParams, train_probe_on_features

from .conftest import make_checkpoint, make_image_folder


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny steps: on a shared 2-core machine OpenMP hand-offs cost 20x the arithmetic."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@contextmanager
def lr_at_every_step():
    """The lr each optimizer has when it takes a step (torch's global step pre-hook)."""
    seen = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    try:
        yield seen
    finally:
        handle.remove()


def cosine(lr, total):
    return [0.5 * lr * (1 + math.cos(math.pi * t / total)) for t in range(total)]


def features(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 8, generator=g), torch.randn(n, 4, generator=g)], torch.arange(n) % 3


def train(params, n):
    feats, labels = features(n)
    p = from_dict(ProbeParams, params, "test")
    with lr_at_every_step() as lrs:
        train_probe_on_features(feats, labels, 3, p, functools.partial(switchable_loss, teacher=0),
                                device=torch.device("cpu"))
    return lrs


def test_cosine_is_set_before_every_iteration():
    # 10 samples in batches of 4: 3 iterations per epoch, 4 epochs, T_total = 12
    lrs = train({"epochs": 4, "batch_size": 4, "lr": 0.4, "schedule": "cosine"}, n=10)
    assert lrs == pytest.approx(cosine(0.4, 12), rel=1e-12, abs=0)


def test_cosine_counts_only_the_iterations_that_train():
    # feature_norm skips a last batch of one sample: 9 samples in batches of 4 make 2 iterations per epoch
    lrs = train({"epochs": 3, "batch_size": 4, "lr": 1.0, "schedule": "cosine", "feature_norm": True}, n=9)
    assert lrs == pytest.approx(cosine(1.0, 6), rel=1e-12, abs=0)


def test_step_schedule_changes_per_epoch_at_milestones():
    lrs = train({"epochs": 5, "batch_size": 4, "lr": 30.0, "milestones": [2, 4], "gamma": 0.1}, n=10)
    expected = [30.0 * 0.1 ** sum(epoch >= m for m in (2, 4)) for epoch in range(5) for _ in range(3)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=0)
    assert ProbeParams().schedule == "step"  # MoCo's schedule unless a suite asks for cosine


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sched")
    make_image_folder(root / "data", per_class=8, size=16, classes=3)  # 24 training images
    return root, load_checkpoint(make_checkpoint(root / "ckpt.pt"))


def linear_run(tiny, params):
    root, ckpt = tiny
    cls = get_protocol("linear")
    ctx = RunContext(suite_name="test-linear", checkpoint=ckpt, subnets=[SubnetSpec(1.0), SubnetSpec(0.5)],
                     params=from_dict(cls.Params, {"workers": 0, "rrc_scale": [0.5, 1.0], **params}, "test"),
                     dataset=from_dict(cls.Dataset, {"resolution": 16, "resize": 16}, "test"),
                     data_root=root / "data", out_dir=root / "out", device=torch.device("cpu"))
    with lr_at_every_step() as lrs:
        rows = list(cls().run(ctx))
    assert {r.subnet for r in rows} == {"w1.0", "w0.5"}
    return lrs


def test_linear_protocol_cosine_per_iteration(tiny):
    # 24 images in batches of 10: 3 iterations per epoch (10, 10, 4), 2 epochs, T_total = 6
    lrs = linear_run(tiny, {"epochs": 2, "batch_size": 10, "lr": 0.4, "schedule": "cosine"})
    assert lrs == pytest.approx(cosine(0.4, 6), rel=1e-12, abs=0)


def test_linear_protocol_step_per_epoch(tiny):
    lrs = linear_run(tiny, {"epochs": 3, "batch_size": 10, "lr": 30.0, "milestones": [1, 2], "distill": False})
    assert lrs == pytest.approx([30.0] * 3 + [3.0] * 3 + [0.3] * 3, rel=1e-12, abs=0)
