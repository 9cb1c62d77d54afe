"""Width-aware Detectron2 configs, the SlimBench backbones and the MoCo C4 head, and the compat layer."""
import sys
import types

import numpy as np
import pytest
import torch

from pretrain.errors import ConfigError
from pretrain.models.plain_resnet import PlainResNet
from pretrain.models.resnet import plan_resnet
from transfer.detection import backbone as d2_backbone
from transfer.detection.compat import (MissingDetectron2Op, has_detectron2_ext, install_library_aliases,
                                       install_placeholder_ext)
from transfer.detection.config import PIXEL_MEAN, PIXEL_STD, build_config, load_config

R50 = {"arch": "slim_resnet50", "depth": 50, "stem": "imagenet"}


@pytest.mark.parametrize("width", [1.0, 0.75, 0.5, 0.25])
@pytest.mark.parametrize("base", ["mask_rcnn_R_50_FPN_1x", "faster_rcnn_R_50_C4_voc_24k", "mask_rcnn_R_50_C4_2x"])
def test_r50_widths_scale_detectron2_own_resnet(width, base):
    cfg = build_config(base, f"w{width}", R50)
    r = cfg.MODEL.RESNETS
    assert (r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.WIDTH_PER_GROUP) == (int(64 * width), int(256 * width),
                                                                           int(64 * width))
    assert cfg.MODEL.BACKBONE.NAME in ("build_resnet_backbone", "build_resnet_fpn_backbone")
    # one process: SyncBN becomes BN; MoCo's C4 naiveSyncBN stays (Detectron2 runs it as BN on one process)
    assert r.STRIDE_IN_1X1 is False and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert r.NORM == ("naiveSyncBN" if "C4" in base else "BN")
    assert list(cfg.MODEL.PIXEL_MEAN) == PIXEL_MEAN == [123.675, 116.28, 103.53]
    assert list(cfg.MODEL.PIXEL_STD) == PIXEL_STD == [58.395, 57.12, 57.375]
    assert cfg.INPUT.FORMAT == "RGB"
    if "C4" in base:
        assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    else:
        assert cfg.MODEL.FPN.NORM == "BN" and cfg.MODEL.RPN.IN_FEATURES == ["p2", "p3", "p4", "p5", "p6"]


def test_distributed_runs_use_syncbn_everywhere_the_base_config_normalizes():
    cfg = build_config("mask_rcnn_R_50_FPN_1x", "w0.5", R50, distributed=True)
    assert cfg.MODEL.RESNETS.NORM == cfg.MODEL.FPN.NORM == "SyncBN"
    assert cfg.MODEL.ROI_BOX_HEAD.NORM == cfg.MODEL.ROI_MASK_HEAD.NORM == ""   # the standard heads have none
    own = build_config("mask_rcnn_R_50_FPN_1x", "w0.5", R50, distributed=True,
                       overrides={"MODEL.ROI_BOX_HEAD.NORM": "BN", "MODEL.ROI_BOX_HEAD.NUM_CONV": 4})
    assert own.MODEL.ROI_BOX_HEAD.NORM == "BN"   # an override is applied after the norm mapping


def test_naive_syncbn_trains_in_one_process(tmp_path):
    """MoCo's naiveSyncBN is Detectron2's NaiveSyncBatchNorm, which normalizes as BN with one process."""
    from detectron2.layers import NaiveSyncBatchNorm
    from detectron2.modeling import build_model

    arch = {"arch": "slim_resnet18", "depth": 18, "stem": "imagenet"}
    model = build_model(build_config("faster_rcnn_R_50_C4_voc_24k", "w0.25", arch, num_classes=3))
    assert isinstance(model.roi_heads.res5.norm, NaiveSyncBatchNorm)
    bn = model.roi_heads.res5.norm.train()
    x = torch.randn(4, bn.num_features, 3, 3)
    expected = torch.nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    assert torch.allclose(bn(x), expected, atol=1e-5)


