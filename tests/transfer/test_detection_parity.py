"""Each shipped detection suite hands Detectron2 the published protocol it names, value by value.

The published values are written out here with their source; they are compared with the resolved
``CfgNode`` the ``detectron2`` protocol would train (``Detectron2Protocol.describe``, the code path
of a real run), never with the suite YAML. Sources:

* MoCo: facebookresearch/moco at 132aea9 (the last commit with ``detection/``), ``detection/configs/``
  and ``detection/README.md``; MoCo fine-tunes on 8 GPUs (README: ``--num-gpus 8``).
* MMSelfSup: open-mmlab/mmselfsup at db861f3, ``configs/benchmarks/detectron2/``.
* Detectron2 defaults: detectron2 v0.6 ``detectron2/config/defaults.py`` (keys the configs above leave unset).
"""
import math
from pathlib import Path

import pytest
import torch

from benchmarks.suites import load_suite
from pretrain.checkpoints.format import Checkpoint
from pretrain.errors import ConfigError
from pretrain.models.resnet import SlimResNet
from pretrain.models.spec import SubnetSpec
from transfer.protocols.base import RunContext, get_protocol

MOCO = "facebookresearch/moco@132aea9 detection/configs/"
SELFSUP = "open-mmlab/mmselfsup@db861f3 configs/benchmarks/detectron2/"
D2 = "detectron2 v0.6 detectron2/config/defaults.py:"
REPO = Path(__file__).resolve().parents[2]

# MoCo's Base-RCNN-C4-BN.yaml, shared by its VOC and COCO configs
MOCO_C4_BASE = {
    "MODEL.META_ARCHITECTURE": ("GeneralizedRCNN", MOCO + "Base-RCNN-C4-BN.yaml:2"),
    "MODEL.RPN.PRE_NMS_TOPK_TEST": (6000, MOCO + "Base-RCNN-C4-BN.yaml:4"),
    "MODEL.RPN.POST_NMS_TOPK_TEST": (1000, MOCO + "Base-RCNN-C4-BN.yaml:5"),
    "MODEL.ROI_HEADS.NAME": ("Res5ROIHeadsExtraNorm", MOCO + "Base-RCNN-C4-BN.yaml:7"),
    "MODEL.BACKBONE.FREEZE_AT": (0, MOCO + "Base-RCNN-C4-BN.yaml:9"),
    "MODEL.RESNETS.NORM": ("naiveSyncBN", MOCO + "Base-RCNN-C4-BN.yaml:12"),
    "TEST.PRECISE_BN.ENABLED": (True, MOCO + "Base-RCNN-C4-BN.yaml:15"),
    "SOLVER.IMS_PER_BATCH": (16, MOCO + "Base-RCNN-C4-BN.yaml:17"),
    "SOLVER.BASE_LR": (0.02, MOCO + "Base-RCNN-C4-BN.yaml:18"),
    # unset there: Detectron2's defaults
    "MODEL.BACKBONE.NAME": ("build_resnet_backbone", D2 + "133"),
    "MODEL.RESNETS.DEPTH": (50, D2 + "473"),
    "MODEL.RESNETS.OUT_FEATURES": (["res4"], D2 + "474"),
    "MODEL.RPN.IN_FEATURES": (["res4"], D2 + "203"),
    "MODEL.ROI_HEADS.IN_FEATURES": (["res4"], D2 + "257"),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": (14, D2 + "303"),
    "SOLVER.WEIGHT_DECAY": (0.0001, D2 + "525"),
    "SOLVER.MOMENTUM": (0.9, D2 + "521"),
    "SOLVER.GAMMA": (0.1, D2 + "530"),
}
# the *_moco.yaml files: torchvision normalization in RGB, stride on the 3x3
MOCO_INPUT = {
    "MODEL.PIXEL_MEAN": ([123.675, 116.28, 103.53], "*_moco.yaml:3"),
    "MODEL.PIXEL_STD": ([58.395, 57.12, 57.375], "*_moco.yaml:4"),
    "MODEL.RESNETS.STRIDE_IN_1X1": (False, "*_moco.yaml:7"),
    "INPUT.FORMAT": ("RGB", "*_moco.yaml:9"),
}

