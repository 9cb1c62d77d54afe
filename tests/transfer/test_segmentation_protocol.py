"""Protocol ``mmseg``: suites validate, datasets say what they expect, a width-0.25 FCN trains and evaluates."""
from pathlib import Path

import pytest
import torch

from pretrain.checkpoints.format import Checkpoint
from pretrain.config import from_dict, load_yaml
from pretrain.errors import ConfigError, DataError
from pretrain.models.resnet import SlimResNet
from pretrain.models.spec import SubnetSpec
from transfer.protocols.base import RunContext, get_protocol
from transfer.scenes import SceneSettings, ensure_scenes

SUITES = Path(__file__).resolve().parents[2] / "configs" / "suites"
MMSEG = get_protocol("mmseg")


@pytest.mark.parametrize("suite", ["ade20k-seg", "voc-seg", "cityscapes-seg", "cityscapes-seg-512x1024", "demo-seg"])
def test_suites_validate(suite):
    data = load_yaml(SUITES / f"{suite}.yaml")
    assert data["protocol"] == "mmseg"
    params = from_dict(MMSEG.Params, data["params"], suite)
    dataset = from_dict(MMSEG.Dataset, data["dataset"], suite)
    expected = {"ade20k-seg": ("upernet", 160000, "ade20k", 150), "voc-seg": ("fcn", 20000, "voc-aug", 21),
                "cityscapes-seg": ("fcn", 40000, "cityscapes", 19),
                "cityscapes-seg-512x1024": ("fcn", 40000, "cityscapes", 19)}.get(suite)
    if expected:
        from transfer.segmentation.compat import import_mmseg

        import_mmseg()
        assert (params.model, params.iterations, dataset.kind, len(dataset.classes_tuple())) == expected
    else:
        assert len(dataset.classes_tuple()) == 11 and dataset.classes_tuple()[0] == "background"


def test_bad_blocks_fail_with_the_key():
    with pytest.raises(ConfigError, match="classes"):
        from_dict(MMSEG.Dataset, {"kind": "folder"}, "suite.yaml")
    with pytest.raises(ConfigError, match="crop_size"):
        from_dict(MMSEG.Params, {"crop_size": [512]}, "suite.yaml")
    with pytest.raises(ConfigError, match="'params.model'|model"):
        from_dict(MMSEG.Params, {"model": "deeplab"}, "suite.yaml")


@pytest.mark.parametrize("kind,expected", [("ade20k", "ADEChallengeData2016/images/training"),
                                           ("voc-aug", "SegmentationClassAug"),
                                           ("cityscapes", "gtFine_labelTrainIds"),
                                           ("folder", "img_dir/{train,val}")])
def test_missing_dataset_names_the_layout(tmp_path, kind, expected):
    block = {"kind": kind, **({"classes": ["a", "b"]} if kind == "folder" else {})}
    with pytest.raises(DataError, match=expected.replace("{", r"\{").replace("}", r"\}")):
        from_dict(MMSEG.Dataset, block, "suite.yaml").check(tmp_path)


