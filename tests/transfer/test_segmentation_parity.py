"""Each shipped segmentation suite hands MMEngine the published MMSegmentation recipe it names.

The published values are written out here with their source and compared with the MMEngine
``Config`` the ``mmseg`` protocol would train (``MMSegProtocol.describe``, the code path of a real
run), never with the suite YAML. Sources: open-mmlab/mmsegmentation v1.2.2 ``configs/`` (the
release installed here; MMSelfSup's segmentation benchmarks at db861f3 inherit these files:
``configs/benchmarks/mmsegmentation/cityscapes/fcn_r50-d8_4xb2-40k_cityscapes-769x769.py:1``,
``.../voc12aug/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py:1``). ``4xbN`` in a name is 4 GPUs x N images.
The deliberate departures are in docs/fidelity.md and checked as departures here: ``type='ResNet'``
(torchvision layout) instead of ``ResNetV1c``, the VOC ``Pad`` done by the data preprocessor, and on
fewer processes than the recipe's GPUs BatchNorm over fewer images (reported as ``bn_batch``).
"""
import pytest
import torch

from benchmarks.suites import load_suite
from pretrain.checkpoints.format import Checkpoint
from pretrain.errors import ConfigError
from pretrain.models.resnet import SlimResNet
from pretrain.models.spec import SubnetSpec
from transfer.protocols.base import RunContext, get_protocol

MMSEG = "open-mmlab/mmsegmentation v1.2.2 configs/"
FCN = MMSEG + "_base_/models/fcn_r50-d8.py:"
UPER = MMSEG + "_base_/models/upernet_r50.py:"


def schedule(iters, source, max_iters_line=15):
    return {
        "optim_wrapper.optimizer.type": ("SGD", source + ":2"),
        "optim_wrapper.optimizer.lr": (0.01, source + ":2"),
        "optim_wrapper.optimizer.momentum": (0.9, source + ":2"),
        "optim_wrapper.optimizer.weight_decay": (0.0005, source + ":2"),
        "param_scheduler.0.type": ("PolyLR", source + ":7"),
        "param_scheduler.0.eta_min": (1e-4, source + ":8"),
        "param_scheduler.0.power": (0.9, source + ":9"),
        "param_scheduler.0.end": (iters, source + ":11"),
        "train_cfg.max_iters": (iters, source + f":{max_iters_line}"),
    }


FCN_D8 = {
    "model.backbone.dilations": ([1, 1, 2, 4], FCN + "19"),
    "model.backbone.strides": ([1, 2, 1, 1], FCN + "20"),
    "model.backbone.contract_dilation": (True, FCN + "24"),
    "model.backbone.norm_cfg.type": ("SyncBN", FCN + "2"),
    "model.data_preprocessor.mean": ([123.675, 116.28, 103.53], FCN + "5"),
    "model.data_preprocessor.std": ([58.395, 57.12, 57.375], FCN + "6"),
    "model.data_preprocessor.pad_val": (0, FCN + "8"),
    "model.data_preprocessor.seg_pad_val": (255, FCN + "9"),
    "model.decode_head.type": ("FCNHead", FCN + "26"),
    "model.decode_head.in_channels": (2048, FCN + "27"),
    "model.decode_head.channels": (512, FCN + "29"),
    "model.decode_head.num_convs": (2, FCN + "30"),
    "model.decode_head.concat_input": (True, FCN + "31"),
    "model.decode_head.dropout_ratio": (0.1, FCN + "32"),
    "model.decode_head.norm_cfg.type": ("SyncBN", FCN + "34"),
    "model.auxiliary_head.in_channels": (1024, FCN + "40"),
    "model.auxiliary_head.in_index": (2, FCN + "41"),
    "model.auxiliary_head.channels": (256, FCN + "42"),
    "model.auxiliary_head.num_convs": (1, FCN + "43"),
    "model.auxiliary_head.concat_input": (False, FCN + "44"),
    "model.auxiliary_head.loss_decode.loss_weight": (0.4, FCN + "50"),
}


def pipeline(scale, crop, source, photometric_line):
    return {
        "train.RandomResize.scale": (scale, source + f":{photometric_line - 5}"),
        "train.RandomResize.ratio_range": ([0.5, 2.0], source + f":{photometric_line - 4}"),
        "train.RandomCrop.crop_size": (crop, source + f":{photometric_line - 2}"),
        "train.RandomCrop.cat_max_ratio": (0.75, source + f":{photometric_line - 2}"),
        "train.RandomFlip.prob": (0.5, source + f":{photometric_line - 1}"),
        "train.PhotoMetricDistortion": (True, source + f":{photometric_line}"),
    }