VOC_C4_24K = {**MOCO_C4_BASE, **{k: (v, MOCO + "pascal_voc_R_50_C4_24k_moco.yaml" + s[s.index(":"):])
                                for k, (v, s) in MOCO_INPUT.items()},
    "MODEL.MASK_ON": (False, MOCO + "pascal_voc_R_50_C4_24k.yaml:3"),
    "MODEL.ROI_HEADS.NUM_CLASSES": (20, MOCO + "pascal_voc_R_50_C4_24k.yaml:6"),
    "INPUT.MIN_SIZE_TRAIN": ([480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800],
                             MOCO + "pascal_voc_R_50_C4_24k.yaml:8"),
    "INPUT.MIN_SIZE_TEST": (800, MOCO + "pascal_voc_R_50_C4_24k.yaml:9"),
    "SOLVER.STEPS": ([18000, 22000], MOCO + "pascal_voc_R_50_C4_24k.yaml:14"),
    "SOLVER.MAX_ITER": (24000, MOCO + "pascal_voc_R_50_C4_24k.yaml:15"),
    "SOLVER.WARMUP_ITERS": (100, MOCO + "pascal_voc_R_50_C4_24k.yaml:16"),
}

COCO_C4_2X = {**MOCO_C4_BASE, **{k: (v, MOCO + "coco_R_50_C4_2x_moco.yaml" + s[s.index(":"):])
                                for k, (v, s) in MOCO_INPUT.items()},
    "MODEL.MASK_ON": (True, MOCO + "coco_R_50_C4_2x.yaml:3"),
    "INPUT.MIN_SIZE_TRAIN": ([640, 672, 704, 736, 768, 800], MOCO + "coco_R_50_C4_2x.yaml:6"),
    "INPUT.MIN_SIZE_TEST": (800, MOCO + "coco_R_50_C4_2x.yaml:7"),
    "SOLVER.STEPS": ([120000, 160000], MOCO + "coco_R_50_C4_2x.yaml:12"),
    "SOLVER.MAX_ITER": (180000, MOCO + "coco_R_50_C4_2x.yaml:13"),
    "SOLVER.WARMUP_ITERS": (1000, D2 + "535"),
    "MODEL.ROI_MASK_HEAD.NAME": ("MaskRCNNConvUpsampleHead", D2 + "339"),
    "MODEL.ROI_MASK_HEAD.NUM_CONV": (0, D2 + "342"),
}

