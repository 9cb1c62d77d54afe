"""The shipped classification suites against the published protocols, compared with what the protocols build.

The published values are written out here with their source. The SlimBench side is what the protocol
hands torch: the optimizer and schedule of ``Protocol.describe`` (built by the code the real run uses)
and, in tiny real runs, the optimizer observed at every step.

Sources:
- SimCLR (Chen et al. 2020, appendix B.5, as DESIGN.md quotes it: the paper's text is not stored here):
  Nesterov momentum 0.9, batch 4096, lr 0.05 x batch / 256 for every parameter, no warm-up, no weight
  decay, 60 epochs on 1 %, 30 on 10 %, random crop + flip only. google-research/simclr at 383d414:
  ``model_util.py:88-90`` ``MomentumOptimizer(..., use_nesterov=True)``; ``:64-65`` linear scaling
  ``base * train_batch_size / 256``; ``:55-56`` steps ``num_examples * train_epochs // train_batch_size + 1``;
  ``:76-81`` ``cosine_decay`` per global step after ``warmup_epochs`` (0 in B.5); ``run.py:125-127`` and
  ``model.py:170-178`` ``zero_init_logits_layer`` zeroes the supervised head; ``run.py:215-217`` ``global_bn``;
  ``data.py:164`` ``color_distort=is_pretrain`` (fine-tuning: crop + flip); ``imagenet_subsets/*.txt``;
  ``data_util.py`` ``crop_and_resize`` (the training crop resized ``BICUBIC``) and ``center_crop`` (``CROP_PROPORTION``
  0.875 of the shorter side, ``rint``, offsets ``(size - crop + 1) // 2``, then a ``BICUBIC`` resize).
- MoCo (facebookresearch/moco at 7397dfe) ``main_lincls.py``: lr 30, momentum 0.9, wd 0, batch 256, 100 epochs,
  lr x 0.1 at 60 and 80; ``:397-401`` validates every epoch and keeps ``best_acc1 = max(acc1, best_acc1)``.
- SlimCLR (mzhaoshuai/SlimCLR at cc7613d) ``main_ssl_lincls.py:253`` evaluates when ``(epoch + 1) % eval_freq == 0``
  or at the last epoch, ``params.py:123`` ``eval_freq`` 2; ``:261-265`` ``if best_acc1 <= acc1`` (``acc1`` is the
  full width's, ``eval_epoch_slim`` returns ``m_top1_all[0]``) keeps every width's info of that epoch;
  ``scripts/mocov2.sh`` lr 60 step, 100 epochs; ``scripts/mocov3.sh`` lr 0.4 cos, 90 epochs; batch 1024.
- DINO (facebookresearch/dino at cb71140) ``eval_knn.py:33`` ``Resize(256, interpolation=3)`` (bicubic),
  ``CenterCrop(224)``; ``:194-197`` k = 20 among ``nb_knn``, ``temperature`` 0.07.
"""
import copy
import hashlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torchvision import transforms as T

from benchmarks.suites import load_suite
from pretrain.checkpoints.format import load_checkpoint
from pretrain.config import from_dict
from pretrain.models.spec import SubnetSpec
from transfer.protocols.base import RunContext, get_protocol, warn_bn_batch

from .conftest import make_checkpoint, make_image_folder

REPO = Path(__file__).resolve().parents[2]

# -- published values ------------------------------------------------------------------------------
SIMCLR_B5 = {"momentum": 0.9, "nesterov": True, "base_lr": 0.05, "batch_size": 4096, "weight_decay": 0.0,
             "warmup_steps": 0}
SIMCLR_EPOCHS = {"imagenet-semi-1pct": 60, "imagenet-semi-10pct": 30}
SIMCLR_LABELLED = {"imagenet-semi-1pct": 12811, "imagenet-semi-10pct": 128116}
# sha256 of google-research/simclr imagenet_subsets/{1,10}percent.txt at 383d414 (computed once from that
# repository, equal to the shipped copies and to ../shared/data/imagenet_subsets/)
SIMCLR_SHA256 = {"1percent.txt": "71e82a48ba78252683ae334c4d019ebd5c6e855b9599c1389fbe83eb9549cf17",
                 "10percent.txt": "6d09de11e7bdaf5b1f3b1f249b6183695f97310cdd20f0c03e7235b6b9392091"}
