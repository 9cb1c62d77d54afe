"""One Detectron2 fine-tuning and evaluation, run inside each process Detectron2's ``launch`` starts."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from transfer.detection.compat import import_detectron2

import_detectron2()

import torch  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.engine import DefaultTrainer  # noqa: E402
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from transfer.detection.slimmable import SLIMMABLE_FPN_BACKBONE, SlimmableTrainer, load_encoder  # noqa: E402
from transfer.detection.weights import load_backbone  # noqa: E402
from transfer.engine_resume import DETECTRON2, repair_last_checkpoint  # noqa: E402

log = logging.getLogger(__name__)


class Detectron2Trainer(DefaultTrainer):
    """Detectron2's ``DefaultTrainer`` with the evaluator each dataset's metadata names, and
    ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE: full_model``: one L2 norm over every gradient, as MMDetection's
    ``grad_clip`` (Detectron2's own ``norm`` clips each parameter on its own)."""

    @classmethod
    def build_optimizer(cls, cfg, model):
        clip = cfg.SOLVER.CLIP_GRADIENTS
        if not (clip.ENABLED and clip.CLIP_TYPE == "full_model"):
            return super().build_optimizer(cfg, model)
        plain = cfg.clone()
        plain.defrost()
        plain.SOLVER.CLIP_GRADIENTS.ENABLED = False
        optimizer = super().build_optimizer(plain, model)
        return clip_full_model(optimizer, clip.CLIP_VALUE, clip.NORM_TYPE)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name):
        kind = MetadataCatalog.get(dataset_name).evaluator_type
        if kind == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)
        # Every task the config trains, named: left to Detectron2, the tasks come from the predictions, so
        # a detector that predicts nothing would report no mask AP at all. The fast C++ COCO evaluation
        # needs detectron2._C; pycocotools gives the same numbers.
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return COCOEvaluator(dataset_name, tasks=tasks, output_dir=str(Path(cfg.OUTPUT_DIR) / "inference"),
                             use_fast_impl=False)


class SlimmableDetectron2Trainer(SlimmableTrainer, Detectron2Trainer):
    """SlimCLR's slimmable detector (``transfer.detection.slimmable``) on ``Detectron2Trainer``."""


def clip_full_model(optimizer: torch.optim.Optimizer, max_norm: float, norm_type: float) -> torch.optim.Optimizer:
    """``optimizer`` whose ``step`` first clips the global norm of every parameter's gradient to ``max_norm``."""
    base = type(optimizer)

    class FullModelClipping(base):
        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure)

    FullModelClipping.__name__ = f"{base.__name__}WithFullModelClipping"
    optimizer.__class__ = FullModelClipping
    return optimizer


def _detectron2_logging(out_dir: Path) -> logging.Handler:
    """Detectron2's console logger (once per process) plus this run's ``log.txt`` on rank 0."""
    logger = setup_logger(distributed_rank=comm.get_rank(), name="detectron2", abbrev_name="d2")
    handler = logging.FileHandler(out_dir / f"log{'' if comm.is_main_process() else comm.get_rank()}.txt")
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    return handler


def start(trainer: DefaultTrainer, weights: Path, slim: bool = False) -> None:
    """Resume from the last checkpoint in ``OUTPUT_DIR`` if there is one, else load the exported backbone.

    Resuming is Detectron2's own ``resume_or_load(resume=True)``: model, optimizer, scheduler and
    iteration. A fresh start loads only the backbone, through ``load_backbone``, which refuses a
    file that does not fit the model (Detectron2 alone would log that and train from random weights).
    A record of the last checkpoint that a kill left empty is repaired first (``transfer.engine_resume``).
    """
    repair_last_checkpoint(Path(trainer.checkpointer.save_dir), DETECTRON2)
    if trainer.checkpointer.has_checkpoint():
        trainer.resume_or_load(resume=True)
        log.info("resumed from %s: training continues at iteration %d", trainer.checkpointer.get_checkpoint_file(),
                 trainer.start_iter)
        return
    if slim:
        log.info("loaded the slimmable encoder's %d tensors from %s", load_encoder(trainer.model, weights), weights)
        return
    report = load_backbone(trainer.model, weights)
    log.info("loaded %d backbone tensors from %s (%d head tensors start from scratch)",
             report.loaded, weights, len(report.missing))


def run_training(cfg, dataset, data_root: Path, weights: Path, seed: int, prefix: str,
                 evaluator: Optional[str] = None, widths: Sequence[float] = ()) -> Optional[Dict[str, Any]]:
    """Train ``cfg`` from the exported backbone ``weights`` and evaluate; on rank 0 the metrics (with
    ``NO_PREDICTIONS``: the tasks nothing was predicted for, when there are any), else None.

    The slimmable detector (``SLIMMABLE_FPN_BACKBONE``) trains once and is evaluated at each of
    ``widths``: its metrics are ``{"w0.5": metrics, ...}``.
    """
    from transfer.detection.metrics import NO_PREDICTIONS, flatten_metrics, tasks_without_predictions

    out_dir = Path(cfg.OUTPUT_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = _detectron2_logging(out_dir)
    try:
        # catalogs live in each process, so every launched worker registers the splits itself
        dataset.register(data_root, prefix, evaluator)
        seed_all_rng(seed + comm.get_rank())
        slim = cfg.MODEL.BACKBONE.NAME == SLIMMABLE_FPN_BACKBONE
        trainer = (SlimmableDetectron2Trainer if slim else Detectron2Trainer)(cfg)
        start(trainer, weights, slim)
        trainer.train()
        if slim:
            per_width = trainer.evaluate_widths(cfg, widths)
        else:   # DefaultTrainer's evaluation hook runs after the last iteration and keeps its results here
            results = getattr(trainer, "_last_eval_results", None) or trainer.test(cfg, trainer.model)
    finally:
        logging.getLogger("detectron2").removeHandler(handler)
        handler.close()
    if not comm.is_main_process():
        return None

    def metrics(results):
        empty = tasks_without_predictions(results)
        return {**flatten_metrics(results), **({NO_PREDICTIONS: empty} if empty else {})}
    return {name: metrics(r) for name, r in per_width.items()} if slim else metrics(results)