COCO_FPN_1X = {
    # Base-RCNN-FPN.yaml (Detectron2's model-zoo file, unchanged in MMSelfSup)
    "MODEL.META_ARCHITECTURE": ("GeneralizedRCNN", SELFSUP + "Base-RCNN-FPN.yaml:2"),
    "MODEL.BACKBONE.NAME": ("build_resnet_fpn_backbone", SELFSUP + "Base-RCNN-FPN.yaml:4"),
    "MODEL.RESNETS.OUT_FEATURES": (["res2", "res3", "res4", "res5"], SELFSUP + "Base-RCNN-FPN.yaml:6"),
    "MODEL.FPN.IN_FEATURES": (["res2", "res3", "res4", "res5"], SELFSUP + "Base-RCNN-FPN.yaml:8"),
    "MODEL.ANCHOR_GENERATOR.SIZES": ([[32], [64], [128], [256], [512]], SELFSUP + "Base-RCNN-FPN.yaml:10"),
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": ([[0.5, 1.0, 2.0]], SELFSUP + "Base-RCNN-FPN.yaml:11"),
    "MODEL.RPN.IN_FEATURES": (["p2", "p3", "p4", "p5", "p6"], SELFSUP + "Base-RCNN-FPN.yaml:13"),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": (2000, SELFSUP + "Base-RCNN-FPN.yaml:14"),
    "MODEL.RPN.PRE_NMS_TOPK_TEST": (1000, SELFSUP + "Base-RCNN-FPN.yaml:15"),
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": (1000, SELFSUP + "Base-RCNN-FPN.yaml:19"),
    "MODEL.RPN.POST_NMS_TOPK_TEST": (1000, SELFSUP + "Base-RCNN-FPN.yaml:20"),
    "MODEL.ROI_HEADS.NAME": ("StandardROIHeads", SELFSUP + "Base-RCNN-FPN.yaml:22"),
    "MODEL.ROI_HEADS.IN_FEATURES": (["p2", "p3", "p4", "p5"], SELFSUP + "Base-RCNN-FPN.yaml:23"),
    "MODEL.ROI_BOX_HEAD.NAME": ("FastRCNNConvFCHead", SELFSUP + "Base-RCNN-FPN.yaml:25"),
    "MODEL.ROI_BOX_HEAD.NUM_FC": (2, SELFSUP + "Base-RCNN-FPN.yaml:26"),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": (7, SELFSUP + "Base-RCNN-FPN.yaml:27"),
    "MODEL.ROI_MASK_HEAD.NAME": ("MaskRCNNConvUpsampleHead", SELFSUP + "Base-RCNN-FPN.yaml:29"),
    "MODEL.ROI_MASK_HEAD.NUM_CONV": (4, SELFSUP + "Base-RCNN-FPN.yaml:30"),
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": (14, SELFSUP + "Base-RCNN-FPN.yaml:31"),
    "SOLVER.IMS_PER_BATCH": (16, SELFSUP + "Base-RCNN-FPN.yaml:36"),
    "SOLVER.BASE_LR": (0.02, SELFSUP + "Base-RCNN-FPN.yaml:37"),
    "INPUT.MIN_SIZE_TRAIN": ([640, 672, 704, 736, 768, 800], SELFSUP + "Base-RCNN-FPN.yaml:41"),
    # coco_R_50_FPN_1x.yaml
    "MODEL.MASK_ON": (True, SELFSUP + "coco_R_50_FPN_1x.yaml:3"),
    "MODEL.BACKBONE.FREEZE_AT": (0, SELFSUP + "coco_R_50_FPN_1x.yaml:6"),
    "MODEL.RESNETS.DEPTH": (50, SELFSUP + "coco_R_50_FPN_1x.yaml:8"),
    "MODEL.RESNETS.NORM": ("SyncBN", SELFSUP + "coco_R_50_FPN_1x.yaml:9"),
    "MODEL.FPN.NORM": ("SyncBN", SELFSUP + "coco_R_50_FPN_1x.yaml:11"),
    "TEST.PRECISE_BN.ENABLED": (True, SELFSUP + "coco_R_50_FPN_1x.yaml:14"),
    "SOLVER.STEPS": ([60000, 80000], SELFSUP + "coco_R_50_FPN_1x.yaml:16"),
    "SOLVER.MAX_ITER": (90000, SELFSUP + "coco_R_50_FPN_1x.yaml:17"),
    **{k: (v, SELFSUP + "coco_R_50_FPN_1x_moco.yaml" + s[s.index(":"):]) for k, (v, s) in MOCO_INPUT.items()},
    # left unset by all three: Detectron2's defaults, i.e. the standard 2fc box head and a mask head without norm
    "MODEL.ROI_BOX_HEAD.NUM_CONV": (0, D2 + "311"),
    "MODEL.ROI_BOX_HEAD.FC_DIM": (1024, D2 + "310"),
    "MODEL.ROI_BOX_HEAD.NORM": ("", D2 + "316"),
    "MODEL.ROI_MASK_HEAD.CONV_DIM": (256, D2 + "343"),
    "MODEL.ROI_MASK_HEAD.NORM": ("", D2 + "346"),
    "MODEL.FPN.OUT_CHANNELS": (256, D2 + "148"),
    "INPUT.MIN_SIZE_TEST": (800, D2 + "63"),
    "INPUT.MAX_SIZE_TRAIN": (1333, D2 + "61"),
    "INPUT.MAX_SIZE_TEST": (1333, D2 + "65"),
    "SOLVER.WARMUP_ITERS": (1000, D2 + "535"),
    "SOLVER.WEIGHT_DECAY": (0.0001, D2 + "525"),
}