LINEAR = {  # suite: (lr, batch, epochs, schedule, milestones, evaluate every, pick, weight decay)
    "imagenet-linear": (30.0, 256, 100, "step", [60, 80], 1, "best", 0.0),
    "imagenet-linear-slimclr-mocov2": (60.0, 1024, 100, "step", [60, 80], 2, "best-full-width", 0.0),
    "imagenet-linear-slimclr-mocov3": (0.4, 1024, 90, "cosine", None, 2, "best-full-width", 0.0),
    "imagenet-linear-slimclr-simclr": (0.4, 1024, 90, "cosine", None, 2, "best-full-width", 1e-6),  # simclr.sh:141-150
}


def simclr_lr(batch):
    return SIMCLR_B5["base_lr"] * batch / 256            # model_util.py:64-65


def simclr_steps(images, epochs, batch):
    return images * epochs // batch + 1                  # model_util.py:55-56


def simclr_cosine(lr, step, total):
    return lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))   # tf cosine_decay, alpha 0


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("ck") / "c.pt"))


def context(suite, ckpt, data_root, overrides=(), data_error=None):
    s = load_suite(suite, list(overrides))
    ctx = RunContext(suite_name=s.name, checkpoint=ckpt, subnets=[SubnetSpec(1.0), SubnetSpec(0.5)],
                     params=s.params, dataset=s.dataset, data_root=data_root, out_dir=data_root / "out",
                     device=torch.device("cpu"), data_error=data_error)
    return s.protocol_cls(), ctx


# -- semi-supervised: SimCLR appendix B.5 ----------------------------------------------------------
@pytest.mark.parametrize("suite", sorted(SIMCLR_EPOCHS))
def test_semi_suites_hand_torch_simclrs_fine_tuning(suite, ckpt, tmp_path):
    proto, ctx = context(suite, ckpt, tmp_path / "absent", data_error="dataset folder not found")
    described = proto.describe(ctx)
    assert set(described) == {"w1.0", "w0.5"}
    batch, epochs = SIMCLR_B5["batch_size"], SIMCLR_EPOCHS[suite]
    for d in described.values():
        opt = d["optimizer"]
        assert opt["type"] == "SGD" and opt["param_groups"]
        for group in opt["param_groups"]:       # every parameter alike, the new head included
            assert group["lr"] == pytest.approx(simclr_lr(batch), rel=1e-12)
            assert (group["momentum"], group["nesterov"], group["weight_decay"]) == \
                (SIMCLR_B5["momentum"], SIMCLR_B5["nesterov"], SIMCLR_B5["weight_decay"])
        assert sum(g["tensors"] for g in opt["param_groups"]) == d["trainable_tensors"]
        assert d["batch"]["global"] == batch and d["epochs"] == epochs
        assert d["schedule"]["steps"] == simclr_steps(SIMCLR_LABELLED[suite], epochs, batch)
        assert d["labelled_images"] == SIMCLR_LABELLED[suite]
        # one process: BatchNorm (not SyncBN) normalizes the whole batch, SimCLR's global BN over 4096
        assert d["norm_layers"] == ["BatchNorm2d"] and d["bn_batch"] == batch == d["bn_batch_published"]


def test_semi_global_bn_is_syncbn_across_cuda_processes_and_reported_per_process_otherwise(caplog):
    """run.py global_bn: one BN over the global batch; torch gives that only as SyncBatchNorm on CUDA."""
    from transfer.protocols.semi import SemiParams, bn_batch, prepare_model

    p = SemiParams(subset="simclr-1pct", batch_size=256)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    synced = prepare_model(copy.deepcopy(net), p, world=4, device=torch.device("cuda"), desc="t")
    assert [type(m).__name__ for m in synced] == ["Conv2d", "SyncBatchNorm"]
    assert bn_batch(p, 4, torch.device("cuda"))["bn_batch"] == 256
    with caplog.at_level("WARNING"):
        kept = prepare_model(copy.deepcopy(net), p, world=4, device=torch.device("cpu"), desc="t")
    assert [type(m).__name__ for m in kept] == ["Conv2d", "BatchNorm2d"]
    assert "normalizes each process's 64 images" in caplog.text
    info = bn_batch(p, 4, torch.device("cpu"))
    assert (info["bn_batch"], info["bn_batch_published"]) == (64, SIMCLR_B5["batch_size"])
    assert "64 images together here" in info["bn_batch_note"] and "4096" in info["bn_batch_note"]
    assert bn_batch(SemiParams(subset="balanced", label_fraction=0.1), 1, torch.device("cpu"))["bn_batch_note"] is None
    ctx = RunContext("imagenet-semi-1pct", None, [], p, None, Path("."), Path("."), checkpoint_digest="ab" * 32)
    caplog.clear()
    with caplog.at_level("WARNING"):
        warn_bn_batch(ctx, info)
    assert len(caplog.records) == 1 and "imagenet-semi-1pct on abababababab" in caplog.text


