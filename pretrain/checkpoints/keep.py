"""Epoch-periodic work of a run: which steps end an epoch that is due, and the checkpoints kept then.

``run.keep_every: N`` keeps ``checkpoint_epoch<E>.pt`` every N epochs besides the latest
``checkpoint.pt``, as upstream MoCo keeps ``checkpoint_<epoch>.pth.tar``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional


def epoch_due(done: int, steps_per_epoch: int, every: Optional[int]) -> Optional[int]:
    """The epoch that ``done`` steps complete, if it is a multiple of ``every`` epochs; else None."""
    if not every or done % steps_per_epoch:
        return None
    epoch = done // steps_per_epoch
    return epoch if epoch % every == 0 else None


def kept_name(epoch: int) -> str:
    return f"checkpoint_epoch{epoch:04d}.pt"


def keep_checkpoint(checkpoint: Path, epoch: int) -> Path:
    """Keep the just-written ``checkpoint`` as ``checkpoint_epoch<E>.pt`` beside it (atomically replaced).

    A hard link costs nothing and stays valid: the next save renames a new file over ``checkpoint.pt``
    and leaves the kept inode alone. A filesystem without links gets a copy.
    """
    kept = checkpoint.with_name(kept_name(epoch))
    tmp = kept.with_name(f".{kept.name}.tmp-{os.getpid()}")
    try:
        os.link(checkpoint, tmp)
    except OSError:
        shutil.copyfile(checkpoint, tmp)
    os.replace(tmp, kept)
    return kept