# SlimCLR's own COCO protocol: mzhaoshuai/SlimCLR@cc7613d benchmark/configs/mask_rcnn_r50_fpn_1x_8gpu_bs64.py (MMDetection
# 1.x), in Detectron2's terms. Epochs become iterations at ceil(117266 / 64) per epoch (COCO train2017 images with
# annotations, 8 GPUs x imgs_per_gpu 8); MMDet's target_stds are the reciprocals of Detectron2's BBOX_REG_WEIGHTS.
SLIMCLR_MMDET = "mzhaoshuai/SlimCLR benchmark/configs/mask_rcnn_r50_fpn_1x_8gpu_bs64.py:"
COCO_EPOCH = math.ceil(117266 / 64)
SLIMCLR_COCO = {
    "MODEL.MASK_ON": (True, SLIMCLR_MMDET + "3 type='MaskRCNN'"),
    "MODEL.BACKBONE.NAME": ("build_slimmable_resnet_fpn_backbone", "benchmark/mmdet/apis/train.py:70-80 (all widths)"),
    "MODEL.SLIMBENCH.WIDTHS": ([1.0, 0.5], "benchmark/mmdet/flags.py:4 train_width_mult_list (the checkpoint's)"),
    "MODEL.BACKBONE.FREEZE_AT": (0, SLIMCLR_MMDET + "10 frozen_stages=-1"),
    "MODEL.RESNETS.STRIDE_IN_1X1": (False, SLIMCLR_MMDET + "11 style='pytorch'"),
    "MODEL.RESNETS.NORM": ("BN", SLIMCLR_MMDET + "12 bn_eval=False, per-GPU BN"),
    "MODEL.FPN.OUT_CHANNELS": (256, SLIMCLR_MMDET + "16"),
    "MODEL.FPN.NORM": ("", SLIMCLR_MMDET + "14-17 (no norm_cfg)"),
    "MODEL.ANCHOR_GENERATOR.SIZES": ([[32], [64], [128], [256], [512]], SLIMCLR_MMDET + "22, 24 scales [8] x strides"),
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": ([[0.5, 1.0, 2.0]], SLIMCLR_MMDET + "23"),
    "MODEL.RPN.IOU_THRESHOLDS": ([0.3, 0.7], SLIMCLR_MMDET + "58-59"),
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": (256, SLIMCLR_MMDET + "63"),
    "MODEL.RPN.POSITIVE_FRACTION": (0.5, SLIMCLR_MMDET + "64"),
    "MODEL.RPN.BOUNDARY_THRESH": (0, SLIMCLR_MMDET + "69 allowed_border=0"),
    "MODEL.RPN.SMOOTH_L1_BETA": (0.1111, SLIMCLR_MMDET + "71 smoothl1_beta=1 / 9.0"),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": (2000, SLIMCLR_MMDET + "92 (two_stage.py:98 proposals from test_cfg.rpn)"),
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": (2000, SLIMCLR_MMDET + "94 max_num"),
    "MODEL.RPN.PRE_NMS_TOPK_TEST": (2000, SLIMCLR_MMDET + "92 nms_pre"),
    "MODEL.RPN.POST_NMS_TOPK_TEST": (2000, SLIMCLR_MMDET + "94 max_num"),
    "MODEL.RPN.NMS_THRESH": (0.7, SLIMCLR_MMDET + "95"),
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": (512, SLIMCLR_MMDET + "80"),
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": (0.25, SLIMCLR_MMDET + "81"),
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": ([0.5], SLIMCLR_MMDET + "75-76"),
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": (0.05, SLIMCLR_MMDET + "98"),
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": (0.5, SLIMCLR_MMDET + "98"),
    "TEST.DETECTIONS_PER_IMAGE": (100, SLIMCLR_MMDET + "98 max_per_img"),
    "MODEL.ROI_BOX_HEAD.NAME": ("FastRCNNConvFCHead", SLIMCLR_MMDET + "34 SharedFCBBoxHead"),
    "MODEL.ROI_BOX_HEAD.NUM_CONV": (0, SLIMCLR_MMDET + "34 SharedFCBBoxHead (fcs only)"),
    "MODEL.ROI_BOX_HEAD.NUM_FC": (2, SLIMCLR_MMDET + "35"),
    "MODEL.ROI_BOX_HEAD.FC_DIM": (1024, SLIMCLR_MMDET + "37"),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": (7, SLIMCLR_MMDET + "30 out_size"),
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": (2, SLIMCLR_MMDET + "30 sample_num"),
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": ("ROIAlign", SLIMCLR_MMDET + "30 RoIAlign (1.x, not aligned)"),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": ([10.0, 10.0, 5.0, 5.0], SLIMCLR_MMDET + "41 target_stds"),
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": (1.0, "mmdet 1.x bbox_head smooth_l1 default beta"),
    "MODEL.ROI_MASK_HEAD.NUM_CONV": (4, SLIMCLR_MMDET + "50"),
    "MODEL.ROI_MASK_HEAD.CONV_DIM": (256, SLIMCLR_MMDET + "52"),
    "MODEL.ROI_MASK_HEAD.NORM": ("", SLIMCLR_MMDET + "48-53 (no norm)"),
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": (14, SLIMCLR_MMDET + "45"),
    "MODEL.PIXEL_MEAN": ([123.675, 116.28, 103.53], SLIMCLR_MMDET + "104"),
    "MODEL.PIXEL_STD": ([58.395, 57.12, 57.375], SLIMCLR_MMDET + "104"),
    "INPUT.FORMAT": ("RGB", SLIMCLR_MMDET + "104 to_rgb=True"),
    "INPUT.MIN_SIZE_TRAIN": ([800], SLIMCLR_MMDET + "112 img_scale=(1333, 800)"),
    "INPUT.MAX_SIZE_TRAIN": (1333, SLIMCLR_MMDET + "112"),
    "INPUT.MIN_SIZE_TEST": (800, SLIMCLR_MMDET + "134"),
    "INPUT.MAX_SIZE_TEST": (1333, SLIMCLR_MMDET + "134"),
    "TEST.PRECISE_BN.ENABLED": (False, SLIMCLR_MMDET + " (no precise BN)"),
    "SOLVER.IMS_PER_BATCH": (64, SLIMCLR_MMDET + "106 imgs_per_gpu=8, 8 GPUs (the file's name)"),
    "SOLVER.BASE_LR": (0.08, SLIMCLR_MMDET + "143"),
    "SOLVER.MOMENTUM": (0.9, SLIMCLR_MMDET + "143"),
    "SOLVER.WEIGHT_DECAY": (0.0001, SLIMCLR_MMDET + "143"),
    "SOLVER.WEIGHT_DECAY_NORM": (0.0001, SLIMCLR_MMDET + "143 (every parameter)"),
    "SOLVER.CLIP_GRADIENTS.ENABLED": (True, SLIMCLR_MMDET + "144"),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": ("full_model", "benchmark/mmdet/apis/train.py:47 clip_grad_norm_ over all"),
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": (35.0, SLIMCLR_MMDET + "144 max_norm"),
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": (2.0, SLIMCLR_MMDET + "144 norm_type"),
    "SOLVER.WARMUP_METHOD": ("linear", SLIMCLR_MMDET + "148"),
    "SOLVER.WARMUP_ITERS": (500, SLIMCLR_MMDET + "149"),
    "SOLVER.WARMUP_FACTOR": (0.001, SLIMCLR_MMDET + "150"),
    "SOLVER.STEPS": ([8 * COCO_EPOCH, 11 * COCO_EPOCH], SLIMCLR_MMDET + "151 step=[8, 11] epochs"),
    "SOLVER.MAX_ITER": (12 * COCO_EPOCH, SLIMCLR_MMDET + "162 total_epochs=12"),
    "SOLVER.GAMMA": (0.1, "mmcv step policy gamma default 0.1"),
}