def simclr_center_crop_box(height, width, out=224, proportion=0.875):
    """data_util.py _compute_crop_shape + center_crop: (left, top, right, bottom) of the crop, before resizing."""
    aspect = out / out
    if aspect > width / height:
        crop_h, crop_w = round(proportion / aspect * width), round(proportion * width)
    else:
        crop_h, crop_w = round(proportion * height), round(proportion * aspect * height)
    top, left = (height - crop_h + 1) // 2, (width - crop_w + 1) // 2
    return left, top, left + crop_w, top + crop_h


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (331, 331), (640, 427), (257, 300)])
def test_semi_views_are_simclrs_bicubic_crops(size):
    """Evaluation: the central 0.875 of the shorter side resized bicubic to 224; training crops resized bicubic."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    image = Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy())
    data = load_suite("imagenet-semi-10pct").dataset
    got = T.Compose(data.eval_view())(image)
    want = image.crop(simclr_center_crop_box(size[1], size[0])).resize((224, 224), Image.BICUBIC)
    assert got.size == (224, 224) and got.tobytes() == want.tobytes()
    crop = data.train_transform((0.08, 1.0)).transforms[0]
    torch.manual_seed(1)
    top, left, h, w = T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
    torch.manual_seed(1)
    assert crop(image).tobytes() == image.crop((left, top, left + w, top + h)).resize((224, 224), Image.BICUBIC).tobytes()


def test_semi_fine_tuning_steps_as_simclr_with_zero_head_and_one_lr(ckpt, tmp_path):
    make_image_folder(tmp_path / "data", per_class=5, size=16, classes=2)    # 10 training images
    proto, ctx = context("imagenet-semi-1pct", ckpt, tmp_path / "data",
                         ["params.subset=balanced", "params.label_fraction=1.0", "params.batch_size=4",
                          "params.epochs=3", "params.workers=0", "params.eval_batch_size=8",
                          "dataset.resolution=16"])
    ctx.subnets = [SubnetSpec(0.5)]
    seen = []

    def hook(opt, args, kwargs):
        head = [p for g in opt.param_groups for p in g["params"] if p.shape[0] == 2]   # the 2-class logits layer
        seen.append(([g["lr"] for g in opt.param_groups], [g["nesterov"] for g in opt.param_groups],
                     [float(p.abs().sum()) for p in head]))

    handle = register_optimizer_step_pre_hook(hook)
    try:
        rows = list(proto.run(ctx))
    finally:
        handle.remove()
    total = simclr_steps(10, 3, 4)                        # 10 * 3 // 4 + 1 = 8 full batches streamed
    assert len(seen) == total
    for step, (lrs, nesterov, _) in enumerate(seen):
        assert lrs == pytest.approx([simclr_cosine(simclr_lr(4), step, total)] * len(lrs), rel=1e-9)
        assert all(nesterov)
    assert seen[0][2] and all(s == 0.0 for s in seen[0][2])   # zero-initialised logits layer
    assert ctx.info["global_batch"] == 4 and ctx.info["lr"] == pytest.approx(simclr_lr(4))
    assert ctx.info["bn_batch"] == 4 and ctx.info["bn_batch_published"] is None   # a balanced draw: not SimCLR's
    assert {r.metric for r in rows} >= {"top1", "top5"}


def test_semi_streams_full_global_batches_split_across_processes():
    from transfer.protocols.semi import StreamBatches

    # 10 images, global batch 4, 3 epochs: SimCLR's 10 * 3 // 4 + 1 = 8 steps, every one a full batch
    whole = list(StreamBatches(10, 4, simclr_steps(10, 3, 4), seed=0))
    assert len(whole) == 8 and all(len(b) == 4 for b in whole)
    flat = [i for b in whole for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))   # each epoch once
    ranks = [list(StreamBatches(10, 4, 8, seed=0, rank=r, world=2)) for r in (0, 1)]
    assert [sorted(a + b) for a, b in zip(*ranks)] == [sorted(b) for b in whole]              # shares of one batch


def test_a_global_batch_the_processes_cannot_split_is_refused():
    from pretrain.errors import ConfigError
    from transfer.protocols.semi import SemiParams, process_batch

    assert process_batch(SemiParams(batch_size=4096), 8) == 512
    with pytest.raises(ConfigError, match=r"params\.batch_size=4096: expected a multiple of the 3 processes"):
        process_batch(SemiParams(batch_size=4096), 3)


@pytest.mark.parametrize("name", sorted(SIMCLR_SHA256))
def test_simclr_subset_lists_are_pinned(name):
    shipped = REPO / "transfer" / "protocols" / "imagenet_subsets" / name
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == SIMCLR_SHA256[name]
    shared = REPO.parent / "shared" / "data" / "imagenet_subsets" / name
    if shared.is_file():
        assert hashlib.sha256(shared.read_bytes()).hexdigest() == SIMCLR_SHA256[name]


# -- linear evaluation ----------------------------------------------------------------------------
@pytest.mark.parametrize("suite", sorted(LINEAR))
def test_linear_suites_hand_torch_the_published_probe_optimizer(suite, ckpt, tmp_path):
    lr, batch, epochs, _, milestones, _, _, wd = LINEAR[suite]
    proto, ctx = context(suite, ckpt, tmp_path / "absent", data_error="dataset folder not found")
    for d in proto.describe(ctx).values():
        (group,) = d["optimizer"]["param_groups"]
        assert d["optimizer"]["type"] == "SGD"
        assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (lr, 0.9, wd, False)
        assert d["batch"]["global"] == batch and d["epochs"] == epochs
        # the schedule's shape is stepped below; the cadence and pick are run by the tests after it
        if milestones is not None:
            assert (d["schedule"]["milestones"], d["schedule"]["gamma"]) == (milestones, 0.1)


@pytest.mark.parametrize("suite", sorted(LINEAR))
def test_linear_suites_step_the_probe_lr_as_their_publishers(suite):
    """Every iteration's lr of the suite's probe optimizer, stepped through the whole schedule as ``run`` steps it,
    against the publisher's formula: MoCo main_lincls.py ``adjust_learning_rate`` (x 0.1 at each milestone epoch
    reached, per epoch) or SlimCLR utils/lr_scheduler.py ``'step'`` (the same) and ``'cos'`` (per iteration
    0.5 * lr * (1 + cos(pi * T / (epochs * iterations per epoch))), T counting from 0; no warm-up)."""
    from transfer.protocols.linear import ProbeOptimizer

    lr, _, epochs, schedule, milestones, *_ = LINEAR[suite]
    probe, iters = torch.nn.Linear(2, 2), 3
    opt = ProbeOptimizer(probe, load_suite(suite).params, iters)
    seen, expected = [], []
    for epoch in range(epochs):
        for i in range(iters):
            seen.append(opt.lr)
            if schedule == "step":
                expected.append(lr * 0.1 ** sum(epoch >= m for m in milestones))
            else:
                expected.append(0.5 * lr * (1 + math.cos(math.pi * (epoch * iters + i) / (epochs * iters))))
            opt.step(probe(torch.ones(1, 2)).sum())
        opt.end_epoch()
    assert seen == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("suite", ["imagenet-linear", "imagenet-linear-slimclr-simclr"])
def test_linear_suites_train_the_probe_on_a_frozen_backbone_in_eval_mode(suite, ckpt, tmp_path):
    """moco main_lincls.py:439 and SlimCLR main_ssl_lincls.py:99-102, :445: the backbone in eval mode, no gradient.
    Every BatchNorm2d call of a real (tiny) run is seen through torch's global forward hook."""
    make_image_folder(tmp_path / "data", per_class=4, size=16, classes=2)
    proto, ctx = context(suite, ckpt, tmp_path / "data",
                         ["params.epochs=1", "params.batch_size=4", "params.workers=0", "params.eval_batch_size=8",
                          "dataset.resolution=16", "dataset.resize=16"])
    calls = []

    def record(module, args):
        if isinstance(module, torch.nn.BatchNorm2d):
            calls.append((module.training, torch.is_grad_enabled()))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        list(proto.run(ctx))
    finally:
        handle.remove()
    assert calls and not any(training for training, _ in calls) and not any(grad for _, grad in calls)


