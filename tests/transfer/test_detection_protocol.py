"""The ``detectron2`` protocol: dataset blocks, metrics, and a real training + evaluation through Detectron2."""
import json
import math
from pathlib import Path

import pytest
import torch

from pretrain.checkpoints.format import Checkpoint
from pretrain.config import from_dict
from pretrain.errors import ConfigError, DataError
from pretrain.models.resnet import SlimResNet
from pretrain.models.spec import SubnetSpec
from transfer.protocols.base import RunContext, get_protocol
from transfer.scenes import SceneSettings, ensure_scenes

REPO = Path(__file__).resolve().parents[2]


def test_protocol_is_registered_with_its_schemas():
    proto = get_protocol("detectron2")
    assert proto.name == "detectron2"
    params = from_dict(proto.Params, {"iterations": 10, "steps": [5], "min_size_train": [64, 80],
                                      "overrides": {"A.B": 1}}, "t")
    assert params.detectron2_overrides() == {"SOLVER.MAX_ITER": 10, "SOLVER.STEPS": (5,),
                                             "INPUT.MIN_SIZE_TRAIN": (64, 80), "DATALOADER.NUM_WORKERS": 4, "A.B": 1}
    with pytest.raises(ConfigError, match="iterations must be a positive integer"):
        from_dict(proto.Params, {"iterations": 0}, "t")
    with pytest.raises(ConfigError, match="VOC2007/trainval"):
        from_dict(proto.Dataset, {"kind": "voc", "voc_test": "test"}, "t")


def test_dataset_check_names_the_expected_layout(tmp_path):
    proto = get_protocol("detectron2")
    coco = from_dict(proto.Dataset, {"kind": "coco"}, "t")
    with pytest.raises(DataError, match=r"coco/train2017.*instances_\{train2017,val2017\}\.json"):
        coco.check(tmp_path)
    voc = from_dict(proto.Dataset, {"kind": "voc"}, "t")
    with pytest.raises(DataError, match=r"VOC2007/Annotations.*VOC<year>/ImageSets/Main/<split>\.txt"):
        voc.check(tmp_path)
    own = from_dict(proto.Dataset, {"kind": "coco", "root": str(tmp_path / "mine"), "val_images": "v"}, "t")
    with pytest.raises(DataError, match="mine/v"):
        own.check(tmp_path)


def test_shipped_suites_validate():
    from benchmarks.suites import load_suite

    for name, kind in (("demo-det", "demo-scenes"), ("voc-det", "voc"), ("coco-det", "coco"),
                       ("coco-det-c4-2x", "coco")):
        suite = load_suite(str(REPO / "configs" / "suites" / f"{name}.yaml"))
        assert suite.protocol == "detectron2" and suite.dataset.kind == kind


def test_metrics_are_named_by_task_and_no_predictions_score_zero():
    from transfer.detection.metrics import flatten_metrics

    out = flatten_metrics({"bbox": {"AP": 12.5, "AP50": 30.0, "AP75": math.nan, "APl": math.nan, "AP-cat": 3.0},
                           "segm": {"AP": 10.0}})
    assert out == {"box_AP": 12.5, "box_AP50": 30.0, "box_AP75": 0.0, "mask_AP": 10.0}


def scenes_dataset(data_root: Path, images: int):
    """The demo scenes (``images`` per split) as a COCO-format ``dataset:`` block with bitmask masks."""
    ensure_scenes(data_root / "scenes", SceneSettings(num_train=images, num_val=images))
    return from_dict(get_protocol("detectron2").Dataset, {
        "kind": "coco", "root": str(data_root / "scenes"), "train_images": "img_dir/train",
        "train_annotations": "annotations/instances_train.json", "val_images": "img_dir/val",
        "val_annotations": "annotations/instances_val.json", "mask_format": "bitmask"}, "t")