CITY = MMSEG + "fcn/fcn_r50-d8_4xb2-40k_cityscapes-769x769.py"
CITYSCAPES_769 = {
    **FCN_D8,
    **schedule(40000, MMSEG + "_base_/schedules/schedule_40k.py"),
    **pipeline([2049, 1025], [769, 769], MMSEG + "_base_/datasets/cityscapes_769x769.py", 13),
    "test.Resize.scale": ([2049, 1025], MMSEG + "_base_/datasets/cityscapes_769x769.py:18"),
    "model.data_preprocessor.size": ([769, 769], CITY + ":6-7"),
    "model.decode_head.align_corners": (True, CITY + ":10"),
    "model.auxiliary_head.align_corners": (True, CITY + ":11"),
    "model.decode_head.num_classes": (19, FCN + "33"),
    "model.test_cfg.mode": ("slide", CITY + ":12"),
    "model.test_cfg.crop_size": ([769, 769], CITY + ":12"),
    "model.test_cfg.stride": ([513, 513], CITY + ":12"),
    "global_batch": (8, CITY + " (4xb2); _base_/datasets/cityscapes.py:43 batch_size=2"),
}
CITY_512 = MMSEG + "fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py"
CITYSCAPES_512x1024 = {
    **FCN_D8,
    **schedule(40000, MMSEG + "_base_/schedules/schedule_40k.py"),
    **pipeline([2048, 1024], [512, 1024], MMSEG + "_base_/datasets/cityscapes.py", 15),
    "model.data_preprocessor.size": ([512, 1024], CITY_512 + ":5-6"),
    "model.decode_head.align_corners": (False, FCN + "35"),
    "model.test_cfg.mode": ("whole", FCN + "53"),
    "global_batch": (8, CITY_512 + " (4xb2); _base_/datasets/cityscapes.py:43"),
}
VOC = MMSEG + "fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py"
VOC12AUG = {
    **FCN_D8,
    **schedule(20000, MMSEG + "_base_/schedules/schedule_20k.py"),
    **pipeline([2048, 512], [512, 512], MMSEG + "_base_/datasets/pascal_voc12_aug.py", 15),
    "model.data_preprocessor.size": ([512, 512], VOC + ":5-6"),
    "model.decode_head.num_classes": (21, VOC + ":9"),
    "test.Resize.scale": ([2048, 512], MMSEG + "_base_/datasets/pascal_voc12_aug.py:22"),
    "test.Resize.keep_ratio": (True, MMSEG + "_base_/datasets/pascal_voc12_aug.py:22"),
    "model.decode_head.align_corners": (False, FCN + "35"),
    "model.test_cfg.mode": ("whole", FCN + "53"),
    "train.datasets": (["SegmentationClass", "SegmentationClassAug"],
                       MMSEG + "_base_/datasets/pascal_voc12_aug.py:47,55,64 (ConcatDataset of train and aug)"),
    "global_batch": (16, VOC + " (4xb4); _base_/datasets/pascal_voc12_aug.py:60"),
}
ADE = MMSEG + "upernet/upernet_r50_4xb4-160k_ade20k-512x512.py"
ADE20K_UPERNET = {
    "model.backbone.dilations": ([1, 1, 1, 1], UPER + "19"),
    "model.backbone.strides": ([1, 2, 2, 2], UPER + "20"),
    "model.backbone.norm_cfg.type": ("SyncBN", UPER + "2"),
    "model.decode_head.type": ("UPerHead", UPER + "26"),
    "model.decode_head.in_channels": ([256, 512, 1024, 2048], UPER + "27"),
    "model.decode_head.in_index": ([0, 1, 2, 3], UPER + "28"),
    "model.decode_head.pool_scales": ([1, 2, 3, 6], UPER + "29"),
    "model.decode_head.channels": (512, UPER + "30"),
    "model.decode_head.num_classes": (150, ADE + ":9"),
    "model.auxiliary_head.in_channels": (1024, UPER + "39"),
    "model.auxiliary_head.channels": (256, UPER + "41"),
    "model.auxiliary_head.loss_decode.loss_weight": (0.4, UPER + "49"),
    "model.data_preprocessor.size": ([512, 512], ADE + ":5-6"),
    "model.test_cfg.mode": ("whole", UPER + "52"),
    **schedule(160000, MMSEG + "_base_/schedules/schedule_160k.py", 16),
    **pipeline([2048, 512], [512, 512], MMSEG + "_base_/datasets/ade20k.py", 15),
    "train.reduce_zero_label": (True, MMSEG + "_base_/datasets/ade20k.py:7"),
    "test.Resize.scale": ([2048, 512], MMSEG + "_base_/datasets/ade20k.py:20"),
    "test.Resize.keep_ratio": (True, MMSEG + "_base_/datasets/ade20k.py:20"),
    "global_batch": (16, ADE + " (4xb4); _base_/datasets/ade20k.py:43"),
}
PUBLISHED = {"cityscapes-seg": CITYSCAPES_769, "cityscapes-seg-512x1024": CITYSCAPES_512x1024,
             "voc-seg": VOC12AUG, "ade20k-seg": ADE20K_UPERNET}