@pytest.mark.parametrize("arch, spec", [
    ({"arch": "slim_resnet18", "depth": 18, "stem": "imagenet"}, "w0.5"),
    ({"arch": "slim_resnet34", "depth": 34, "stem": "imagenet"}, "w1.0"),
    ({"arch": "slim_resnet50", "depth": 50, "stem": "small"}, "w1.0"),
    (R50, "w1.0-d2.2.2.2"),
    (R50, "w0.3"),   # int(2048*0.3) != 8*int(256*0.3): channels do not double exactly
])
def test_what_detectron2_cannot_express_uses_the_slimbench_backbone(arch, spec, tmp_path):
    cfg = build_config("faster_rcnn_R_50_C4_voc_24k", spec, arch, out_dir=tmp_path)
    assert cfg.MODEL.BACKBONE.NAME == d2_backbone.BACKBONE_NAME
    assert load_config(tmp_path / "config.yaml").MODEL.SLIMBENCH == cfg.MODEL.SLIMBENCH
    assert cfg.OUTPUT_DIR == str(tmp_path)


def test_small_stem_fpn_levels_are_named_by_their_strides():
    from detectron2.modeling import build_model

    arch = {"arch": "slim_resnet18", "depth": 18, "stem": "small"}
    cfg = build_config("mask_rcnn_R_50_FPN_1x", "w0.25", arch, num_classes=3)
    assert cfg.MODEL.RPN.IN_FEATURES == ["p0", "p1", "p2", "p3", "p4"]
    assert cfg.MODEL.ROI_HEADS.IN_FEATURES == ["p0", "p1", "p2", "p3"]
    model = build_model(cfg)
    declared = PlainResNet(plan_resnet(18, 0.25, stem="small")).output_shape()
    shapes = model.backbone.bottom_up.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == declared
    assert {k: s.stride for k, s in model.backbone.output_shape().items()} == {"p0": 1, "p1": 2, "p2": 4, "p3": 8, "p4": 16}


def test_c4_head_keeps_the_extracted_res5_and_adds_the_moco_norm():
    from detectron2.modeling import build_model

    arch = {"arch": "slim_resnet18", "depth": 18, "stem": "imagenet"}
    model = build_model(build_config("faster_rcnn_R_50_C4_voc_24k", "w0.5", arch, num_classes=3))
    res5 = model.roi_heads.res5
    assert type(res5[0]).__name__ == "BasicBlock" and len(res5) == 3   # 2 blocks + norm
    assert isinstance(res5.norm, torch.nn.BatchNorm2d) and res5.norm.num_features == 256
    assert model.backbone.output_shape()["res4"].channels == 128
    std = build_model(build_config("faster_rcnn_R_50_C4_voc_24k", "w0.25", R50, num_classes=3))
    assert std.roi_heads.res5.norm.num_features == 512


def test_unknown_base_config_and_override_key_are_named():
    with pytest.raises(ConfigError, match="unknown Detectron2 base config 'nope'.*mask_rcnn_R_50_FPN_1x"):
        build_config("nope", "w1.0", R50)
    with pytest.raises(ConfigError, match="no key 'SOLVER.NOPE'"):
        build_config("mask_rcnn_R_50_FPN_1x", "w1.0", R50, overrides={"SOLVER.NOPE": 1})
    cfg = build_config("mask_rcnn_R_50_FPN_1x", "w1.0", R50, overrides={"SOLVER.MAX_ITER": 7, "SOLVER.STEPS": (3,)})
    assert cfg.SOLVER.MAX_ITER == 7 and tuple(cfg.SOLVER.STEPS) == (3,)


def test_placeholder_extension_raises_a_clear_error_when_called():
    assert not has_detectron2_ext()   # this stack: Detectron2 built without its C++ extension
    assert install_placeholder_ext() is True   # already in place (importing Detectron2 needed it)
    from detectron2 import _C
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    with pytest.raises(MissingDetectron2Op, match="box_iou_rotated needs Detectron2's compiled"):
        pairwise_iou_rotated(torch.ones(1, 5), torch.ones(1, 5))
    with pytest.raises(AttributeError):
        _C.__wrapped__   # introspection sees an ordinary module


def test_a_real_extension_is_left_untouched(monkeypatch):
    real = types.ModuleType("detectron2._C")
    monkeypatch.setitem(sys.modules, "detectron2._C", real)
    assert install_placeholder_ext() is False and sys.modules["detectron2._C"] is real
    assert has_detectron2_ext()


def test_library_aliases_only_fill_what_is_missing():
    install_library_aliases()
    from PIL import Image

    assert Image.LINEAR == Image.BILINEAR
    assert np.int is int and np.float is float and np.str is str
    assert np.bool is np.bool_   # numpy 2 has np.bool again: left alone
