"""MMSeg export: every width loads into MMSeg's ResNet (or SlimBenchResNet) with no missing keys."""
import pytest
import torch
from mmengine.config import Config

from pretrain.models.resnet import SlimResNet
from pretrain.checkpoints.extract import extract
from pretrain.models.spec import SubnetSpec
from transfer.segmentation import backbone as _registers_backbone  # noqa: F401
from transfer.segmentation.config import base_config, model_config
from transfer.segmentation.export import PREFIX, export_mmseg

from ..conftest import randomize_bn

WIDTHS = [1.0, 0.75, 0.5, 0.25]
UNDILATED = {"backbone.strides": [1, 2, 2, 2], "backbone.dilations": [1, 1, 1, 1]}


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {d: randomize_bn(SlimResNet(d, widths=WIDTHS)).eval() for d in (18, 50)}


def build_backbone(cfg: Config):
    from mmseg.registry import MODELS

    net = MODELS.build(cfg.model.backbone)
    net.eval()   # MMSeg's ResNet.train() returns None, so no chaining
    return net


def load_strict(net, path):
    """MMEngine's checkpoint loader with strict=True: raises on any missing or unexpected key."""
    from mmengine.runner.checkpoint import load_checkpoint

    load_checkpoint(net, str(path), map_location="cpu", strict=True, revise_keys=[(rf"^{PREFIX}", "")])


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("width", WIDTHS)
def test_every_width_loads_into_mmseg_resnet(nets, tmp_path, depth, width):
    plain = extract(nets[depth], f"w{width}")
    path = export_mmseg(plain, tmp_path / "backbone.pth")
    saved = torch.load(path, weights_only=True)   # plain tensors: MMEngine reads it under torch's default
    assert all(k.startswith(PREFIX) for k in saved["state_dict"])
    cfg = model_config(base_config("upernet"), depth, "imagenet", SubnetSpec(width), num_classes=5)
    assert cfg.model.backbone.type == "ResNet"
    net = build_backbone(cfg)
    load_strict(net, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats, ref = net(x), plain.forward_stages(x)
    for f, name in zip(feats, ["res2", "res3", "res4", "res5"]):
        torch.testing.assert_close(f, ref[name])


@pytest.mark.parametrize("spec,stem", [((1.0, (1, 1, 1, 1)), "imagenet"), ((0.5, (2, 1, 2, 1)), "imagenet"),
                                       ((0.25, None), "small")])
def test_depth_variants_and_small_stems_load_into_slimbench_resnet(tmp_path, spec, stem):
    torch.manual_seed(0)
    model = randomize_bn(SlimResNet(18, widths=WIDTHS, stem=stem)).eval()
    plain = extract(model, SubnetSpec(*spec))
    path = export_mmseg(plain, tmp_path / "backbone.pth")
    cfg = model_config(base_config("fcn"), 18, stem, SubnetSpec(*spec), num_classes=5, overrides=UNDILATED)
    assert cfg.model.backbone.type == "SlimBenchResNet"
    net = build_backbone(cfg)
    load_strict(net, path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats, ref = net(x), plain.forward_stages(x)
    for f, name in zip(feats, ["res2", "res3", "res4", "res5"]):
        torch.testing.assert_close(f, ref[name])


@pytest.mark.parametrize("depth", [18, 50])
def test_dilated_slimbench_resnet_matches_mmseg_resnet(nets, tmp_path, depth):
    """The FCN (output stride 8) layout: both backbones give the same features from one export."""
    spec = SubnetSpec(0.5)
    path = export_mmseg(extract(nets[depth], spec), tmp_path / "backbone.pth")
    cfg = model_config(base_config("fcn"), depth, "imagenet", spec, num_classes=5)
    mmseg_net = build_backbone(cfg)
    ours_cfg = cfg.copy()
    ours_cfg.model.backbone = dict(type="SlimBenchResNet", depth=depth, width=0.5,
                                   **{k: cfg.model.backbone[k] for k in ("strides", "dilations", "contract_dilation")})
    ours = build_backbone(ours_cfg)
    load_strict(mmseg_net, path)
    load_strict(ours, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = mmseg_net(x), ours(x)
    assert [t.shape[-1] for t in a] == [16, 8, 8, 8]
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)


def test_classifier_is_not_exported(tmp_path):
    model = SlimResNet(18, widths=[1.0, 0.5], stem="small", num_classes=10).eval()
    saved = torch.load(export_mmseg(extract(model, "w0.5"), tmp_path / "b.pth"), weights_only=True)
    assert not any(k.startswith(PREFIX + "fc.") for k in saved["state_dict"])
    assert saved["meta"]["slimbench_plan"]["stage_channels"] == [32, 64, 128, 256]