# MMSelfSup's published COCO protocol: open-mmlab/mmselfsup@db861f3
# configs/benchmarks/mmdetection/coco/mask-rcnn_r50_fpn_ms-1x_coco.py on MMDetection 3.x's mask-rcnn_r50_fpn_1x_coco.py,
# whose _base_ files are read at the commits below. 8 GPUs x 2 images; an epoch is ceil(117266 / 16) iterations.
SELFSUP_MMDET = "open-mmlab/mmselfsup@db861f3 configs/benchmarks/mmdetection/coco/mask-rcnn_r50_fpn_ms-1x_coco.py:"
MMDET_MODEL = "open-mmlab/mmdetection@0c7842f configs/_base_/models/mask-rcnn_r50_fpn.py:"
MMDET_DATA = "open-mmlab/mmdetection@05ddf94 configs/_base_/datasets/coco_instance.py:"
MMDET_1X = "open-mmlab/mmdetection@1781349 configs/_base_/schedules/schedule_1x.py:"
MMDET_EPOCH = math.ceil(117266 / 16)
MMSELFSUP_COCO = {
    "MODEL.MASK_ON": (True, MMDET_MODEL + "3 type='MaskRCNN'"),
    "MODEL.BACKBONE.NAME": ("build_resnet_fpn_backbone", MMDET_MODEL + "11-25 ResNet + FPN"),
    "MODEL.RESNETS.DEPTH": (50, MMDET_MODEL + "13"),
    "MODEL.BACKBONE.FREEZE_AT": (0, SELFSUP_MMDET + "6 frozen_stages=-1"),
    "MODEL.RESNETS.NORM": ("SyncBN", SELFSUP_MMDET + "4, 6 norm_eval=False"),
    "MODEL.RESNETS.STRIDE_IN_1X1": (False, MMDET_MODEL + "19 style='pytorch'"),
    "MODEL.PIXEL_MEAN": ([123.675, 116.28, 103.53], MMDET_MODEL + "6"),
    "MODEL.PIXEL_STD": ([58.395, 57.12, 57.375], MMDET_MODEL + "7"),
    "INPUT.FORMAT": ("RGB", MMDET_MODEL + "8 bgr_to_rgb=True"),
    "MODEL.FPN.OUT_CHANNELS": (256, MMDET_MODEL + "24"),
    "MODEL.FPN.NORM": ("SyncBN", SELFSUP_MMDET + "7"),
    "MODEL.ANCHOR_GENERATOR.SIZES": ([[32], [64], [128], [256], [512]], MMDET_MODEL + "32, 34 scales [8] x strides"),
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": ([[0.5, 1.0, 2.0]], MMDET_MODEL + "33"),
    "MODEL.RPN.BBOX_REG_WEIGHTS": ([1.0, 1.0, 1.0, 1.0], MMDET_MODEL + "38 target_stds"),
    "MODEL.RPN.SMOOTH_L1_BETA": (0.0, MMDET_MODEL + "41 L1Loss"),
    "MODEL.RPN.IOU_THRESHOLDS": ([0.3, 0.7], MMDET_MODEL + "81-82"),
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": (256, MMDET_MODEL + "88"),
    "MODEL.RPN.POSITIVE_FRACTION": (0.5, MMDET_MODEL + "89"),
    "MODEL.RPN.BOUNDARY_THRESH": (-1, MMDET_MODEL + "92 allowed_border=-1"),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": (2000, MMDET_MODEL + "96 rpn_proposal nms_pre"),
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": (1000, MMDET_MODEL + "97 max_per_img"),
    "MODEL.RPN.NMS_THRESH": (0.7, MMDET_MODEL + "98, 121"),
    "MODEL.RPN.PRE_NMS_TOPK_TEST": (1000, MMDET_MODEL + "119"),
    "MODEL.RPN.POST_NMS_TOPK_TEST": (1000, MMDET_MODEL + "120"),
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": ([0.5], MMDET_MODEL + "103-105"),
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": (512, MMDET_MODEL + "110"),
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": (0.25, MMDET_MODEL + "111"),
    "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT": (True, MMDET_MODEL + "113 add_gt_as_proposals"),
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": (0.05, MMDET_MODEL + "124"),
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": (0.5, MMDET_MODEL + "125"),
    "TEST.DETECTIONS_PER_IMAGE": (100, MMDET_MODEL + "126"),
    "MODEL.ROI_BOX_HEAD.NAME": ("FastRCNNConvFCHead", SELFSUP_MMDET + "9 Shared4Conv1FCBBoxHead"),
    "MODEL.ROI_BOX_HEAD.NUM_CONV": (4, SELFSUP_MMDET + "9 (4 convs)"),
    "MODEL.ROI_BOX_HEAD.CONV_DIM": (256, "mmdet convfc_bbox_head.py Shared4Conv1FCBBoxHead conv_out_channels=256"),
    "MODEL.ROI_BOX_HEAD.NUM_FC": (1, SELFSUP_MMDET + "9 (1 fc)"),
    "MODEL.ROI_BOX_HEAD.FC_DIM": (1024, MMDET_MODEL + "52"),
    "MODEL.ROI_BOX_HEAD.NORM": ("SyncBN", SELFSUP_MMDET + "9 norm_cfg"),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": (7, MMDET_MODEL + "46"),
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": (0, MMDET_MODEL + "46"),
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": ("ROIAlignV2", MMDET_MODEL + "46 RoIAlign (mmcv aligned=True)"),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": ([10.0, 10.0, 5.0, 5.0], MMDET_MODEL + "58 target_stds"),
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": (False, MMDET_MODEL + "59"),
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": (0.0, MMDET_MODEL + "62 L1Loss"),
    "MODEL.ROI_MASK_HEAD.NUM_CONV": (4, MMDET_MODEL + "70"),
    "MODEL.ROI_MASK_HEAD.CONV_DIM": (256, MMDET_MODEL + "72"),
    "MODEL.ROI_MASK_HEAD.NORM": ("SyncBN", SELFSUP_MMDET + "10"),
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": (14, MMDET_MODEL + "65"),
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": (0, MMDET_MODEL + "65"),
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": ("ROIAlignV2", MMDET_MODEL + "65"),
    "INPUT.MIN_SIZE_TRAIN": ([640, 672, 704, 736, 768, 800], SELFSUP_MMDET + "16-18 RandomChoiceResize"),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": ("choice", SELFSUP_MMDET + "16"),
    "INPUT.MAX_SIZE_TRAIN": (1333, SELFSUP_MMDET + "17"),
    "INPUT.MIN_SIZE_TEST": (800, MMDET_DATA + "22"),
    "INPUT.MAX_SIZE_TEST": (1333, MMDET_DATA + "22"),
    "DATALOADER.ASPECT_RATIO_GROUPING": (True, MMDET_DATA + "33 AspectRatioBatchSampler"),
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": (True, MMDET_DATA + "39 filter_empty_gt"),
    "TEST.PRECISE_BN.ENABLED": (False, "MMDetection has no precise BN"),
    "SOLVER.IMS_PER_BATCH": (16, MMDET_DATA + "29 batch_size=2 x 8 GPUs (mmselfsup docs/en/user_guides/detection.md:43)"),
    "SOLVER.BASE_LR": (0.02, MMDET_1X + "22"),
    "SOLVER.MOMENTUM": (0.9, MMDET_1X + "22"),
    "SOLVER.WEIGHT_DECAY": (0.0001, MMDET_1X + "22"),
    "SOLVER.WEIGHT_DECAY_NORM": (0.0001, MMDET_1X + "20-22 (no paramwise_cfg: every parameter)"),
    "SOLVER.BIAS_LR_FACTOR": (1.0, MMDET_1X + "20-22"),
    "SOLVER.WARMUP_METHOD": ("linear", MMDET_1X + "9 LinearLR"),
    "SOLVER.WARMUP_ITERS": (500, MMDET_1X + "9 end=500, by_epoch=False"),
    "SOLVER.WARMUP_FACTOR": (0.001, MMDET_1X + "9 start_factor"),
    "SOLVER.STEPS": ([8 * MMDET_EPOCH, 11 * MMDET_EPOCH], MMDET_1X + "15 milestones=[8, 11] epochs"),
    "SOLVER.GAMMA": (0.1, MMDET_1X + "16"),
    "SOLVER.MAX_ITER": (12 * MMDET_EPOCH, MMDET_1X + "2 max_epochs=12"),
    "SOLVER.CLIP_GRADIENTS.ENABLED": (False, MMDET_1X + "20-22 (no clip_grad)"),
    "SOLVER.AMP.ENABLED": (False, MMDET_1X + "21 OptimWrapper (fp32)"),
}
PUBLISHED = {"voc-det": VOC_C4_24K, "coco-det-c4-2x": COCO_C4_2X, "coco-det": COCO_FPN_1X,
             "coco-det-slimclr": SLIMCLR_COCO, "coco-det-mmdet": MMSELFSUP_COCO}


