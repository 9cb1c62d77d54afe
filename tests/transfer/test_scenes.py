"""The demo scene set: its files agree with each other and with the scenes that made them."""
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from transfer.scenes import SceneSettings, ensure_scenes, generate_scenes

SETTINGS = SceneSettings(num_train=12, num_val=4, seed=3)


@pytest.fixture(scope="module")
def scenes_root(tmp_path_factory):
    return ensure_scenes(tmp_path_factory.mktemp("scenes") / "demo-scenes", SETTINGS)


@pytest.mark.parametrize("split", ["train", "val"])
def test_boxes_masks_and_images_agree(scenes_root, split):
    coco = json.loads((scenes_root / "annotations" / f"instances_{split}.json").read_text())
    scenes = generate_scenes(SETTINGS, split)
    assert len(coco["images"]) == len(scenes) == (12 if split == "train" else 4)
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for info, scene in zip(coco["images"], scenes):
        image = np.asarray(Image.open(scenes_root / "img_dir" / split / info["file_name"]))
        semantic = np.asarray(Image.open(scenes_root / "ann_dir" / split / info["file_name"]))
        assert image.shape == (info["height"], info["width"], 3)
        assert np.array_equal(image, scene.image)
        assert 96 <= info["height"] <= 160 and 96 <= info["width"] <= 160
        anns = by_image.get(info["id"], [])
        assert len(anns) == len(scene.objects) >= 1
        covered = np.zeros(semantic.shape, bool)
        for ann, obj in zip(anns, scene.objects):
            mask = mask_utils.decode(ann["segmentation"]).astype(bool)
            assert np.array_equal(mask, obj.mask)
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["area"] == mask.sum()
            assert (semantic[mask] == ann["category_id"]).all()
            # the silhouette is the item: every mask pixel shows an item brighter than the threshold x tint
            assert image[mask].max(axis=-1).min() >= int(SETTINGS.threshold * 0.6)
            covered |= mask
        assert (semantic[~covered] == 0).all()


def test_reused_when_settings_match_and_regenerated_otherwise(scenes_root):
    meta = scenes_root / "meta.json"
    mtime = meta.stat().st_mtime_ns
    ensure_scenes(scenes_root, SETTINGS)
    assert meta.stat().st_mtime_ns == mtime
    meta.write_text("{broken")  # an interrupted write is never taken for a finished one
    ensure_scenes(scenes_root, SETTINGS)
    assert json.loads(meta.read_text())["seed"] == 3


def test_deterministic():
    a, b = generate_scenes(SETTINGS, "val"), generate_scenes(SETTINGS, "val")
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
