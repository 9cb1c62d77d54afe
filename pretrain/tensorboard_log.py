"""TensorBoard event files of a pretraining run, written in its run folder beside ``log.jsonl``.

Every numeric value of every log record becomes a scalar at the record's step, so whatever the trainer
logs (lr, momentum, loss, grad norm, images/s, data and compute time, each term of each sub-network,
the kNN monitor) shows up without a list to keep in step. A term named ``<subnet>/<term>`` is tagged
``<term>/<subnet>`` so that TensorBoard draws each term of every sub-network in one section; the rest
go under ``train/``. Detectron2 and MMEngine write their own event files into the engines' work
folders, under the same ``runs/`` tree, so ``tensorboard --logdir runs`` shows every run at once.

A resumed run purges the events past its resumed step (``purge_step``), as ``log.jsonl`` drops its
lines past it.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, Optional

from pretrain.models.spec import SubnetError, SubnetSpec

log = logging.getLogger(__name__)


def tag(key: str) -> str:
    """The TensorBoard tag of a log key: ``w0.5/infonce`` -> ``infonce/w0.5``, ``lr`` -> ``train/lr``."""
    head, _, rest = key.partition("/")
    if rest:
        try:
            SubnetSpec.parse(head)
        except SubnetError:
            return key
        return f"{rest}/{head}"
    return f"train/{key}"


class TensorBoardLog:
    """Scalars of each log record, in event files in ``out`` (nothing when ``enabled`` is false)."""

    def __init__(self, out: Path, enabled: bool, resume_step: Optional[int] = None):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:   # torch.utils.tensorboard needs the `tensorboard` package (requirements.txt)
            log.warning("no TensorBoard event files for %s: %s (pip install tensorboard)", out, e)
            return
        self.writer = SummaryWriter(log_dir=str(out), purge_step=resume_step)

    def write(self, record: Dict[str, Any]) -> None:
        """Every int/float value but ``step`` (booleans and text are not scalars)."""
        if self.writer is None:
            return
        step = int(record["step"])
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(tag(key), value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
