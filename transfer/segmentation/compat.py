"""The one place where the installed torch / MMEngine / MMCV are made to work together.

Two gaps of the verified stack (see STACK.md), each bridged only when it is present:

* **mmcv-lite has no compiled ops.** ``mmcv/ops/__init__.py`` loads ``mmcv._ext`` and fails,
  yet a few MMSeg modules import ``mmcv.ops`` unconditionally (``models/utils/point_sample.py``,
  ``models/losses/focal_loss.py``, ...). When ``mmcv._ext`` is absent, ``install_mmcv_ops``
  registers a stand-in ``mmcv.ops``: ``point_sample`` from MMCV's own pure-PyTorch
  ``mmcv/ops/point_sample.py``, a ``sigmoid_focal_loss`` that raises a clear error if called, and
  ``ModuleNotFoundError`` for every other name, so MMSeg's guarded imports fall back as designed.
  A full MMCV with ``_ext`` is left untouched.
* **torch >= 2.6 loads with ``weights_only=True`` by default**, but MMEngine 0.10.7 calls
  ``torch.load`` without the argument, so resuming its own Runner checkpoints (which pickle
  ``HistoryBuffer`` and numpy state) fails. ``trusted_run_checkpoints(work_dir)`` allows full
  unpickling only for files inside one run folder that MMEngine itself wrote, only while the
  context is open; every file a user hands SlimBench is still read with ``weights_only=True``.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Iterator

import torch

from pretrain.errors import SlimBenchError

_STANDIN_FLAG = "__slimbench_standin__"


class MissingMMCVOp(SlimBenchError):
    """An MMCV operator that needs the compiled ``mmcv._ext``, which this install lacks."""


def has_mmcv_ext() -> bool:
    """Whether MMCV's compiled extension (full ``mmcv``, not ``mmcv-lite``) is installed."""
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except ModuleNotFoundError:
        return False


def _sigmoid_focal_loss(*args, **kwargs):
    # MMSeg's focal_loss.py imports this name at module level; only its CUDA path calls it.
    raise MissingMMCVOp("sigmoid_focal_loss needs MMCV's compiled ops (mmcv._ext), which mmcv-lite does not "
                        "ship; use a loss other than FocalLoss, or install the full mmcv built from source")


def _missing(name: str):
    if name.startswith("__"):   # introspection (inspect, pickle, copy) expects AttributeError
        raise AttributeError(name)
    raise ModuleNotFoundError(f"mmcv.ops.{name} needs MMCV's compiled ops (mmcv._ext), which mmcv-lite does not "
                              f"ship", name=f"mmcv.ops.{name}")


def install_mmcv_ops() -> bool:
    """Register the stand-in ``mmcv.ops`` when ``mmcv._ext`` is absent; True if it is in place."""
    current = sys.modules.get("mmcv.ops")
    if current is not None:
        return bool(getattr(current, _STANDIN_FLAG, False))
    if has_mmcv_ext():
        return False
    import mmcv

    real_dir = Path(mmcv.__file__).parent / "ops"
    ops = types.ModuleType("mmcv.ops", "Stand-in for mmcv.ops without compiled ops (SlimBench compat).")
    ops.__path__ = [str(real_dir)]   # lets `mmcv.ops.point_sample` load MMCV's own pure-PyTorch file
    ops.__file__ = str(real_dir / "__init__.py")
    setattr(ops, _STANDIN_FLAG, True)
    sys.modules["mmcv.ops"] = ops
    mmcv.ops = ops
    try:
        point_sample_module = importlib.import_module("mmcv.ops.point_sample")
    except Exception:
        del sys.modules["mmcv.ops"]
        del mmcv.ops
        raise
    # importing the submodule bound the *module* to ops.point_sample; MMSeg wants the function
    ops.point_sample = point_sample_module.point_sample
    ops.sigmoid_focal_loss = _sigmoid_focal_loss
    ops.__getattr__ = _missing
    return True


def import_mmseg() -> None:
    """Import MMSeg with the compat layer in place and register its modules in MMEngine's registries."""
    install_mmcv_ops()
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)


@contextlib.contextmanager
def trusted_run_checkpoints(work_dir: "str | os.PathLike") -> Iterator[None]:
    """While open, ``torch.load`` of a file inside ``work_dir`` unpickles fully (MMEngine resume).

    Only MMEngine's own Runner checkpoints live in a run's work_dir; anything else, and any
    call that passes ``weights_only`` explicitly, is loaded exactly as torch would.
    """
    from mmengine.runner import checkpoint as mme_checkpoint

    root = Path(work_dir).resolve()

    def load(f, *args, **kwargs):
        if "weights_only" not in kwargs and isinstance(f, (str, os.PathLike)):
            path = Path(f).expanduser().resolve()
            if root in path.parents:
                kwargs["weights_only"] = False
        return torch.load(f, *args, **kwargs)

    # MMEngine's loader reaches torch.load through its module-level name `torch`; give that module
    # (and no other) a view of torch whose `load` trusts this run folder, so the scope is exact.
    view = types.ModuleType("torch")
    view.__getattr__ = lambda name: getattr(torch, name)
    view.load = load
    original = mme_checkpoint.torch
    mme_checkpoint.torch = view
    try:
        yield
    finally:
        mme_checkpoint.torch = original