def moco_probe_loss(logits, targets):
    """moco main_lincls.py:297: one cross-entropy per head (each width's own probe), summed."""
    return sum(F.cross_entropy(l, targets) for l in logits)


def slimclr_probe_loss(logits, targets):
    """SlimCLR main_ssl_lincls.py:464-484 with inplace_distill and inplace_distill_mixed (utils/loss_ops.py:23-27):
    the full width's cross-entropy; every smaller width (CE + soft CE to the full width's detached softmax) / 2."""
    full = logits[0]
    soft = F.softmax(full.detach(), dim=1)
    loss = F.cross_entropy(full, targets)
    for l in logits[1:]:
        loss = loss + (F.cross_entropy(l, targets) - (soft * F.log_softmax(l, dim=1)).sum(1).mean()) / 2
    return loss


PROBE_LOSS = {"imagenet-linear": moco_probe_loss, "imagenet-linear-fast": moco_probe_loss,
              "imagenet-linear-slimclr-mocov2": slimclr_probe_loss, "imagenet-linear-slimclr-mocov3": slimclr_probe_loss,
              "imagenet-linear-slimclr-simclr": slimclr_probe_loss}


@pytest.mark.parametrize("suite", sorted(PROBE_LOSS))
def test_linear_suites_train_the_probe_on_their_publishers_loss(suite):
    """The loss each suite's probe trains on (``probe_criterion``, what ``run`` calls), on hand-built logits."""
    from transfer.protocols.linear import probe_criterion

    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(6, 5, generator=g, requires_grad=True) for _ in range(3)]
    targets = torch.randint(0, 5, (6,), generator=g)
    subnets = [SubnetSpec(1.0), SubnetSpec(0.5), SubnetSpec(0.25)]
    got = probe_criterion(load_suite(suite).params, subnets)(logits, targets)
    assert got.item() == pytest.approx(PROBE_LOSS[suite](logits, targets).item(), rel=1e-6)


