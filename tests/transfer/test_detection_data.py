"""COCO jsons of every mask kind: read once, INPUT.MASK_FORMAT from the file, bad files refused by name.

The jsons are built from real demo scenes (pycocotools RLE) and loaded with Detectron2's own
``load_coco_json`` and ``annotations_to_instances``, so the chosen format is the one Detectron2 accepts.
"""
import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.config import from_dict
from pretrain.errors import DataError
from transfer.detection.data import BOX_ONLY_BASE_CONFIG, CocoContents, DetectionData
from transfer.scenes import SceneSettings, ensure_scenes

SPLITS = {"train": "instances_train.json", "val": "instances_val.json"}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Four training and four validation scenes; their jsons hold compressed RLE (pycocotools' encode)."""
    return ensure_scenes(tmp_path_factory.mktemp("det-data") / "scenes", SceneSettings(num_train=4, num_val=4))


def uncompressed_rle(segm: dict) -> dict:
    """The same mask as RLE with ``counts`` a list of run lengths (column-major, starting with zeros)."""
    from pycocotools import mask as mask_utils

    flat = mask_utils.decode(segm).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [len(flat)]])
    counts = np.diff(edges).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": list(segm["size"]), "counts": counts}


def box_polygon(ann: dict) -> list:
    x, y, w, h = ann["bbox"]
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def variant(scenes: Path, split: str, kind: str, out: Path) -> Path:
    """A copy of a scene json whose masks are ``kind``: compressed, list, polygon, none or mixed."""
    data = json.loads((scenes / "annotations" / SPLITS[split]).read_text())
    for i, ann in enumerate(data["annotations"]):
        if kind == "list" or (kind == "mixed" and i % 2):
            ann["segmentation"] = uncompressed_rle(ann["segmentation"])
        elif kind == "polygon" or kind == "mixed":
            ann["segmentation"] = box_polygon(ann)
        elif kind == "none":
            del ann["segmentation"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    return out


def loads_in_detectron2(json_path: Path, image_root: Path, mask_format: str) -> int:
    """Masks Detectron2's loader and mapper build from ``json_path`` with ``mask_format`` (raises if it cannot)."""
    from transfer.detection.compat import import_detectron2

    import_detectron2()
    from detectron2.data.datasets.coco import load_coco_json
    from detectron2.data.detection_utils import annotations_to_instances

    masks = 0
    for record in load_coco_json(str(json_path), str(image_root)):
        annos = [a for a in record["annotations"] if not a.get("iscrowd", 0)]   # as DatasetMapper does
        instances = annotations_to_instances(annos, (record["height"], record["width"]), mask_format=mask_format)
        masks += len(instances.gt_masks)
    return masks


def test_uncompressed_rle_is_the_same_mask(scenes):
    from pycocotools import mask as mask_utils

    ann = json.loads((scenes / "annotations" / SPLITS["train"]).read_text())["annotations"][0]
    listed = uncompressed_rle(ann["segmentation"])
    assert isinstance(listed["counts"], list)
    assert np.array_equal(mask_utils.decode(mask_utils.frPyObjects(listed, *listed["size"])),
                          mask_utils.decode(ann["segmentation"]))


@pytest.mark.parametrize("kind, expected", [("compressed", "bitmask"), ("list", "bitmask"), ("polygon", "polygon")])
def test_mask_format_comes_from_the_file_and_detectron2_loads_it(scenes, tmp_path, kind, expected):
    path = variant(scenes, "train", kind, tmp_path / f"{kind}.json")
    contents = CocoContents.read(path)
    assert contents.num_categories == 10 and contents.num_images == 4
    fmt = contents.mask_format("mask_rcnn_R_50_FPN_1x")
    assert fmt == expected
    n = sum(contents.mask_counts.values())
    assert loads_in_detectron2(path, scenes / "img_dir" / "train", fmt) == n > 0
    if expected == "bitmask":   # the crash of a Mask R-CNN left at its base config's polygon format
        with pytest.raises(ValueError, match="Failed to use mask_format=='polygon'"):
            loads_in_detectron2(path, scenes / "img_dir" / "train", "polygon")
        with pytest.raises(DataError, match=rf"{kind}\.json: dataset.mask_format 'polygon', but its masks are RLE"):
            contents.mask_format("mask_rcnn_R_50_FPN_1x", explicit="polygon")


def test_mixed_formats_are_refused_unless_bitmask_is_asked_for(scenes, tmp_path):
    path = variant(scenes, "train", "mixed", tmp_path / "mixed.json")
    contents = CocoContents.read(path)
    with pytest.raises(DataError, match=r"mixed\.json: mixed mask formats, polygons in \d+ annotations \(e\.g\. id 1\) "
                                        r"and RLE in \d+ \(e\.g\. id 2\)"):
        contents.mask_format("mask_rcnn_R_50_FPN_1x")
    # Detectron2's bitmask path rasterises the polygons and decodes the RLE of one dataset
    assert contents.mask_format("mask_rcnn_R_50_FPN_1x", explicit="bitmask") == "bitmask"
    assert loads_in_detectron2(path, scenes / "img_dir" / "train", "bitmask") == sum(contents.mask_counts.values())


def test_crowd_rle_does_not_make_a_polygon_file_mixed(scenes, tmp_path):
    # COCO 2017 itself: polygons for objects, uncompressed RLE for iscrowd regions
    path = variant(scenes, "train", "polygon", tmp_path / "coco-like.json")
    data = json.loads(path.read_text())
    crowd = copy.deepcopy(json.loads((scenes / "annotations" / SPLITS["train"]).read_text())["annotations"][0])
    crowd.update(id=999, iscrowd=1, segmentation=uncompressed_rle(crowd["segmentation"]))
    data["annotations"].append(crowd)
    path.write_text(json.dumps(data))
    contents = CocoContents.read(path)
    assert contents.mask_format("mask_rcnn_R_50_FPN_1x") == "polygon"
    assert loads_in_detectron2(path, scenes / "img_dir" / "train", "polygon") == contents.mask_counts["polygon"]


def test_a_file_without_masks_refuses_a_mask_rcnn_and_names_a_box_only_config(scenes, tmp_path):
    path = variant(scenes, "train", "none", tmp_path / "boxes.json")
    contents = CocoContents.read(path)
    with pytest.raises(DataError, match=rf"boxes\.json: no annotation has a segmentation, but base config "
                                        rf"'mask_rcnn_R_50_FPN_1x' trains masks .*{BOX_ONLY_BASE_CONFIG}"):
        contents.mask_format("mask_rcnn_R_50_FPN_1x")
    data = json.loads(variant(scenes, "train", "compressed", tmp_path / "partial.json").read_text())
    del data["annotations"][1]["segmentation"]
    (tmp_path / "partial.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"partial\.json: 1 of \d+ annotations have no segmentation \(e\.g\. id 2\)"):
        CocoContents.read(tmp_path / "partial.json").mask_format("mask_rcnn_R_50_FPN_1x")


def test_the_named_box_only_config_trains_no_masks():
    from pretrain.models.resnet import SlimResNet
    from transfer.detection.config import build_config

    arch = SlimResNet(50, widths=[1.0, 0.25]).arch_config()
    assert build_config(BOX_ONLY_BASE_CONFIG, "w0.25", arch).MODEL.MASK_ON is False
    assert build_config("mask_rcnn_R_50_FPN_1x", "w0.25", arch).MODEL.MASK_ON is True


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.pop("categories"), r"no 'categories' \(missing or empty\)"),
    (lambda d: d.update(images=[], annotations=[]), r"no 'images' or 'annotations' \(missing or empty\)"),
    (lambda d: d["annotations"][0].update(segmentation=7), r"annotation 1: segmentation of type int: expected "
                                                           r"polygons"),
    (lambda d: d["annotations"][0]["segmentation"].pop("size"), r"annotation 1: segmentation of type dict"),
], ids=["no-categories", "no-images-or-annotations", "number-as-mask", "rle-without-size"])
def test_malformed_jsons_fail_naming_the_file(scenes, tmp_path, damage, message):
    data = json.loads((scenes / "annotations" / SPLITS["train"]).read_text())
    damage(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path / 'bad.json'))}: {message}"):
        CocoContents.read(tmp_path / "bad.json")


