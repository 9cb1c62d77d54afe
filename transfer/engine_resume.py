"""The engines' record of their last checkpoint, repaired before a killed run resumes.

Detectron2 (fvcore's ``Checkpointer.tag_last_checkpoint``) and MMEngine (``CheckpointHook``) write
``last_checkpoint`` by opening it for writing, then writing the checkpoint's name. A run killed between
the two leaves an empty record, and both engines then fail to resume: they try to load the folder
itself. Both write the record only after the checkpoint file is closed, so a record that is empty, or
names a file that is not there, means the newest checkpoint file is complete: the record is rewritten
to name it, atomically, before the engine reads it.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pretrain.checkpoints.format import atomic_write_bytes

log = logging.getLogger(__name__)

RECORD = "last_checkpoint"


@dataclass(frozen=True)
class CheckpointNaming:
    """How an engine names its checkpoint files (``pattern``'s group: the iteration) and its record's content."""

    pattern: str
    final: Optional[str] = None   # a file name written after every numbered one
    full_path: bool = False       # the record holds the file's path, not its name

    def iteration(self, name: str) -> Optional[float]:
        """The iteration a checkpoint file ``name`` was written at (``final``: after all), or None."""
        if name == self.final:
            return math.inf
        match = re.fullmatch(self.pattern, name)
        return int(match.group(1)) if match else None


DETECTRON2 = CheckpointNaming(r"model_(\d+)\.pth", final="model_final.pth")   # PeriodicCheckpointer
MMENGINE = CheckpointNaming(r"iter_(\d+)\.pth", full_path=True)               # CheckpointHook, by iteration


def repair_last_checkpoint(folder: Path, naming: CheckpointNaming) -> Optional[Path]:
    """Point ``folder/last_checkpoint`` at the newest checkpoint when a kill left it empty or dangling.

    Returns the checkpoint the record now names when it was repaired, else None. With no checkpoint
    file at all the record is removed, so the engine starts afresh. Every process of a run may call
    this: each computes the same record and writes it atomically.
    """
    record = Path(folder) / RECORD
    if not record.is_file():
        return None
    named = record.read_text().strip()
    if named and (record.parent / named).is_file():   # an absolute path (MMEngine's) stays itself
        return None
    found = [(it, path) for path in record.parent.iterdir()
             if path.is_file() and (it := naming.iteration(path.name)) is not None]
    if not found:
        record.unlink(missing_ok=True)
        log.warning("%s named %r and no checkpoint is there: the run starts afresh", record, named)
        return None
    newest = max(found)[1]
    atomic_write_bytes(record, (str(newest) if naming.full_path else newest.name).encode())
    log.warning("%s named %r, which is not a checkpoint (the run was killed while writing it): "
                "resuming from %s", record, named, newest.name)
    return newest
