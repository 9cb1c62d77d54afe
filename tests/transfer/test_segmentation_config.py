"""The width-aware config builder: channels, heads, norm, pretrained file, and a config MMSeg reruns."""
import pytest
from mmengine.config import Config

from pretrain.errors import ConfigError
from pretrain.models.resnet import plan_resnet
from pretrain.models.spec import SubnetSpec
from transfer.segmentation import backbone as _registers_backbone  # noqa: F401
from transfer.segmentation.compat import import_mmseg
from transfer.segmentation.config import base_config, mmseg_resnet_fits, model_config, runner_config
from transfer.segmentation.schedule import Schedule


def test_fcn_width_half_resnet50(tmp_path):
    cfg = model_config(base_config("fcn"), 50, "imagenet", SubnetSpec(0.5), num_classes=21,
                       pretrained=tmp_path / "b.pth")
    bb = cfg.model.backbone
    assert (bb.type, bb.depth, bb.stem_channels, bb.base_channels) == ("ResNet", 50, 32, 32)
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=str(tmp_path / "b.pth"), prefix="backbone.")
    assert (bb.dilations, bb.strides) == ([1, 1, 2, 4], [1, 2, 1, 1])   # the d8 layout of the base config
    assert (cfg.model.decode_head.in_channels, cfg.model.auxiliary_head.in_channels) == (1024, 512)
    assert cfg.model.decode_head.channels == 512            # head widths stay the recipe's
    for part in (bb, cfg.model.decode_head, cfg.model.auxiliary_head):
        assert part.norm_cfg == dict(type="BN", requires_grad=True)
    assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 21
    assert "pretrained" not in cfg.model


@pytest.mark.parametrize("width,expected", [(1.0, [256, 512, 1024, 2048]), (0.25, [64, 128, 256, 512])])
def test_upernet_in_channels_follow_the_width_and_syncbn_when_distributed(width, expected):
    cfg = model_config(base_config("upernet"), 50, "imagenet", SubnetSpec(width), num_classes=150, distributed=True)
    assert cfg.model.decode_head.in_channels == expected
    assert cfg.model.auxiliary_head.in_channels == expected[2]
    for part in (cfg.model.backbone, cfg.model.decode_head, cfg.model.auxiliary_head):
        assert part.norm_cfg["type"] == "SyncBN"


def test_networks_mmseg_resnet_cannot_express_use_slimbench_resnet():
    depth_variant = model_config(base_config("fcn"), 50, "imagenet", SubnetSpec(0.5, (1, 2, 3, 1)), num_classes=3)
    bb = depth_variant.model.backbone
    assert (bb.type, bb.blocks, bb.width, bb.stem) == ("SlimBenchResNet", [1, 2, 3, 1], 0.5, "imagenet")
    assert (bb.dilations, bb.contract_dilation) == ([1, 1, 2, 4], True)   # layout carried over
    assert "style" not in bb and "stem_channels" not in bb
    small = model_config(base_config("fcn"), 18, "small", SubnetSpec(1.0), num_classes=3).model.backbone
    assert (small.type, small.stem, small.blocks) == ("SlimBenchResNet", "small", None)
    # int(64*0.3)*2**s*4 differs from int(256*2**s*0.3) in later stages: MMSeg's ResNet would mis-size them
    assert not mmseg_resnet_fits(plan_resnet(50, 0.3), 50, 0.3, True)
    assert mmseg_resnet_fits(plan_resnet(50, 0.75), 50, 0.75, True)


def test_overrides_apply_before_sizing():
    cfg = model_config(base_config("fcn"), 18, "imagenet", SubnetSpec(0.5), num_classes=3,
                       overrides={"decode_head.channels": 16, "decode_head.in_index": 2})
    assert cfg.model.decode_head.channels == 16
    assert cfg.model.decode_head.in_channels == 128   # res4 of a width-0.5 ResNet-18


def test_unknown_base_config_names_what_exists():
    with pytest.raises(ConfigError, match="fcn, upernet"):
        base_config("deeplab")


def test_written_config_rebuilds_with_mmengine(tmp_path):
    """The run folder's config.py is a complete MMEngine config that builds the same model."""
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    import_mmseg()

    model_cfg = model_config(base_config("fcn"), 18, "small", SubnetSpec(0.5, (1, 1, 1, 1)), num_classes=4,
                             overrides={"decode_head.channels": 8, "auxiliary_head.channels": 8})
    data = dict(type="BaseSegDataset", data_root=str(tmp_path), pipeline=[])
    cfg = runner_config(model_cfg, data, data, Schedule(iterations=10, batch_size=2, lr=0.01), tmp_path / "work")
    path = tmp_path / "config.py"
    path.write_text(cfg.pretty_text)
    again = Config.fromfile(str(path))
    assert again.custom_imports.imports == ["transfer.segmentation.backbone"]
    assert again.train_cfg.max_iters == 10 and again.val_evaluator.type == "IoUMetric"
    assert again.param_scheduler[0]["type"] == "PolyLR" and again.resume is True
    with DefaultScope.overwrite_default_scope(again.default_scope):
        model = MODELS.build(again.model)
    assert type(model.backbone).__name__ == "SlimBenchResNet"
    assert model.backbone.output_channels() == (32, 64, 128, 256)