def test_unreadable_and_non_object_jsons_fail_naming_the_file(tmp_path):
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match=r"list\.json: a JSON list; expected a COCO instances object"):
        CocoContents.read(tmp_path / "list.json")
    (tmp_path / "cut.json").write_text('{"images": [')
    with pytest.raises(DataError, match=r"cut\.json: not a readable COCO annotation file"):
        CocoContents.read(tmp_path / "cut.json")


def test_inspect_reads_both_splits_and_voc_has_no_masks(scenes, tmp_path):
    layout = {"kind": "coco", "root": str(scenes), "train_images": "img_dir/train", "val_images": "img_dir/val",
              "train_annotations": "annotations/instances_train.json",
              "val_annotations": "annotations/instances_val.json"}
    dataset = from_dict(DetectionData, layout, "t")
    contents = dataset.inspect(tmp_path)
    assert contents.num_classes == 10 and contents.train.num_images == contents.val.num_images == 4
    assert dataset.mask_format_for(contents, "mask_rcnn_R_50_FPN_1x") == "bitmask"
    voc = from_dict(DetectionData, {"kind": "voc"}, "t")
    with pytest.raises(DataError, match=rf"Pascal VOC has no instance masks.*{BOX_ONLY_BASE_CONFIG}"):
        voc.mask_format_for(voc.inspect(tmp_path), "mask_rcnn_R_50_C4_1x")