def tiny_fpn_params(base_config: str, iterations: int, **overrides):
    """A COCO R50-FPN base config shrunk for CPU: 64-96 pixel images, narrow FPN and heads, anchors 8-128."""
    return from_dict(get_protocol("detectron2").Params, {
        "base_config": base_config, "iterations": iterations, "batch_size": 2, "lr": 0.01, "steps": [],
        "warmup_iters": 1, "min_size_train": [64], "max_size_train": 96, "min_size_test": 64, "max_size_test": 96,
        "num_workers": 0, "checkpoint_period": 100,
        "overrides": {"MODEL.FPN.OUT_CHANNELS": 32, "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 200,
                      "MODEL.RPN.POST_NMS_TOPK_TRAIN": 50, "MODEL.RPN.PRE_NMS_TOPK_TEST": 200,
                      "MODEL.RPN.POST_NMS_TOPK_TEST": 50, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
                      "MODEL.ROI_BOX_HEAD.FC_DIM": 64, "MODEL.ROI_MASK_HEAD.CONV_DIM": 32,
                      "MODEL.ANCHOR_GENERATOR.SIZES": [[8], [16], [32], [64], [128]], **overrides}}, "t")


@pytest.mark.slow
def test_one_iteration_and_evaluation_of_a_width_quarter_faster_rcnn(tmp_path):
    """Width 0.25 of an R50 (Detectron2's own ResNet, C4 head) on a 4-image COCO-format set, at seeds 0 and 1."""
    data_root = tmp_path / "data"
    proto, dataset = get_protocol("detectron2"), scenes_dataset(data_root, 4)
    dataset.check(data_root)
    params = from_dict(proto.Params, {
        "base_config": "faster_rcnn_R_50_C4_voc_24k", "iterations": 1, "batch_size": 2, "lr": 0.001, "steps": [],
        "warmup_iters": 1, "min_size_train": [64], "max_size_train": 96, "min_size_test": 64, "max_size_test": 96,
        "precise_bn": False, "num_workers": 0,
        "overrides": {"MODEL.RPN.POST_NMS_TOPK_TEST": 50, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
                      "MODEL.ANCHOR_GENERATOR.SIZES": [[16, 32, 64]]}}, "t")
    torch.manual_seed(0)
    ckpt = Checkpoint.from_model(SlimResNet(50, widths=[1.0, 0.25]))
    contexts = [RunContext("det-test", ckpt, [SubnetSpec(0.25)], params, dataset, data_root, tmp_path / "run",
                           device=torch.device("cpu"), seed=seed) for seed in (0, 1)]
    rows = list(proto().run(contexts[0]))

    values = {r.metric: r.value for r in rows}
    assert {r.subnet for r in rows} == {"w0.25"}
    for metric in ("box_AP", "box_AP50", "box_AP75"):
        assert 0.0 <= values[metric] <= 100.0
    assert not any(m.endswith("_std") for m in values)   # spread over seeds is the leaderboard's job
    list(proto().run(contexts[1]))
    run = tmp_path / "run" / "w0.25"
    for seed in (0, 1):   # ctx.work_dir: one folder per sub-network and seed
        assert (run / f"seed{seed}" / "backbone.pkl").is_file()
        cfg_text = (run / f"seed{seed}" / "config.yaml").read_text()
        assert "build_resnet_backbone" in cfg_text and "RES2_OUT_CHANNELS: 64" in cfg_text
        assert f"SEED: {seed}" in cfg_text
        assert set(json.loads((run / f"seed{seed}" / "results.json").read_text())) >= {"box_AP", "box_AP50"}
    # Detectron2's own TensorboardXWriter wrote into the work folder (under runs/: one `tensorboard --logdir runs`)
    assert list((run / "seed0").glob("events.out.tfevents.*"))
    # a rerun finds the evaluated work folder and reports it again without training
    log_text = (run / "seed0" / "log.txt").read_text()
    assert list(proto().run(contexts[0])) == rows
    assert (run / "seed0" / "log.txt").read_text() == log_text and log_text.count("Starting training") == 1
    # COCOEvaluator (pycocotools path) wrote its detections for the 4 validation images
    detections = json.loads((run / "seed0" / "inference" / "coco_instances_results.json").read_text())
    assert {d["image_id"] for d in detections} <= {1, 2, 3, 4}