PUBLISHED_PER_GPU = {"cityscapes-seg": 2, "cityscapes-seg-512x1024": 2, "voc-seg": 4, "ade20k-seg": 4}


@pytest.fixture(scope="module")
def r50():
    torch.manual_seed(0)
    return Checkpoint.from_model(SlimResNet(50, widths=[1.0, 0.5]))


def described(checkpoint, suite_name, tmp_path, monkeypatch, world_size=1, overrides=(), subnet="w1.0"):
    """(the MMEngine config as plain data, the derived batch) that ``describe`` reports for one sub-network."""
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    suite = load_suite(suite_name, overrides)
    ctx = RunContext(suite.name, checkpoint, [SubnetSpec.parse(subnet)], suite.params, suite.dataset,
                     tmp_path / "data", tmp_path / "run", device=torch.device("cpu"))
    entry = get_protocol("mmseg")().describe(ctx)[subnet]
    return entry["mmengine_config"], {**entry["batch"], "world_size": world_size}


def transforms(pipe):
    return {t["type"]: t for t in pipe}


def lookup(cfg, batch, dotted):
    """A dotted key of the config; ``train.T.key`` / ``test.T.key`` read transform T of that pipeline."""
    loader = cfg["train_dataloader"]
    datasets = loader["dataset"].get("datasets", [loader["dataset"]])
    if dotted == "global_batch":   # what MMEngine will load per update: per-process batch x processes x steps
        return loader["batch_size"] * batch["world_size"] * cfg["optim_wrapper"].get("accumulative_counts", 1)
    if dotted == "train.datasets":
        return [d["data_prefix"]["seg_map_path"] for d in datasets]
    if dotted == "train.reduce_zero_label":
        return datasets[0]["reduce_zero_label"]
    if dotted.startswith(("train.", "test.")):
        split, name, *key = dotted.split(".")
        pipe = datasets[0]["pipeline"] if split == "train" else cfg["val_dataloader"]["dataset"]["pipeline"]
        found = transforms(pipe).get(name)
        return found is not None if not key else (found or {}).get(key[0])
    value = cfg
    for part in dotted.split("."):
        try:
            value = value[int(part)] if isinstance(value, list) else value[part]
        except KeyError:
            return "<absent>"
    return value


def plain(value):
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def mismatches(cfg, batch, published):
    return [f"{key}: SlimBench {plain(lookup(cfg, batch, key))!r}, published {value!r} ({source})"
            for key, (value, source) in published.items() if plain(lookup(cfg, batch, key)) != value]


@pytest.mark.parametrize("suite", sorted(PUBLISHED))
def test_suite_hands_mmengine_the_published_config_on_four_processes(suite, r50, tmp_path, monkeypatch):
    """MMSeg's 4xbN recipes: under torchrun with 4 processes each loads N images a step, no accumulation."""
    cfg, batch = described(r50, suite, tmp_path, monkeypatch, world_size=4,
                           overrides=["params.launcher=pytorch"])
    assert not mismatches(cfg, batch, PUBLISHED[suite]), "\n".join(mismatches(cfg, batch, PUBLISHED[suite]))
    assert cfg["train_dataloader"]["batch_size"] == PUBLISHED_PER_GPU[suite]
    assert cfg["optim_wrapper"].get("accumulative_counts", 1) == 1 and batch["accumulative_counts"] == 1
    # SyncBN over the 4 processes normalizes the whole global batch, as on the recipe's 4 GPUs
    assert batch["bn_batch"] == PUBLISHED[suite]["global_batch"][0] == batch["bn_batch_published"]
    assert batch["bn_batch_note"] is None