def upstream_slimclr_pick(history, epochs, eval_freq=2):
    """main_ssl_lincls.py:253-265: every width at the evaluated epoch of the best full-width top-1 (ties: later)."""
    best, best_info = 0.0, None
    for epoch in range(epochs):
        if (epoch + 1) % eval_freq == 0 or epoch == epochs - 1:
            acc1 = history[epoch]["w1.0"][0]
            if best <= acc1:
                best, best_info = acc1, (epoch, {w: v for w, v in history[epoch].items()})
    return best_info


def upstream_moco_best(history, width):
    """main_lincls.py:397-401 per width: validate every epoch, keep the max top-1 (ties: earlier)."""
    best = 0.0
    for epoch in sorted(history):
        best = max(history[epoch][width][0], best)
    return best


def test_linear_picks_results_as_upstream():
    from transfer.protocols.linear import pick_results

    # (top-1, top-5) per evaluated epoch; full width ties at epochs 3 and 5, w0.5 peaks at epoch 2
    history = {e: {"w1.0": (a, a + 10), "w0.5": (b, b + 10)}
               for e, (a, b) in enumerate([(10, 5), (40, 30), (50, 60), (70, 20), (60, 25), (70, 15)])}
    evaluated = {e: history[e] for e in (1, 3, 5)}       # eval_freq 2 over 6 epochs
    epoch, info = upstream_slimclr_pick(history, 6)
    picked = pick_results(evaluated, "best-full-width", teacher="w1.0")
    assert picked == {w: {"epoch": epoch, "top1": info[w][0], "top5": info[w][1]} for w in info}
    moco = pick_results(history, "best", teacher="w1.0")
    assert {w: p["top1"] for w, p in moco.items()} == {w: upstream_moco_best(history, w) for w in ("w1.0", "w0.5")}
    assert moco["w0.5"] == {"epoch": 2, "top1": 60, "top5": 70} and moco["w1.0"]["epoch"] == 3
    assert pick_results(evaluated, "last", teacher="w1.0")["w0.5"]["epoch"] == 5


