"""The ``dataset:`` block of detection suites and its registration in Detectron2's catalogs.

Three layouts, each relative to ``--data-root`` (or an absolute ``root``):

* ``coco``: any COCO-format set, an images folder and an instances json per split
  (default: Detectron2's ``coco/{train2017,val2017}`` and ``coco/annotations/instances_*2017.json``);
* ``voc``: Pascal VOC's devkit folders ``VOC2007`` and ``VOC2012`` (``Annotations``, ``JPEGImages``,
  ``ImageSets/Main/{trainval,test}.txt``), trained on VOC07+12 trainval, tested on VOC07 test;
* ``demo-scenes``: Fashion-MNIST scenes (``transfer.scenes``) written on first use to
  ``<data-root>/demo-scenes`` in the COCO layout, with RLE masks.

Before training, each COCO-format json is read once (``DetectionData.inspect``): it must hold
``images``, ``annotations`` and ``categories``; its masks set Detectron2's ``INPUT.MASK_FORMAT``
(polygons -> ``polygon``, RLE with list or compressed counts -> ``bitmask``), and a file without
masks is refused for a config that trains them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple

from pretrain.data.datasets import find_fmnist
from pretrain.errors import DataError
from transfer.scenes import SceneSettings, ensure_scenes

DEFAULT_ROOTS = {"coco": "coco", "voc": ".", "demo-scenes": "demo-scenes"}
COCO_LAYOUTS = {  # kind -> (train images, train json, val images, val json)
    "coco": ("train2017", "annotations/instances_train2017.json", "val2017", "annotations/instances_val2017.json"),
    "demo-scenes": ("img_dir/train", "annotations/instances_train.json", "img_dir/val", "annotations/instances_val.json"),
}
VOC_NUM_CLASSES = 20
BOX_ONLY_BASE_CONFIG = "faster_rcnn_R_50_C4_voc_24k"   # the shipped base config that trains no masks
COCO_KEYS = ("images", "annotations", "categories")
# the kind of a non-crowd annotation's masks -> the INPUT.MASK_FORMAT that loads it
MASK_FORMAT_OF = {"polygon": "polygon", "rle": "bitmask"}


def segmentation_kind(segm: Any) -> str:
    """``polygon``, ``rle`` (counts as a list or a compressed string) or ``none`` for one annotation."""
    if not segm:   # missing, [] or {}: Detectron2's load_coco_json keeps no mask for it either
        return "none"
    if isinstance(segm, list):
        return "polygon"
    if isinstance(segm, dict) and isinstance(segm.get("counts"), (list, str)) and "size" in segm:
        return "rle"
    raise ValueError(f"segmentation of type {type(segm).__name__}: expected polygons (a list of "
                     f"[x1, y1, x2, y2, ...]) or RLE ({{'size': [h, w], 'counts': list or string}})")


@dataclass(frozen=True)
class CocoContents:
    """What one COCO instances json holds, from the one read before training."""

    path: Path
    num_categories: int
    num_images: int
    mask_counts: Mapping[str, int]    # kind (polygon | rle | none) -> non-crowd annotations of that kind
    mask_examples: Mapping[str, Any]  # kind -> id of the first such annotation, for messages

    @classmethod
    def read(cls, path: Path) -> "CocoContents":
        """Read and summarise ``path``; DataError naming it when it is not a COCO instances file."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a readable COCO annotation file: {e}") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: a JSON {type(data).__name__}; expected a COCO instances object "
                            f"with non-empty {', '.join(map(repr, COCO_KEYS))} lists")
        missing = [k for k in COCO_KEYS if not isinstance(data.get(k), list) or not data[k]]
        if missing:
            raise DataError(f"{path}: no {' or '.join(map(repr, missing))} (missing or empty); expected a COCO "
                            f"instances object with non-empty {', '.join(map(repr, COCO_KEYS))} lists")
        counts: Dict[str, int] = {"polygon": 0, "rle": 0, "none": 0}
        examples: Dict[str, Any] = {}
        for ann in data["annotations"]:
            if not isinstance(ann, dict):
                raise DataError(f"{path}: an annotation is a {type(ann).__name__}; expected an object")
            if ann.get("iscrowd"):   # crowd regions: dropped from training by Detectron2, ignored by COCOeval
                continue
            try:
                kind = segmentation_kind(ann.get("segmentation"))
            except ValueError as e:
                raise DataError(f"{path}: annotation {ann.get('id')}: {e}") from None
            counts[kind] += 1
            examples.setdefault(kind, ann.get("id"))
        return cls(Path(path), len(data["categories"]), len(data["images"]), counts, examples)

    def require_masks(self, base_config: str) -> None:
        """DataError unless every non-crowd annotation has a mask (a Mask R-CNN trains and scores them)."""
        none, total = self.mask_counts["none"], sum(self.mask_counts.values())
        if none == total:
            raise DataError(f"{self.path}: no annotation has a segmentation, but base config {base_config!r} "
                            f"trains masks (MODEL.MASK_ON); use a box-only base config such as "
                            f"{BOX_ONLY_BASE_CONFIG!r} (params.base_config)")
        if none:
            raise DataError(f"{self.path}: {none} of {total} annotations have no segmentation (e.g. id "
                            f"{self.mask_examples['none']}); base config {base_config!r} trains masks, so every "
                            f"non-crowd annotation needs one")

    def mask_format(self, base_config: str, explicit: Optional[str] = None) -> str:
        """Detectron2's INPUT.MASK_FORMAT for this file's masks; ``explicit`` is ``dataset.mask_format``."""
        self.require_masks(base_config)
        kinds = [k for k in MASK_FORMAT_OF if self.mask_counts[k]]
        if explicit == "bitmask":   # Detectron2 rasterises polygons and decodes RLE into bitmasks alike
            return explicit
        if len(kinds) > 1:
            raise DataError(f"{self.path}: mixed mask formats, polygons in {self.mask_counts['polygon']} annotations "
                            f"(e.g. id {self.mask_examples['polygon']}) and RLE in {self.mask_counts['rle']} "
                            f"(e.g. id {self.mask_examples['rle']}); Detectron2 loads one INPUT.MASK_FORMAT per "
                            f"dataset: convert them to one, or set dataset.mask_format: bitmask")
        found = MASK_FORMAT_OF[kinds[0]]
        if explicit is not None and explicit != found:
            raise DataError(f"{self.path}: dataset.mask_format {explicit!r}, but its masks are RLE (e.g. annotation "
                            f"{self.mask_examples['rle']}), which Detectron2 loads only as 'bitmask'; "
                            f"leave mask_format unset to take it from the file")
        return found