@pytest.mark.slow
def test_mmselfsups_published_coco_detector_trains_with_normalized_heads(tmp_path):
    """coco-det-mmdet's base config through Detectron2 on one process: the 4conv1fc box head and the mask head
    normalize (SyncBN becomes BN without a process group), their convolutions without bias as MMDetection's."""
    data_root = tmp_path / "data"
    proto, dataset = get_protocol("detectron2"), scenes_dataset(data_root, 2)
    params = tiny_fpn_params("mask_rcnn_R_50_FPN_1x_mmdet", 1, **{"MODEL.ROI_BOX_HEAD.CONV_DIM": 16})
    torch.manual_seed(0)
    ckpt = Checkpoint.from_model(SlimResNet(18, widths=[1.0, 0.25], stem="small"))
    ctx = RunContext("det-mmdet", ckpt, [SubnetSpec(0.25)], params, dataset, data_root, tmp_path / "run",
                     device=torch.device("cpu"))
    values = {r.metric: r.value for r in proto().run(ctx)}
    assert 0.0 <= values["box_AP"] <= 100.0 and 0.0 <= values["mask_AP"] <= 100.0
    trained = torch.load(tmp_path / "run" / "w0.25" / "seed0" / "model_final.pth", weights_only=False)["model"]
    box_head = sorted({k.split(".")[2] for k in trained if k.startswith("roi_heads.box_head.")})
    assert box_head == ["conv1", "conv2", "conv3", "conv4", "fc1"]
    for head in ("box_head.conv4", "mask_head.mask_fcn4"):
        assert f"roi_heads.{head}.norm.running_mean" in trained and f"roi_heads.{head}.bias" not in trained


@pytest.mark.slow
def test_a_detector_that_predicts_nothing_reports_every_task_as_zero_and_says_so(tmp_path, caplog):
    """Mask R-CNN whose score threshold no detection passes: Detectron2 logs "No predictions from the model!"
    and reports NaN; every task the config trains (box and mask) is stored as 0, and the run names them."""
    data_root = tmp_path / "data"
    proto, dataset = get_protocol("detectron2"), scenes_dataset(data_root, 2)
    params = from_dict(proto.Params, {
        "base_config": "mask_rcnn_demo_FPN", "iterations": 1, "batch_size": 2, "steps": [], "warmup_iters": 1,
        "precise_bn": False, "num_workers": 0, "overrides": {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 1.01}}, "t")
    torch.manual_seed(0)
    ckpt = Checkpoint.from_model(SlimResNet(18, widths=[1.0, 0.25], stem="small"))
    ctx = RunContext("det-empty", ckpt, [SubnetSpec(0.25)], params, dataset, data_root, tmp_path / "run",
                     device=torch.device("cpu"), checkpoint_digest="cd" * 32)
    with caplog.at_level("WARNING"):
        values = {r.metric: r.value for r in proto().run(ctx)}
    assert values["box_AP"] == values["mask_AP"] == 0.0 and values["box_AP50"] == values["mask_AP50"] == 0.0
    assert ctx.info["no_predictions"] == {"w0.25": ["bbox", "segm"]}
    warnings = [r.getMessage() for r in caplog.records if "predicted nothing" in r.getMessage()]
    assert len(warnings) == 1 and "det-empty on cdcdcdcdcdcd" in warnings[0] and "w0.25 (bbox, segm)" in warnings[0]


def test_launch_settings_come_from_the_command_line_then_the_suite_then_the_device():
    from transfer.detection.protocol import Detectron2Params, LaunchPlan

    cpu = torch.device("cpu")
    plan = LaunchPlan.resolve(Detectron2Params(), {}, cpu)
    assert (plan.num_gpus, plan.num_machines, plan.world_size, plan.dist_url) == (0, 1, 1, "auto")
    plan = LaunchPlan.resolve(Detectron2Params(dist_url="tcp://a:1"), {"dist_url": "tcp://b:2"}, cpu)
    assert plan.dist_url == "tcp://b:2"
    with pytest.raises(ConfigError, match="one process per GPU"):
        LaunchPlan.resolve(Detectron2Params(num_gpus=64), {}, cpu)