@pytest.mark.parametrize("suite", sorted(LINEAR))
def test_linear_suites_evaluate_and_pick_as_their_publishers(suite):
    """The suite's own cadence and pick, over a whole schedule of made-up accuracies (ties included), against the
    publisher's loop: MoCo validates every epoch and keeps each head's best; SlimCLR evaluates at its eval_freq and
    the last epoch, and reports every width at the full width's best."""
    from transfer.protocols.linear import evaluated_epochs, pick_results

    *_, every, pick, _ = LINEAR[suite]
    p = load_suite(suite).params
    accuracies = torch.randint(0, 30, (p.epochs, 2), generator=torch.Generator().manual_seed(0)).tolist()
    history = {e: {"w1.0": (a, a + 1), "w0.5": (b, b + 1)} for e, (a, b) in enumerate(accuracies)}   # 0-based
    evaluated = {e - 1: history[e - 1] for e in evaluated_epochs(p)}                             # 1-based there
    picked = pick_results(evaluated, p.select, teacher="w1.0")
    if pick == "best":
        assert len(evaluated) == p.epochs
        assert {w: v["top1"] for w, v in picked.items()} == {w: upstream_moco_best(history, w) for w in history[0]}
    else:
        epoch, info = upstream_slimclr_pick(history, p.epochs, eval_freq=every)
        assert picked == {w: {"epoch": epoch, "top1": info[w][0], "top5": info[w][1]} for w in info}


def test_linear_fast_evaluates_on_its_cadence_and_stores_the_pick_and_the_last(ckpt, tmp_path):
    make_image_folder(tmp_path / "data", per_class=6, size=16, classes=2)
    cls = get_protocol("linear-fast")
    params = {"epochs": 5, "batch_size": 4, "lr": 0.5, "milestones": [3], "workers": 0, "eval_batch_size": 8,
              "evaluate_every": 2, "select": "best-full-width"}
    ctx = RunContext(suite_name="t", checkpoint=ckpt, subnets=[SubnetSpec(1.0), SubnetSpec(0.5)],
                     params=from_dict(cls.Params, params, "test"),
                     dataset=from_dict(cls.Dataset, {"resolution": 16, "resize": 16}, "test"),
                     data_root=tmp_path / "data", out_dir=tmp_path / "out", device=torch.device("cpu"),
                     cache_dir=tmp_path / "cache")
    rows = {(r.subnet, r.metric): r.value for r in cls().run(ctx)}
    assert {m for _, m in rows} >= {"top1", "top5", "top1_last", "top5_last"}
    assert ctx.info["evaluated_epochs"] == [2, 4, 5]          # (epoch + 1) % 2 == 0, and the last (1-based)
    picked = ctx.info["picked_epoch"]
    assert set(picked) == {"w1.0", "w0.5"} and len(set(picked.values())) == 1   # the full width's best epoch
    assert set(picked.values()) <= {2, 4, 5}


# -- kNN -------------------------------------------------------------------------------------------
def dino_knn_scores(train, train_labels, test, num_classes, k=20, temperature=0.07):
    """dino eval_knn.py:124-160 knn_classifier: cosine top-k, weights exp(sim / T), votes summed per class
    (k = 20 among nb_knn, T = 0.07: eval_knn.py:194-197), written out row by row."""
    train, test = F.normalize(train, dim=1), F.normalize(test, dim=1)
    rows = []
    for t in test:
        sims = [(float(t @ x), int(y)) for x, y in zip(train, train_labels)]
        top = sorted(sims, key=lambda s: -s[0])[:k]
        votes = [0.0] * num_classes
        for sim, y in top:
            votes[y] += math.exp(sim / temperature)
        rows.append(votes)
    return torch.tensor(rows)


def test_knn_suite_resizes_bicubic_and_votes_as_dino(ckpt, tmp_path):
    proto, ctx = context("imagenet-knn", ckpt, tmp_path / "absent", data_error="dataset folder not found")
    resize, crop = ctx.dataset.eval_transform().transforms[:2]
    assert isinstance(resize, T.Resize) and resize.size == 256
    assert resize.interpolation == T.InterpolationMode.BICUBIC          # eval_knn.py:33 interpolation=3
    assert isinstance(crop, T.CenterCrop) and crop.size == (224, 224)
    # the vote the suite's params give, against DINO's: 30 training points, so k = 20 leaves some out
    from transfer.classify.knn import knn_predict

    g = torch.Generator().manual_seed(0)
    train, labels = torch.randn(30, 8, generator=g), torch.randint(0, 4, (30,), generator=g)
    test = torch.randn(5, 8, generator=g)
    got = knn_predict(train, labels, test, 4, k=ctx.params.k, temperature=ctx.params.temperature)
    assert torch.allclose(got, dino_knn_scores(train, labels, test, 4), rtol=1e-4)