@pytest.mark.parametrize("suite", sorted(PUBLISHED))
def test_one_process_trains_the_published_global_batch_by_accumulating(suite, r50, tmp_path, monkeypatch):
    """One process carries the whole global batch: N images a step, MMEngine accumulating 4 steps per update.

    The loop and the poly schedule then count 4 iterations per update, so updates, lr per update and
    checkpoints per update are the published ones.
    """
    cfg, batch = described(r50, suite, tmp_path, monkeypatch)
    per_gpu, published = PUBLISHED_PER_GPU[suite], PUBLISHED[suite]
    assert cfg["train_dataloader"]["batch_size"] == per_gpu and cfg["optim_wrapper"]["accumulative_counts"] == 4
    iters = published["train_cfg.max_iters"][0]
    assert cfg["train_cfg"]["max_iters"] == cfg["param_scheduler"][0]["end"] == 4 * iters
    unchanged = {k: v for k, v in published.items()
                 if k not in ("train_cfg.max_iters", "param_scheduler.0.end") and v[0] != "SyncBN"}
    assert not mismatches(cfg, batch, unchanged), "\n".join(mismatches(cfg, batch, unchanged))
    # SyncBN needs a process group: one process runs plain BN over one step's images, and says so
    for key in (k for k, (v, _) in published.items() if v == "SyncBN"):
        assert lookup(cfg, batch, key) == "BN"
    assert (batch["bn_batch"], batch["bn_batch_published"]) == (per_gpu, published["global_batch"][0])
    assert f"{per_gpu} images together here" in batch["bn_batch_note"]


def test_backbone_and_voc_padding_are_the_documented_departures(r50, tmp_path, monkeypatch):
    """docs/fidelity.md: a torchvision-layout ResNet (7x7 stem, 64w channels) for MMSeg's ResNetV1c
    (fcn_r50-d8.py:15), and VOC's Pad(size=crop) (pascal_voc12_aug.py:16) left to the data preprocessor."""
    cfg, _ = described(r50, "voc-seg", tmp_path, monkeypatch, subnet="w0.5")
    backbone = cfg["model"]["backbone"]
    assert (backbone["type"], backbone["depth"], backbone["style"]) == ("ResNet", 50, "pytorch")
    assert backbone["stem_channels"] == backbone["base_channels"] == 32           # 64 x 0.5
    train = [t["type"] for t in cfg["train_dataloader"]["dataset"]["datasets"][0]["pipeline"]]
    assert "Pad" not in train and train.index("RandomCrop") < train.index("PackSegInputs")
    pre = cfg["model"]["data_preprocessor"]   # pads every image to 512 x 512 with Pad's defaults, 0 and 255
    assert (plain(pre["size"]), pre["pad_val"], pre["seg_pad_val"]) == ([512, 512], 0, 255)


def test_a_global_batch_the_processes_cannot_split_is_refused(r50, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"params.batch_size 8 \(global\).*3 processes"):
        described(r50, "cityscapes-seg", tmp_path, monkeypatch, world_size=3, overrides=["params.launcher=pytorch"])
    cfg, batch = described(r50, "cityscapes-seg", tmp_path, monkeypatch, world_size=8,
                           overrides=["params.launcher=pytorch"])
    assert batch["per_step"] == 1 and cfg["train_cfg"]["max_iters"] == 40000


def test_demo_seg_trains_as_before(r50, tmp_path, monkeypatch):
    """The demo keeps its effective training on one process: 350 iterations of 8 crops, lr 0.05."""
    cfg, batch = described(r50, "demo-seg", tmp_path, monkeypatch)
    assert {k: batch[k] for k in ("global", "processes", "per_process", "per_step", "accumulative_counts")} == \
        {"global": 8, "processes": 1, "per_process": 8, "per_step": 8, "accumulative_counts": 1}
    assert batch["bn_batch"] == 8 and batch["bn_batch_note"] is None   # one step holds the whole batch
    assert (cfg["train_dataloader"]["batch_size"], cfg["train_cfg"]["max_iters"]) == (8, 350)
    assert cfg["optim_wrapper"]["optimizer"]["lr"] == 0.05


def test_describe_reads_no_dataset_and_writes_nothing(r50, tmp_path, monkeypatch):
    cfg, _ = described(r50, "demo-seg", tmp_path, monkeypatch)
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
    assert cfg["model"]["backbone"]["init_cfg"]["checkpoint"].endswith("backbone.pth")