@pytest.fixture(scope="module")
def r50():
    torch.manual_seed(0)
    return Checkpoint.from_model(SlimResNet(50, widths=[1.0, 0.5]))


def engine_configs(checkpoint, suite_name, tmp_path, overrides=(), subnets=("w1.0",), launch=None):
    """``{sub-network: (the resolved Detectron2 config as plain data, the rest of describe's entry)}``."""
    suite = load_suite(suite_name, overrides)
    ctx = RunContext(suite.name, checkpoint, [SubnetSpec.parse(s) for s in subnets], suite.params, suite.dataset,
                     tmp_path / "data", tmp_path / "run", device=torch.device("cpu"), launch=dict(launch or {}))
    described = get_protocol("detectron2")().describe(ctx)
    return {name: (entry["detectron2_config"], entry) for name, entry in described.items()}


def lookup(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def plain(value):
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def mismatches(cfg, published):
    return [f"{key}: SlimBench {plain(lookup(cfg, key))!r}, published {value!r} ({source})"
            for key, (value, source) in published.items() if plain(lookup(cfg, key)) != value]


@pytest.mark.parametrize("suite", sorted(PUBLISHED))
def test_suite_hands_detectron2_the_published_config(suite, r50, tmp_path):
    """On the published 8 processes (MoCo README ``--num-gpus 8``) every listed key is upstream's."""
    (cfg, entry), = engine_configs(r50, suite, tmp_path, launch={"num_gpus": 8}).values()
    assert entry["world_size"] == 8
    assert not mismatches(cfg, PUBLISHED[suite]), "\n".join(mismatches(cfg, PUBLISHED[suite]))


@pytest.mark.parametrize("suite", sorted(PUBLISHED))
def test_one_process_keeps_the_protocol_and_says_how_norms_run(suite, r50, tmp_path):
    """One process: SyncBN needs a process group, so it is BN; naiveSyncBN is BN there by itself."""
    (cfg, _), = engine_configs(r50, suite, tmp_path).values()
    single = dict(PUBLISHED[suite])
    for key, (value, source) in PUBLISHED[suite].items():
        if value == "SyncBN":
            single[key] = ("BN", source + " (SyncBN on one process)")
    assert not mismatches(cfg, single), "\n".join(mismatches(cfg, single))


def test_width_scales_the_backbone_and_keeps_the_heads(r50, tmp_path):
    """DESIGN.md: a width-w R50 is STEM_OUT_CHANNELS = 64w, RES2_OUT_CHANNELS = 256w, WIDTH_PER_GROUP = 64w."""
    configs = engine_configs(r50, "coco-det", tmp_path, subnets=("w1.0", "w0.5"))
    for width, (cfg, _) in zip((1.0, 0.5), configs.values()):
        r = cfg["MODEL"]["RESNETS"]
        assert (r["STEM_OUT_CHANNELS"], r["RES2_OUT_CHANNELS"], r["WIDTH_PER_GROUP"]) == (64 * width, 256 * width,
                                                                                        64 * width)
        assert not mismatches(cfg, {k: v for k, v in COCO_FPN_1X.items() if "NORM" not in k})


def test_voc_reports_the_mean_of_five_trials_by_default():
    """MoCo detection/README.md:61: "These results are means of 5 trials" (seeds 0-4, one run each)."""
    assert load_suite("voc-det").seeds == [0, 1, 2, 3, 4]


def test_the_schedule_is_the_base_configs(r50, tmp_path):
    """coco-det on the 2x base config trains 2x; a suite schedule that contradicts its base is refused."""
    (cfg, entry), = engine_configs(r50, "coco-det", tmp_path, ["params.base_config=mask_rcnn_R_50_FPN_2x"]).values()
    assert (cfg["SOLVER"]["MAX_ITER"], plain(cfg["SOLVER"]["STEPS"])) == (180000, [120000, 160000])
    assert entry["schedule_departures"] == {}
    with pytest.raises(ConfigError, match=r"params.iterations.*without params.steps.*mask_rcnn_R_50_C4_2x"):
        engine_configs(r50, "coco-det-c4-2x", tmp_path, ["params.iterations=90000"])
    with pytest.raises(ConfigError, match=r"SOLVER.STEPS \[60000, 80000\].*SOLVER.MAX_ITER 50000"):
        engine_configs(r50, "coco-det", tmp_path, ["params.overrides={SOLVER.MAX_ITER: 50000}"])
    (cfg, entry), = engine_configs(r50, "coco-det", tmp_path,
                                   ["params.iterations=45000", "params.steps=[30000,40000]"]).values()
    assert cfg["SOLVER"]["MAX_ITER"] == 45000
    assert entry["schedule_departures"] == {"SOLVER.MAX_ITER": {"base_config": 90000, "suite": 45000},
                                            "SOLVER.STEPS": {"base_config": [60000, 80000], "suite": [30000, 40000]}}


def test_demo_det_trains_as_before(r50, tmp_path):
    """The demo's box-only detector keeps its effective training: 300 iterations of batch 2, lr 0.02, step at 240."""
    (cfg, entry), = engine_configs(r50, "demo-det", tmp_path).values()
    s = cfg["SOLVER"]
    assert (s["MAX_ITER"], plain(s["STEPS"]), s["IMS_PER_BATCH"], s["BASE_LR"], s["WARMUP_ITERS"]) == \
        (300, [240], 2, 0.02, 30)
    assert cfg["MODEL"]["MASK_ON"] is False and cfg["DATALOADER"]["NUM_WORKERS"] == 0
    assert entry["schedule_departures"] == {}


def test_every_suite_names_the_file_it_follows():
    for name, source in (("voc-det", "facebookresearch/moco detection/configs/pascal_voc_R_50_C4_24k_moco.yaml"),
                         ("coco-det-c4-2x", "facebookresearch/moco detection/configs/coco_R_50_C4_2x_moco.yaml"),
                         ("coco-det", "open-mmlab/mmselfsup configs/benchmarks/detectron2/coco_R_50_FPN_1x_moco.yaml"),
                         ("coco-det-mmdet",
                          "open-mmlab/mmselfsup configs/benchmarks/mmdetection/coco/mask-rcnn_r50_fpn_ms-1x_coco.py"),
                         ("coco-det-slimclr", "mzhaoshuai/SlimCLR benchmark/configs/mask_rcnn_r50_fpn_1x_8gpu_bs64.py")):
        assert f"follows {source}" in load_suite(name).description, name
    # MMSelfSup publishes COCO numbers from its MMDetection config (each method's README names it): they sit
    # beside coco-det-mmdet, none beside coco-det
    from benchmarks.report.published import load_published

    coco = {(p.label, p.metric): p.suite for p in load_published() if p.metric in ("box_AP", "mask_AP")
            and p.suite.startswith("coco")}
    assert coco[("MMSelfSup MoCo v2 R50 200ep", "box_AP")] == "coco-det-mmdet"
    assert "coco-det" not in coco.values()


def test_describe_reads_no_dataset(r50, tmp_path):
    """A dry run needs no data: the COCO folder does not exist, and nothing is written."""
    configs = engine_configs(r50, "coco-det-c4-2x", tmp_path)
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
    cfg, entry = configs["w1.0"]
    assert cfg["MODEL"]["WEIGHTS"].endswith("backbone.pkl") and cfg["DATASETS"]["TRAIN"]
    assert Path(cfg["OUTPUT_DIR"]).name == "seed0"
