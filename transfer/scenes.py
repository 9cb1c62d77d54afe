"""Demo scenes composed from real Fashion-MNIST objects, for detection and segmentation.

Each scene is a 96-160 px canvas with a textured background and 1-4 non-overlapping items;
an item's mask is its thresholded silhouette and its box the mask's extent, so labels are
exact by construction. One generator writes one folder that serves both engines:

    <root>/img_dir/{train,val}/NNNNNN.png          images (RGB)
    <root>/annotations/instances_{train,val}.json  COCO instances (RLE masks, xywh boxes)
    <root>/ann_dir/{train,val}/NNNNNN.png          MMSeg semantic masks: 0 background, 1+c class c
    <root>/meta.json                               generator settings; written last

A folder whose ``meta.json`` matches the requested settings is reused; anything else is
regenerated, so an interrupted write is never mistaken for a finished one.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from pretrain.checkpoints.format import atomic_write_bytes
from pretrain.data.datasets import FMNIST_CLASSES, FashionMNIST

SCENES_VERSION = 1
SPLITS = {"train": "train", "val": "test"}  # scene split -> Fashion-MNIST split its objects come from


@dataclass(frozen=True)
class SceneObject:
    """One item in a scene: class index, box (x, y, w, h) and silhouette mask."""

    category: int
    box: Tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Scene:
    """An RGB image (H, W, 3, uint8) and its objects."""

    image: np.ndarray = field(repr=False)
    objects: Tuple[SceneObject, ...]

    def semantic_mask(self) -> np.ndarray:
        """(H, W) uint8: 0 background, 1 + class index on each object's silhouette."""
        out = np.zeros(self.image.shape[:2], np.uint8)
        for obj in self.objects:
            out[obj.mask] = obj.category + 1
        return out


@dataclass(frozen=True)
class SceneSettings:
    """Everything that determines a generated scene set."""

    num_train: int = 200
    num_val: int = 50
    min_size: int = 96
    max_size: int = 160
    max_objects: int = 4
    min_scale: float = 1.0
    max_scale: float = 2.0
    threshold: int = 32   # silhouette: item pixels brighter than this (0-255)
    seed: int = 0
    version: int = SCENES_VERSION


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random gradient with mild noise: darker than most items, never flat."""
    base = rng.uniform(0, 60, size=3)
    gx, gy = rng.uniform(-30, 30, size=(2, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    img = base + gx * (xx[..., None] / w) + gy * (yy[..., None] / h) + rng.normal(0, 4, size=(h, w, 3))
    return np.clip(img, 0, 255)


def _resize(item: np.ndarray, scale: float) -> np.ndarray:
    size = max(8, int(round(28 * scale)))
    return np.asarray(Image.fromarray(item).resize((size, size), Image.BILINEAR))


def compose_scene(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray,
                  s: SceneSettings) -> Scene:
    """One scene from Fashion-MNIST ``images`` (N, 28, 28) and ``labels``."""
    h, w = (int(v) for v in rng.integers(s.min_size, s.max_size + 1, size=2))
    canvas = _background(rng, h, w)
    occupied = np.zeros((h, w), bool)
    objects: List[SceneObject] = []
    for _ in range(int(rng.integers(1, s.max_objects + 1))):
        for _attempt in range(20):
            idx = int(rng.integers(len(images)))
            item = _resize(images[idx], float(rng.uniform(s.min_scale, s.max_scale)))
            silhouette = item > s.threshold
            if silhouette.sum() < 16:
                continue
            ih, iw = item.shape
            if ih > h or iw > w:
                continue
            y0, x0 = int(rng.integers(0, h - ih + 1)), int(rng.integers(0, w - iw + 1))
            mask = np.zeros((h, w), bool)
            mask[y0:y0 + ih, x0:x0 + iw] = silhouette
            # keep a one-pixel gap so boxes and masks of neighbours never touch
            grown = np.zeros_like(mask)
            grown[max(0, y0 - 2):y0 + ih + 2, max(0, x0 - 2):x0 + iw + 2] = True
            if (grown & occupied).any():
                continue
            tint = rng.uniform(0.6, 1.0, size=3)
            patch = item[..., None].astype(np.float64) * tint
            region = canvas[y0:y0 + ih, x0:x0 + iw]
            region[silhouette] = patch[silhouette]
            occupied |= grown
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
            objects.append(SceneObject(int(labels[idx]), box, mask))
            break
    return Scene(np.clip(canvas, 0, 255).astype(np.uint8), tuple(objects))


def generate_scenes(settings: SceneSettings, split: str, data_root: Optional[Path] = None) -> List[Scene]:
    """The deterministic scene list of ``split`` ('train' objects from FMNIST train, 'val' from test)."""
    source = FashionMNIST(data_root, SPLITS[split])
    rng = np.random.default_rng([settings.seed, 0 if split == "train" else 1])
    n = settings.num_train if split == "train" else settings.num_val
    labels = source.targets.numpy()
    return [compose_scene(rng, source.images, labels, settings) for _ in range(n)]


def coco_dict(scenes: Sequence[Scene], file_names: Sequence[str]) -> Dict:
    """COCO instances for ``scenes`` (RLE masks via pycocotools, categories 1..10)."""
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for img_id, (scene, name) in enumerate(zip(scenes, file_names), start=1):
        h, w = scene.image.shape[:2]
        images.append({"id": img_id, "file_name": name, "height": h, "width": w})
        for obj in scene.objects:
            rle = mask_utils.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({"id": len(annotations) + 1, "image_id": img_id, "category_id": obj.category + 1,
                                "bbox": list(obj.box), "area": int(obj.mask.sum()), "iscrowd": 0,
                                "segmentation": rle})
    categories = [{"id": i + 1, "name": name, "supercategory": "fashion"} for i, name in enumerate(FMNIST_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _png_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def ensure_scenes(root: Path, settings: SceneSettings = SceneSettings(),
                  data_root: Optional[Path] = None) -> Path:
    """Write the demo scene set under ``root`` unless an identical finished one is there."""
    root = Path(root)
    meta_path = root / "meta.json"
    wanted = asdict(settings)
    if meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == wanted:
                return root
        except json.JSONDecodeError:
            pass
    if root.exists():
        shutil.rmtree(root)
    for split in SPLITS:
        scenes = generate_scenes(settings, split, data_root)
        names = [f"{i:06d}.png" for i in range(len(scenes))]
        for sub in ("img_dir", "ann_dir"):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
        for scene, name in zip(scenes, names):
            (root / "img_dir" / split / name).write_bytes(_png_bytes(scene.image))
            (root / "ann_dir" / split / name).write_bytes(_png_bytes(scene.semantic_mask()))
        atomic_write_bytes(root / "annotations" / f"instances_{split}.json",
                           json.dumps(coco_dict(scenes, names)).encode())
    atomic_write_bytes(meta_path, json.dumps(wanted, indent=1).encode())
    return root