@pytest.mark.slow
@pytest.mark.parametrize("train_kind, val_kind", [("list", "compressed"), ("compressed", "list")])
def test_mask_rcnn_trains_and_evaluates_on_rle_at_its_base_configs_mask_format(scenes, tmp_path, train_kind,
                                                                                 val_kind):
    """mask_rcnn_R_50_FPN_1x keeps Detectron2's default polygon format; RLE jsons crashed its loader."""
    from pretrain.checkpoints.format import Checkpoint
    from pretrain.models.resnet import SlimResNet
    from pretrain.models.spec import SubnetSpec
    from transfer.protocols.base import RunContext, get_protocol

    root = tmp_path / "coco"
    variant(scenes, "train", train_kind, root / "annotations" / "train.json")
    variant(scenes, "val", val_kind, root / "annotations" / "val.json")
    proto = get_protocol("detectron2")
    dataset = from_dict(proto.Dataset, {"kind": "coco", "root": str(root),
                                        "train_images": str(scenes / "img_dir" / "train"),
                                        "train_annotations": "annotations/train.json",
                                        "val_images": str(scenes / "img_dir" / "val"),
                                        "val_annotations": "annotations/val.json"}, "t")
    params = from_dict(proto.Params, {
        "base_config": "mask_rcnn_R_50_FPN_1x", "iterations": 2, "batch_size": 2, "lr": 0.001, "steps": [],
        "warmup_iters": 1, "min_size_train": [64], "max_size_train": 96, "min_size_test": 64, "max_size_test": 96,
        "precise_bn": False, "num_workers": 0,
        "overrides": {"MODEL.FPN.OUT_CHANNELS": 64, "MODEL.ROI_MASK_HEAD.CONV_DIM": 32,
                      "MODEL.ROI_BOX_HEAD.FC_DIM": 128, "MODEL.RPN.POST_NMS_TOPK_TRAIN": 100,
                      "MODEL.RPN.POST_NMS_TOPK_TEST": 50, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32}}, "t")
    dataset.check(tmp_path)
    torch.manual_seed(0)
    ckpt = Checkpoint.from_model(SlimResNet(50, widths=[1.0, 0.25]))
    ctx = RunContext("rle-test", ckpt, [SubnetSpec(0.25)], params, dataset, tmp_path, tmp_path / "run",
                     device=torch.device("cpu"))
    values = {r.metric: r.value for r in proto().run(ctx)}

    assert ctx.info["mask_format"] == "bitmask"
    assert "MASK_FORMAT: bitmask" in (tmp_path / "run" / "w0.25" / "seed0" / "config.yaml").read_text()
    for metric in ("box_AP", "mask_AP", "mask_AP50"):
        assert 0.0 <= values[metric] <= 100.0
