"""The ``dataset:`` block of detection suites and its registration in Detectron2's catalogs.

Three layouts, each relative to ``--data-root`` (or an absolute ``root``):

* ``coco``: any COCO-format set, an images folder and an instances json per split
  (default: Detectron2's ``coco/{train2017,val2017}`` and ``coco/annotations/instances_*2017.json``);
* ``voc``: Pascal VOC's devkit folders ``VOC2007`` and ``VOC2012`` (``Annotations``, ``JPEGImages``,
  ``ImageSets/Main/{trainval,test}.txt``), trained on VOC07+12 trainval, tested on VOC07 test;
* ``demo-scenes``: Fashion-MNIST scenes (``transfer.scenes``) written on first use to
  ``<data-root>/demo-scenes`` in the COCO layout, with RLE masks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Tuple

from pretrain.datasets import find_fmnist
from pretrain.errors import DataError
from transfer.scenes import SceneSettings, ensure_scenes

DEFAULT_ROOTS = {"coco": "coco", "voc": ".", "demo-scenes": "demo-scenes"}
COCO_LAYOUTS = {  # kind -> (train images, train json, val images, val json)
    "coco": ("train2017", "annotations/instances_train2017.json", "val2017", "annotations/instances_val2017.json"),
    "demo-scenes": ("img_dir/train", "annotations/instances_train.json", "img_dir/val", "annotations/instances_val.json"),
}
VOC_NUM_CLASSES = 20


@dataclass
class DetectionData:
    """Where a detection set lives and in which layout; ``check`` runs before any work starts."""

    kind: Literal["coco", "voc", "demo-scenes"] = "coco"
    root: Optional[str] = None               # default: coco | . (VOC2007, VOC2012 at the data root) | demo-scenes
    train_images: Optional[str] = None       # coco layout, relative to root; defaults per kind (COCO_LAYOUTS)
    train_annotations: Optional[str] = None
    val_images: Optional[str] = None
    val_annotations: Optional[str] = None
    voc_train: List[str] = field(default_factory=lambda: ["VOC2007/trainval", "VOC2012/trainval"])
    voc_test: str = "VOC2007/test"           # FOLDER/SPLIT, FOLDER named VOC<year>
    mask_format: Optional[Literal["polygon", "bitmask"]] = None  # default: bitmask (RLE) for demo-scenes, else the base config's
    num_train: int = 200                     # demo-scenes only: scene counts and seed
    num_val: int = 50
    seed: int = 0

    def validate(self) -> None:
        for entry in [*self.voc_train, self.voc_test]:
            self._voc_part(entry)
        if min(self.num_train, self.num_val) < 1:
            raise ValueError("num_train and num_val must be at least 1")

    # -- layout ---------------------------------------------------------------------------------
    def path(self, data_root: Path) -> Path:
        """The dataset folder: ``root`` (absolute, or under ``data_root``) or the kind's default."""
        root = Path(self.root if self.root is not None else DEFAULT_ROOTS[self.kind])
        return root if root.is_absolute() else Path(data_root) / root

    def coco_files(self, data_root: Path) -> Tuple[Path, Path, Path, Path]:
        """(train images, train json, val images, val json) of a COCO-format kind."""
        defaults = COCO_LAYOUTS[self.kind]
        given = (self.train_images, self.train_annotations, self.val_images, self.val_annotations)
        root = self.path(data_root)
        return tuple(root / (g if g is not None else d) for g, d in zip(given, defaults))

    @staticmethod
    def _voc_part(entry: str) -> Tuple[str, str, int]:
        folder, _, split = entry.rpartition("/")
        year = folder[3:] if folder.startswith("VOC") else ""
        if not (folder and split and year.isdigit()):
            raise ValueError(f"VOC entry {entry!r}: expected 'VOC<year>/<split>' such as 'VOC2007/trainval'")
        return folder, split, int(year)

    def scene_settings(self) -> SceneSettings:
        return SceneSettings(num_train=self.num_train, num_val=self.num_val, seed=self.seed)

    @property
    def default_evaluator(self) -> str:
        return "voc" if self.kind == "voc" else "coco"

    @property
    def resolved_mask_format(self) -> Optional[str]:
        """INPUT.MASK_FORMAT this data needs, or None to keep the base config's."""
        return self.mask_format or ("bitmask" if self.kind == "demo-scenes" else None)

    # -- checks ---------------------------------------------------------------------------------
    def check(self, data_root: Path) -> None:
        """Raise DataError naming the expected layout when a required folder or file is missing."""
        root = self.path(data_root)
        if self.kind == "demo-scenes":
            find_fmnist(data_root if Path(data_root).exists() else None)  # scenes are generated from it
            return
        if self.kind == "coco":
            missing = [p for p in self.coco_files(data_root) if not p.exists()]
            expected = (f"{root}/{{train2017,val2017}}/*.jpg and {root}/annotations/instances_{{train2017,val2017}}"
                        f".json (Detectron2's layout), or the paths set by train_images/train_annotations/"
                        f"val_images/val_annotations")
        else:
            missing = []
            for entry in [*self.voc_train, self.voc_test]:
                folder, split, _ = self._voc_part(entry)
                for p in (root / folder / "Annotations", root / folder / "JPEGImages",
                          root / folder / "ImageSets" / "Main" / f"{split}.txt"):
                    if not p.exists():
                        missing.append(p)
            expected = (f"{root}/VOC<year>/Annotations/*.xml, {root}/VOC<year>/JPEGImages/*.jpg and "
                        f"{root}/VOC<year>/ImageSets/Main/<split>.txt for {', '.join([*self.voc_train, self.voc_test])}")
        if missing:
            raise DataError(f"detection dataset {self.kind!r}: missing {', '.join(map(str, missing[:3]))}"
                            f"{' ...' if len(missing) > 3 else ''}; expected {expected}")

    def prepare(self, data_root: Path) -> Path:
        """The dataset folder, generating the demo scenes on first use."""
        root = self.path(data_root)
        if self.kind == "demo-scenes":
            ensure_scenes(root, self.scene_settings(),
                          data_root=Path(data_root) if Path(data_root).exists() else None)
        return root

    def num_classes(self, data_root: Path) -> int:
        """Number of object classes (COCO-format: the categories of the validation json)."""
        if self.kind == "voc":
            return VOC_NUM_CLASSES
        val_json = self.coco_files(data_root)[3]
        try:
            categories = json.loads(val_json.read_text()).get("categories")
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{val_json}: not a readable COCO annotation file: {e}") from None
        if not categories:
            raise DataError(f"{val_json}: no 'categories' list; expected COCO instances format")
        return len(categories)

    # -- Detectron2 catalogs --------------------------------------------------------------------
    def register(self, data_root: Path, prefix: str, evaluator: Optional[str] = None) -> Tuple[List[str], List[str]]:
        """Register the train and test splits in Detectron2's catalogs; returns (train names, test names)."""
        from transfer.detection.compat import import_detectron2

        import_detectron2()
        from detectron2.data import DatasetCatalog, MetadataCatalog
        from detectron2.data.datasets import register_coco_instances
        from detectron2.data.datasets.pascal_voc import CLASS_NAMES, register_pascal_voc

        def fresh(name: str) -> str:
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
            return name

        root = self.path(data_root)
        if self.kind == "voc":
            names = []
            for entry in [*self.voc_train, self.voc_test]:
                folder, split, year = self._voc_part(entry)
                name = fresh(f"{prefix}_{folder.lower()}_{split}")
                register_pascal_voc(name, str(root / folder), split, year, CLASS_NAMES)
                MetadataCatalog.get(name).evaluator_type = "pascal_voc" if (evaluator or "voc") == "voc" else "coco"
                names.append(name)
            return names[:-1], names[-1:]
        train_images, train_json, val_images, val_json = self.coco_files(data_root)
        train, test = fresh(f"{prefix}_train"), fresh(f"{prefix}_val")
        register_coco_instances(train, {}, str(train_json), str(train_images))
        register_coco_instances(test, {}, str(val_json), str(val_images))
        return [train], [test]