@pytest.mark.slow
def test_the_slimmable_detector_trains_every_width_at_once_and_is_tested_per_width(tmp_path):
    """coco-det-slimclr's training (SlimCLR's benchmark/): one Mask R-CNN whose backbone is the whole slimmable
    network, each iteration at every width, then COCO evaluation at each width; a rerun reuses the results."""
    data_root = tmp_path / "data"
    proto, dataset = get_protocol("detectron2"), scenes_dataset(data_root, 2)
    params = tiny_fpn_params("mask_rcnn_R_50_FPN_1x_slimclr", 2, **{"MODEL.ROI_MASK_HEAD.NUM_CONV": 1})
    torch.manual_seed(0)
    ckpt = Checkpoint.from_model(SlimResNet(18, widths=[1.0, 0.5], stem="small"))
    ctx = RunContext("det-slim", ckpt, [SubnetSpec(1.0), SubnetSpec(0.5)], params, dataset, data_root,
                     tmp_path / "run", device=torch.device("cpu"))
    rows = list(proto().run(ctx))
    values = {(r.subnet, r.metric): r.value for r in rows}
    for subnet in ("w1.0", "w0.5"):
        assert all(0.0 <= values[(subnet, m)] <= 100.0 for m in ("box_AP", "mask_AP"))
    folder = tmp_path / "run" / "slimmable" / "seed0"
    assert set(json.loads((folder / "results.json").read_text())) == {"w1.0", "w0.5"}
    # both widths trained: each width's own BatchNorm of the stem moved away from the checkpoint's
    before = torch.load(folder / "encoder.pth", weights_only=True)
    after = torch.load(folder / "model_final.pth", weights_only=False)["model"]
    for index in (0, 1):
        key = f"bn1.bn.{index}.running_mean"
        assert not torch.equal(before[key], after[f"backbone.bottom_up.encoder.{key}"]), key
    assert list(proto().run(ctx)) == rows   # the evaluated work folder is reused, not trained again
    (folder / "results.json").unlink()      # as if killed before evaluating: Detectron2's checkpointer resumes
    assert list(proto().run(ctx)) == rows
    assert "Starting training from iteration 2" in (folder / "log.txt").read_text()   # not from 0 again
    # as if killed while Detectron2 wrote its record of the last checkpoint: opened, still empty
    (folder / "results.json").unlink()
    (folder / "last_checkpoint").write_text("")
    assert list(proto().run(ctx)) == rows
    log_text = (folder / "log.txt").read_text()
    assert log_text.count("Starting training from iteration 2") == 2 and "from iteration 0" in log_text
    assert (folder / "last_checkpoint").read_text() == "model_final.pth"
    ctx.subnets = [SubnetSpec(1.0, (1, 1, 1, 1))]
    with pytest.raises(ConfigError, match=r"trains and tests widths only; sub-networks w1.0-d1.1.1.1"):
        list(proto().run(ctx))
    ctx.subnets, ctx.params.overrides["SOLVER.AMP.ENABLED"] = [SubnetSpec(1.0)], True
    with pytest.raises(ConfigError, match=r"SOLVER.AMP.ENABLED: the slimmable detector trains in fp32"):
        list(proto().run(ctx))


def test_full_model_clipping_clips_the_global_norm_before_the_step():
    """MMDetection's grad_clip (clip_grad_norm_ over every parameter at once), not Detectron2's per-parameter norm."""
    from transfer.detection.trainer import clip_full_model

    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    opt = clip_full_model(torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=1.0), max_norm=5.0, norm_type=2.0)
    a.grad, b.grad = torch.full((3,), 30.0), torch.full((4,), 40.0)   # global norm sqrt(3*900 + 4*1600) = 95.4
    opt.step()
    scale = 5.0 / math.sqrt(3 * 30.0 ** 2 + 4 * 40.0 ** 2)
    assert torch.allclose(a, torch.full((3,), -30.0 * scale), rtol=1e-5)
    assert torch.allclose(b, torch.full((4,), -40.0 * scale), rtol=1e-5)   # one factor for both: a global norm