@dataclass(frozen=True)
class DetectionContents:
    """What the training and test annotations hold, read once before training."""

    num_classes: int
    train: Optional[CocoContents] = None   # None for VOC (XML files, boxes only)
    val: Optional[CocoContents] = None


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
    mask_format: Optional[Literal["polygon", "bitmask"]] = None  # default: from the training json's masks
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

    def inspect(self, data_root: Path) -> DetectionContents:
        """Read each annotation json once (VOC: nothing to read); DataError naming a file that is not COCO."""
        if self.kind == "voc":
            return DetectionContents(VOC_NUM_CLASSES)
        _, train_json, _, val_json = self.coco_files(data_root)
        train = CocoContents.read(train_json)
        val = train if val_json == train_json else CocoContents.read(val_json)
        return DetectionContents(val.num_categories, train, val)

    def mask_format_for(self, contents: DetectionContents, base_config: str) -> str:
        """INPUT.MASK_FORMAT for a config that trains masks, from the training json (DataError if it cannot)."""
        if contents.train is None:
            raise DataError(f"detection dataset {self.kind!r}: Pascal VOC has no instance masks, but base config "
                            f"{base_config!r} trains them (MODEL.MASK_ON); use a box-only base config such as "
                            f"{BOX_ONLY_BASE_CONFIG!r}")
        contents.val.require_masks(base_config)   # COCOeval scores them, reading each mask as it is
        # only the training json goes through INPUT.MASK_FORMAT (Detectron2's test loader drops annotations)
        return contents.train.mask_format(base_config, self.mask_format)

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
        train_names, test_names = self.split_names(prefix)
        if self.kind == "voc":
            for name, entry in zip([*train_names, *test_names], [*self.voc_train, self.voc_test]):
                folder, split, year = self._voc_part(entry)
                register_pascal_voc(fresh(name), str(root / folder), split, year, CLASS_NAMES)
                MetadataCatalog.get(name).evaluator_type = "pascal_voc" if (evaluator or "voc") == "voc" else "coco"
            return train_names, test_names
        train_images, train_json, val_images, val_json = self.coco_files(data_root)
        (train,), (test,) = train_names, test_names
        register_coco_instances(fresh(train), {}, str(train_json), str(train_images))
        register_coco_instances(fresh(test), {}, str(val_json), str(val_images))
        return train_names, test_names

    def split_names(self, prefix: str) -> Tuple[List[str], List[str]]:
        """The catalog names ``register`` gives the train and test splits (no files read)."""
        if self.kind == "voc":
            names = [f"{prefix}_{folder.lower()}_{split}"
                     for folder, split, _ in map(self._voc_part, [*self.voc_train, self.voc_test])]
            return names[:-1], names[-1:]
        return [f"{prefix}_train"], [f"{prefix}_val"]
