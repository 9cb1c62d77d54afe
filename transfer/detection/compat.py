"""The one place where the installed Detectron2 0.6 is made to work with this stack.

Three gaps of the verified stack (see STACK.md), each bridged only when it is present, so a
full Detectron2 built from source (common on GPU clusters) runs untouched:

* **No compiled ``detectron2._C``.** ``layers/deform_conv.py``, ``layers/rotated_boxes.py``,
  ``layers/roi_align_rotated.py`` and ``evaluation/fast_eval_api.py`` import it at module level,
  so ``import detectron2.layers`` fails without it. Only deformable convolution, rotated boxes
  and the fast COCO evaluator call into it, and SlimBench's protocols use none of them
  (evaluation runs ``COCOEvaluator(use_fast_impl=False)``, i.e. pycocotools). When the real
  module cannot be found, a placeholder is registered whose functions raise ``MissingDetectron2Op``.
* **Pillow >= 10 removed ``Image.LINEAR``**, which ``data/transforms/transform.py`` uses as a
  default argument (evaluated at import); it is the same filter as ``Image.BILINEAR``.
* **numpy >= 1.24 removed ``np.int``, ``np.float`` and ``np.str``**, which Detectron2 0.6 still
  uses (``data/build.py``, ``data/datasets/pascal_voc.py``, ``evaluation/sem_seg_evaluation.py``);
  they were aliases of the builtins.

Every Detectron2 import in ``transfer.detection`` goes through ``import_detectron2()`` first.
"""
from __future__ import annotations

import importlib.util
import sys
import types

from pretrain.errors import SlimBenchError

_PLACEHOLDER_FLAG = "__slimbench_placeholder__"
_NUMPY_ALIASES = {"int": int, "float": float, "str": str}


class MissingDetectron2Op(SlimBenchError):
    """A Detectron2 operator that needs the compiled ``detectron2._C``, which this install lacks."""


def has_detectron2_ext() -> bool:
    """Whether Detectron2's compiled extension ``detectron2._C`` is installed."""
    current = sys.modules.get("detectron2._C")
    if current is not None:
        return not getattr(current, _PLACEHOLDER_FLAG, False)
    try:
        return importlib.util.find_spec("detectron2._C") is not None
    except ModuleNotFoundError:  # Detectron2 itself is not installed
        return False


def _missing_op(name: str):
    if name.startswith("__"):   # introspection (inspect, pickle, copy) expects AttributeError
        raise AttributeError(name)

    def op(*args, **kwargs):
        raise MissingDetectron2Op(
            f"detectron2._C.{name} needs Detectron2's compiled C++/CUDA extension, which this install "
            f"does not have (it was built without it, see STACK.md); deformable convolution, rotated "
            f"boxes and the fast COCO evaluator need it. Install Detectron2 built from source to use them.")

    op.__name__ = name
    return op


def install_placeholder_ext() -> bool:
    """Register the placeholder ``detectron2._C`` when the real one is absent; True if it is in place."""
    current = sys.modules.get("detectron2._C")
    if current is not None:
        return bool(getattr(current, _PLACEHOLDER_FLAG, False))
    if has_detectron2_ext():
        return False
    module = types.ModuleType("detectron2._C", "Placeholder for Detectron2's missing C++ extension (SlimBench).")
    setattr(module, _PLACEHOLDER_FLAG, True)
    module.__getattr__ = _missing_op
    sys.modules["detectron2._C"] = module
    return True


def install_library_aliases() -> None:
    """Restore the removed ``PIL.Image.LINEAR`` and ``np.int/np.float/np.str`` aliases where missing."""
    import numpy as np
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
    for name, builtin in _NUMPY_ALIASES.items():
        # vars(), not hasattr(): numpy's module __getattr__ warns on these names
        if name not in vars(np):
            setattr(np, name, builtin)


def import_detectron2() -> None:
    """Make Detectron2 importable on this stack; call before importing any ``detectron2.*`` module."""
    install_library_aliases()
    install_placeholder_ext()