@pytest.mark.slow
def test_width_quarter_fcn_trains_one_iteration_and_evaluates(tmp_path):
    """A 4-image folder in MMSeg's layout (the demo scenes); the run resumes from its own checkpoint."""
    root = ensure_scenes(tmp_path / "scenes", SceneSettings(num_train=4, num_val=4, seed=1))
    dataset = from_dict(MMSEG.Dataset, {"kind": "folder", "root": str(root), "img_suffix": ".png",
                                        "classes": ["background"] + [f"c{i}" for i in range(10)]}, "test")
    dataset.check(tmp_path)
    params = from_dict(MMSEG.Params, {
        # a global batch of 2 in steps of 1: MMEngine accumulates 2 steps for the one update
        "iterations": 1, "batch_size": 2, "max_batch_per_step": 1,
        "crop_size": [48, 48], "resize_scale": [96, 96], "ratio_range": [1.0, 1.0],
        "num_workers": 0, "log_interval": 1,
        "model_overrides": {"backbone.strides": [1, 2, 2, 2], "backbone.dilations": [1, 1, 1, 1],
                            "decode_head.channels": 16, "auxiliary_head.channels": 8}}, "test")
    torch.manual_seed(0)
    ckpt = Checkpoint.from_model(SlimResNet(18, widths=[1.0, 0.25], stem="small"))
    ctx = RunContext("seg-test", ckpt, [SubnetSpec(0.25)], params, dataset, tmp_path, tmp_path / "run",
                     device=torch.device("cpu"))
    rows = list(MMSEG().run(ctx))
    assert [(r.subnet, r.metric) for r in rows] == [("w0.25", "mIoU"), ("w0.25", "mAcc"), ("w0.25", "aAcc")]
    assert all(0.0 <= r.value <= 100.0 for r in rows)
    folder = tmp_path / "run" / "w0.25" / "seed0"   # ctx.work_dir: one folder per sub-network and seed
    assert (folder / "backbone.pth").is_file() and (folder / "work_dir" / "iter_2.pth").is_file()
    assert ctx.info["accumulative_counts"] == 2 and ctx.info["global_batch_size"] == 2
    assert list((folder / "work_dir").rglob("events.out.tfevents.*"))   # `tensorboard --logdir runs` shows it
    written = (folder / "config.py").read_text()
    assert "SlimBenchResNet" in written and "transfer.segmentation.backbone" in written
    # without its results.json the rerun resumes from the Runner checkpoint it wrote (full unpickling
    # scoped to that folder): nothing left to train, the same evaluation
    (folder / "results.json").unlink()
    assert list(MMSEG().run(ctx)) == rows
    assert (folder / "results.json").is_file() and list(MMSEG().run(ctx)) == rows
    # as if killed while MMEngine wrote its record of the last checkpoint: opened, still empty
    (folder / "results.json").unlink()
    (folder / "work_dir" / "last_checkpoint").write_text("")
    assert list(MMSEG().run(ctx)) == rows
    assert (folder / "work_dir" / "last_checkpoint").read_text() == str(folder / "work_dir" / "iter_2.pth")


def test_launcher_auto_follows_torchrun():
    from transfer.segmentation.protocol import resolve_launcher

    assert resolve_launcher("auto", {"WORLD_SIZE": "4"}) == "pytorch"
    assert resolve_launcher("auto", {}) == "none"
    assert resolve_launcher("slurm", {"WORLD_SIZE": "4"}) == "slurm"


def test_every_seg_suite_states_that_its_batch_size_is_global():
    suites = Path(__file__).resolve().parents[2] / "configs" / "suites"
    seg = [p for p in sorted(suites.glob("*.yaml")) if load_yaml(p).get("protocol") == "mmseg"]
    assert len(seg) >= 5
    for path in seg:
        (line,) = [ln for ln in path.read_text().splitlines() if ln.strip().startswith("batch_size:")]
        assert "global" in line, f"{path.name}: {line}"


@pytest.mark.parametrize("global_batch,processes,max_per_step,expected", [
    (16, 4, 4, (4, 1)), (16, 1, 4, (4, 4)), (16, 2, 4, (4, 2)), (8, 1, None, (8, 1)), (8, 1, 3, (2, 4)),
    (16, 16, 4, (1, 1))])
def test_split_batch_takes_each_process_share_in_the_fewest_steps(global_batch, processes, max_per_step, expected):
    from transfer.segmentation.schedule import split_batch

    split = split_batch(global_batch, processes, max_per_step)
    assert (split.per_step, split.accumulative_counts) == expected
    assert split.per_step * split.accumulative_counts * processes == global_batch


def test_split_batch_refuses_a_global_batch_the_processes_cannot_share():
    from transfer.segmentation.schedule import split_batch

    with pytest.raises(ConfigError, match=r"batch_size 16 \(global\) cannot be split evenly over 3 processes"):
        split_batch(16, 3, 4)
    with pytest.raises(ConfigError, match="over 32 processes"):
        split_batch(16, 32)


def test_global_batch_counts_the_processes_of_each_launcher():
    from transfer.segmentation.protocol import launcher_processes

    env = {"WORLD_SIZE": "8", "SLURM_NTASKS": "16", "OMPI_COMM_WORLD_SIZE": "4"}
    assert [launcher_processes(k, env) for k in ("none", "pytorch", "slurm", "mpi")] == [1, 8, 16, 4]
    assert launcher_processes("pytorch", {}) == 1
