"""The Detectron2 exporter: MoCo key names, the pickle format, and exact loading through DetectionCheckpointer."""
import pickle

import numpy as np
import pytest
import torch

from pretrain.checkpoints.format import Checkpoint
from pretrain.models.resnet import SlimResNet
from pretrain.checkpoints.extract import extract
from tests.conftest import randomize_bn
from transfer.detection.export import detectron2_key, export_detectron2
from transfer.exporters import get_exporter


@pytest.mark.parametrize("tv, d2", [
    ("conv1.weight", "stem.conv1.weight"),
    ("bn1.running_var", "stem.conv1.norm.running_var"),
    ("layer1.0.conv3.weight", "res2.0.conv3.weight"),
    ("layer2.1.bn2.bias", "res3.1.conv2.norm.bias"),
    ("layer4.0.downsample.0.weight", "res5.0.shortcut.weight"),
    ("layer3.0.downsample.1.num_batches_tracked", "res4.0.shortcut.norm.num_batches_tracked"),
])
def test_keys_follow_the_moco_convention(tv, d2):
    assert detectron2_key(tv) == d2


def _checkpoint(depth, stem="imagenet", widths=(1.0, 0.75, 0.5, 0.25)):
    torch.manual_seed(depth)
    return Checkpoint.from_model(randomize_bn(SlimResNet(depth, widths=list(widths), stem=stem)))


def test_pickle_holds_numpy_arrays_and_matching_heuristics(tmp_path):
    plain = extract(_checkpoint(18, "small", (1.0, 0.5)), "w0.5")
    out = get_exporter("detectron2")(plain, tmp_path / "w0.5.pkl")
    data = pickle.loads(out.read_bytes())
    assert data["__author__"] == "SlimBench" and data["matching_heuristics"] is True
    sd = plain.state_dict()
    assert len(data["model"]) == len(sd)
    assert all(isinstance(v, np.ndarray) for v in data["model"].values())
    np.testing.assert_array_equal(data["model"]["res3.0.conv1.norm.running_mean"],
                                  sd["layer2.0.bn1.running_mean"].numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["w0.5.pkl"]   # atomic write leaves no temporary


def _load(ckpt, spec, base, tmp_path):
    from transfer.detection.config import build_config  # Detectron2 through the compat layer first
    from transfer.detection.weights import load_backbone
    from detectron2.modeling import build_model

    plain = extract(ckpt, spec)
    pkl = export_detectron2(plain, tmp_path / f"{spec}.pkl")
    cfg = build_config(base, spec, ckpt.arch, weights=pkl, num_classes=10)
    model = build_model(cfg).eval()
    report = load_backbone(model, pkl)
    return plain, model, report


@pytest.mark.slow
def test_every_r50_width_loads_with_no_missing_or_unexpected_backbone_key(tmp_path):
    ckpt = _checkpoint(50)
    cases = [("faster_rcnn_R_50_C4_voc_24k", s) for s in ("w1.0", "w0.75", "w0.5", "w0.25")]
    for base, spec in cases + [("mask_rcnn_R_50_FPN_1x", "w0.5")]:
        plain, model, report = _load(ckpt, spec, base, tmp_path)
        assert report.missing_backbone == [] and report.unexpected == () and report.incorrect_shapes == ()
        assert report.loaded == len(plain.state_dict())   # every exported tensor found its place
        bottom_up = model.backbone.bottom_up if hasattr(model.backbone, "bottom_up") else model.backbone
        torch.testing.assert_close(bottom_up.stem.conv1.weight, plain.conv1.weight)
        torch.testing.assert_close(bottom_up.res3[1].conv2.norm.running_var, plain.layer2[1].bn2.running_var)
        res5 = model.roi_heads.res5 if "C4" in base else bottom_up.res5
        torch.testing.assert_close(res5[0].shortcut.norm.weight, plain.layer4[0].downsample[1].weight)


ALL_WIDTHS = ("w1.0", "w0.75", "w0.5", "w0.25")


@pytest.mark.parametrize("depth, stem, base, specs", [
    (18, "small", "mask_rcnn_R_50_FPN_1x", ALL_WIDTHS), (18, "imagenet", "faster_rcnn_R_50_C4_voc_24k", ALL_WIDTHS),
    (34, "imagenet", "mask_rcnn_R_50_FPN_1x", ("w1.0", "w0.25")), (34, "small", "faster_rcnn_R_50_C4_voc_24k", ("w0.5",)),
])
def test_r18_r34_widths_load_and_compute_the_extracted_network(depth, stem, base, specs, tmp_path):
    ckpt = _checkpoint(depth, stem)
    x = torch.randn(1, 3, 64, 64)
    for spec in specs:
        plain, model, report = _load(ckpt, spec, base, tmp_path)
        assert report.missing_backbone == [] and report.unexpected == () and report.incorrect_shapes == ()
        assert report.loaded == len(plain.state_dict())
        bottom_up = model.backbone.bottom_up if hasattr(model.backbone, "bottom_up") else model.backbone
        with torch.no_grad():
            ours, theirs = bottom_up(x), plain.forward_stages(x)
        for name, feature in ours.items():   # same network: same features, stage by stage
            torch.testing.assert_close(feature, theirs[name], rtol=1e-4, atol=1e-4)


def test_depth_variant_loads_into_the_slimbench_backbone(tmp_path):
    ckpt = _checkpoint(18, "small", (1.0, 0.5))
    plain, model, report = _load(ckpt, "w0.5-d1.1.1.1", "mask_rcnn_R_50_FPN_1x", tmp_path)
    assert report.missing_backbone == [] and report.unexpected == ()
    assert len(model.backbone.bottom_up.res3) == 1


def test_a_file_of_another_subnetwork_is_refused(tmp_path):
    from transfer.detection.config import build_config
    from transfer.detection.weights import BackboneLoadError, load_backbone
    from detectron2.modeling import build_model

    ckpt = _checkpoint(18, "small", (1.0, 0.5))
    pkl = export_detectron2(extract(ckpt, "w0.5"), tmp_path / "w0.5.pkl")
    model = build_model(build_config("mask_rcnn_R_50_FPN_1x", "w1.0", ckpt.arch, num_classes=10))
    with pytest.raises(BackboneLoadError, match="wrong shape"):
        load_backbone(model, pkl)
    with pytest.raises(BackboneLoadError, match="no such file"):
        load_backbone(model, tmp_path / "absent.pkl")
