"""Every classification, complexity and latency protocol run through the contract on tiny real data."""
import dataclasses

import pytest
import torch

from pretrain.checkpoints.format import load_checkpoint
from pretrain.models.complexity import complexity_table
from pretrain.config import from_dict
from pretrain.errors import ConfigError, DataError
from pretrain.models.spec import SubnetSpec
from transfer.classify.data import ClassificationData, targets_of
from transfer.features import FeatureCache, cached_features, extract_features
from transfer.protocols.base import RunContext, get_protocol
from transfer.protocols.linear import feature_data_digest
from transfer.protocols.semi import label_subset

from .conftest import make_checkpoint, make_image_folder

SUBNETS = [SubnetSpec(1.0), SubnetSpec(0.5)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    make_image_folder(root / "data", per_class=8, size=16, classes=3)
    return root, load_checkpoint(make_checkpoint(root / "ckpt.pt"))


def context(tiny, protocol, params=None, dataset=None, **kw):
    root, ckpt = tiny
    cls = get_protocol(protocol)
    return cls(), RunContext(
        suite_name=f"test-{protocol}", checkpoint=ckpt, subnets=SUBNETS,
        params=from_dict(cls.Params, params or {}, "test"),
        dataset=from_dict(cls.Dataset, dataset or {}, "test"), data_root=root / "data", out_dir=root / "out",
        device=torch.device("cpu"), checkpoint_digest="ab" * 32, cache_dir=root / "cache", **kw)


def by_key(results):
    return {(r.subnet, r.metric): r.value for r in results}


DATA = {"kind": "imagefolder", "resolution": 16, "resize": 16}


def test_linear_probe_on_separable_colours(tiny):
    protocol, ctx = context(tiny, "linear", {"epochs": 10, "batch_size": 8, "lr": 1.0, "milestones": [8],
                                             "workers": 0, "rrc_scale": [0.5, 1.0]}, DATA)
    res = by_key(protocol.run(ctx))
    assert res[("w1.0", "top1")] == 100.0 and res[("w0.5", "top1")] >= 90.0
    assert res[("w1.0", "wall_time_s")] > 0 and set(m for _, m in res) == {"top1", "top5", "top1_last", "top5_last", "wall_time_s"}


def test_linear_fast_caches_features_and_matches_fresh_extraction(tiny):
    params = {"epochs": 10, "batch_size": 8, "lr": 0.5, "milestones": [8], "workers": 0, "feature_norm": True}
    protocol, ctx = context(tiny, "linear-fast", params, DATA)
    res = by_key(protocol.run(ctx))
    assert res[("w1.0", "top1")] == 100.0 and res[("w0.5", "top1")] >= 90.0
    cache = FeatureCache(ctx.cache_dir, ctx.checkpoint_digest, feature_data_digest(ctx))
    cached, labels = cache.load("w0.5", "val")
    assert cached.shape == (24, 256) and labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert cached.dtype == torch.float32   # small: kept exact (float16 only above HALF_ABOVE_BYTES)
    from pretrain.checkpoints.extract import extract
    from torch.utils.data import DataLoader
    val = ctx.dataset.split(ctx.data_root, "val", ctx.dataset.eval_transform())
    fresh, _ = extract_features({"w0.5": extract(ctx.checkpoint, "w0.5")}, DataLoader(val, batch_size=5),
                                torch.device("cpu"))
    assert torch.allclose(fresh["w0.5"].float(), cached.float())
    # a second run reads the cache instead of the images
    again, _ = cached_features({"w0.5": None}, lambda: pytest.fail("extracted again"), "val", cache,
                               torch.device("cpu"))
    # the same data block read from another folder is other data: its own cache entry
    other = dataclasses.replace(ctx, data_root=ctx.data_root.parent / "copy")
    assert feature_data_digest(other) != feature_data_digest(ctx)
    assert torch.equal(again["w0.5"], cached)


def test_knn_top1(tiny):
    protocol, ctx = context(tiny, "knn", {"k": 5, "workers": 0}, DATA)
    res = by_key(protocol.run(ctx))
    assert res[("w1.0", "top1")] == 100.0 and res[("w0.5", "top1")] == 100.0


def test_feature_protocols_build_each_subnet_once_and_none_when_cached(tiny, monkeypatch, tmp_path):
    import transfer.classify.subnets as subnets
    import transfer.protocols.linear as linear
    built = []
    real = subnets.extract_subnet

    def counting(ctx, spec):
        built.append(str(spec))
        return real(ctx, spec)

    monkeypatch.setattr(linear, "extract_subnet", counting)
    specs = [SubnetSpec(1.0), SubnetSpec.parse("w0.5-d1.1.1.1")]   # the depth variant is BN-calibrated
    params = {"epochs": 2, "batch_size": 8, "milestones": [1], "workers": 0}
    protocol, ctx = context(tiny, "linear-fast", params, DATA)
    ctx = dataclasses.replace(ctx, subnets=specs, cache_dir=tmp_path)
    list(protocol.run(ctx))
    assert built == ["w1.0", "w0.5-d1.1.1.1"]   # once for both splits, not once per split
    # kNN resizes bicubic (DINO) unless told otherwise; with linear-fast's block it reads the same features
    knn, kctx = context(tiny, "knn", {"k": 5, "workers": 0}, {**DATA, "interpolation": "bilinear"})
    kctx = dataclasses.replace(kctx, subnets=specs, cache_dir=tmp_path)
    res = by_key(knn.run(kctx))
    assert built == ["w1.0", "w0.5-d1.1.1.1"] and ("w0.5-d1.1.1.1", "top1") in res   # all from the cache


def test_depth_variant_of_a_stored_width_is_calibrated_on_training_images(tiny):
    from pretrain.checkpoints.extract import calibrate_bn, extract
    from transfer.classify.subnets import extract_subnet
    _, ctx = context(tiny, "knn", {"k": 5, "workers": 0}, DATA)
    spec = SubnetSpec.parse("w1.0-d1.1.1.1")
    net = extract_subnet(ctx, spec)
    reference = extract(ctx.checkpoint, spec)   # the stored (full-depth) statistics
    stored = reference.layer3[0].bn1.running_mean.clone()
    train = ctx.dataset.split(ctx.data_root, "train", ctx.dataset.eval_transform())
    calibrate_bn(reference, [torch.stack([train[i][0] for i in range(len(train))])], 1)
    assert torch.allclose(net.layer3[0].bn1.running_mean, reference.layer3[0].bn1.running_mean, atol=1e-5)
    assert not torch.allclose(net.layer3[0].bn1.running_mean, stored, atol=1e-3)


def test_unstored_width_is_calibrated_on_training_images(tiny):
    from pretrain.checkpoints.extract import calibrate_bn, extract
    from transfer.classify.subnets import extract_subnet
    _, ctx = context(tiny, "knn", {"k": 5, "workers": 0}, DATA)
    net = extract_subnet(ctx, SubnetSpec(0.75))
    assert net.num_features == 384
    reference = extract(ctx.checkpoint, "w0.75", calib_loader=[torch.zeros(1, 3, 16, 16)])  # any stats
    train = ctx.dataset.split(ctx.data_root, "train", ctx.dataset.eval_transform())
    calibrate_bn(reference, [torch.stack([train[i][0] for i in range(len(train))])], 1)
    # cumulative averages over every training image: the same statistics in any batch order
    assert torch.allclose(net.bn1.running_mean, reference.bn1.running_mean, atol=1e-5)
    protocol, ctx = context(tiny, "complexity", {"resolution": 32})
    ctx.subnets = [SubnetSpec(0.75)]
    (params, macs) = list(protocol.run(ctx))
    assert params.value == complexity_table(ctx.checkpoint.build_model(), ["w0.75"], 32)[0][1].params


@pytest.mark.slow
def test_semi_fine_tunes_on_a_class_balanced_subset(tiny):
    # one batch holds every class: BatchNorm in train mode would erase a single-colour batch's colour
    params = {"subset": "balanced", "label_fraction": 0.5, "epochs": 15, "batch_size": 12, "base_lr": 0.5,
              "workers": 0, "rrc_scale": [0.5, 1.0]}
    protocol, ctx = context(tiny, "semi", params, {"kind": "imagefolder", "resolution": 16})   # SimCLR's view
    res = by_key(protocol.run(ctx))
    assert res[("w1.0", "top1")] >= 75.0 and res[("w0.5", "top1")] >= 75.0  # chance is 33%
    assert ctx.info["subset_size"] == 12 and len(ctx.info["subset_digest"]) == 64


def test_label_subset_seeded_balanced_and_from_file(tiny, tmp_path):
    root, _ = tiny
    data = ClassificationData(resolution=16)
    train = data.split(root / "data", "train", None)
    idx, digest = label_subset(train, 0.25, seed=3)
    assert label_subset(train, 0.25, seed=3) == (idx, digest)
    assert label_subset(train, 0.25, seed=4)[1] != digest
    assert targets_of(train)[idx].bincount().tolist() == [2, 2, 2]
    names = ["train_0_1.png", "train_2_5.png"]
    (tmp_path / "subset.txt").write_text("class0/train_0_1.png\ntrain_2_5.png\n")
    idx, digest_file = label_subset(train, 0.01, seed=0, subset_file=tmp_path / "subset.txt")
    assert [train.samples[i][0].split("/")[-1] for i in idx] == names
    (tmp_path / "bad.txt").write_text("nope.png\n")
    with pytest.raises(DataError, match="1 of 1 listed images"):
        label_subset(train, 0.01, seed=0, subset_file=tmp_path / "bad.txt")


def test_complexity_equals_pretrain_counts(tiny):
    protocol, ctx = context(tiny, "complexity", {"resolution": 32})
    res = by_key(protocol.run(ctx))
    for spec, c in complexity_table(ctx.checkpoint.build_model(), SUBNETS, 32):
        assert res[(str(spec), "params")] == c.params and res[(str(spec), "macs")] == c.macs
    assert res[("w1.0", "macs")] > 3 * res[("w0.5", "macs")]


def test_latency_reports_positive_times_and_settings(tiny):
    protocol, ctx = context(tiny, "latency", {"batch_size": 4, "repeats": 3, "warmup": 1})
    res = by_key(protocol.run(ctx))
    assert res[("w0.5", "latency_ms")] > 0 and res[("w1.0", "throughput_img_s")] > 0
    assert ctx.info["resolution"] == 32 and ctx.info["dtype"] == "float32" and ctx.info["threads"] >= 1


def test_dataset_block_errors(tmp_path):
    with pytest.raises(ConfigError, match="dataset.kind"):
        from_dict(ClassificationData, {"kind": "cifar"}, "s.yaml", prefix="dataset.")
    with pytest.raises(DataError, match=r"train/CLASS/IMAGE"):
        ClassificationData().check(tmp_path)
    assert dataclasses.asdict(ClassificationData())["resolution"] == 224


def test_a_slimmable_probe_is_one_weight_each_width_reading_its_leading_columns():
    from transfer.classify.probe import build_probe

    torch.manual_seed(0)
    probe = build_probe("slimmable", [8, 4, 2], num_classes=3)
    feats = [torch.randn(5, d) for d in (8, 4, 2)]
    w, b = probe.linear.weight.detach(), probe.linear.bias.detach()
    for f, out in zip(feats, probe(feats)):   # upstream SlimmableLinear: x @ W[:, :in]^T + b
        assert torch.allclose(out, f @ w[:, : f.shape[1]].T + b)
    assert sum(p.numel() for p in probe.parameters()) == 8 * 3 + 3
    switchable = build_probe("switchable", [8, 4, 2], num_classes=3)
    assert sum(p.numel() for p in switchable.parameters()) == (8 + 4 + 2) * 3 + 3 * 3


@pytest.mark.parametrize("protocol_name", ["linear-fast", "linear"])
def test_linear_protocols_train_a_slimmable_probe_when_asked(tiny, protocol_name):
    params = {"epochs": 10, "batch_size": 8, "lr": 0.5, "milestones": [8], "workers": 0, "feature_norm": True,
              "probe": "slimmable"}
    if protocol_name == "linear":
        params["rrc_scale"] = [0.5, 1.0]
    protocol, ctx = context(tiny, protocol_name, params, DATA)
    described = protocol.describe(ctx)["w0.5"]["probe"]
    assert described["kind"] == "slimmable" and described["shares_weight"].startswith("the leading 256 of 512")
    res = by_key(protocol.run(ctx))
    assert res[("w1.0", "top1")] >= 90.0 and res[("w0.5", "top1")] >= 90.0
