"""Reading a weights file of any format a researcher has, without unpickling arbitrary objects.

- ``.safetensors``: the ``safetensors`` package (no pickle at all).
- torch's zip format (torch >= 1.6) and its legacy format (``_use_new_zipfile_serialization=False``,
  as MoCo's 2020 releases and MMSelfSup's ``publish_model.py`` write): ``torch.load(weights_only=True)``.
  Zip archives are CRC-checked first (torch does not check them).
- Checkpoints that pickle foreign objects beside their tensors (a Lightning ``.ckpt`` with an
  OmegaConf ``hyper_parameters``, MMEngine's ``message_hub`` of ``HistoryBuffer``s, numpy values
  in ``meta``): still ``weights_only=True``, with each foreign global allow-listed as an inert
  placeholder class that only records what it was given. No code named by the file runs; the
  tensors load as usual, and the names of the placeholders are reported.

What cannot be read is refused with the reason, never with torch's advice to load with
``weights_only=False``: a whole pickled module (``torch.save(model)``: its state dict is what to save),
and a pickle naming a global torch blocks outright (``os.system``, ...), reported by that name.
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List

import torch

from pretrain.checkpoints.format import CheckpointError, check_zip_crcs, present_file_size, unreadable

FORMATS = ("safetensors", "zip", "legacy")
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global")
_MAX_PLACEHOLDERS = 200


@dataclass
class WeightsFile:
    """What a file held: the loaded object, its format, and the foreign globals read as placeholders."""

    path: Path
    obj: Any
    format: str
    placeholders: List[str] = field(default_factory=list)


class Placeholder:
    """Stands in for a class or function the file names; records its arguments and state, runs nothing."""

    qualname = "?"

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<not unpickled: {self.qualname}>"


def _placeholder(qualname: str) -> type:
    return type("Placeholder", (Placeholder,), {"qualname": qualname})


def _is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON header starting with '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 0 < int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def _is_legacy_torch(path: Path) -> bool:
    """torch's pre-1.6 format starts with a pickled magic number (protocol 2: 0x80 0x02 0x8a)."""
    with open(path, "rb") as f:
        return f.read(3) == b"\x80\x02\x8a"


def read_weights(path: "str | Path", what: str = "checkpoint") -> WeightsFile:
    """Load ``path`` (safetensors, zip or legacy torch format) with one clear error for what cannot be read."""
    path = Path(path)
    size = present_file_size(path, what)
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return WeightsFile(path, load_file(str(path), device="cpu"), "safetensors")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{what} {path}: damaged safetensors file ({e})") from None
    if zipfile.is_zipfile(path):
        check_zip_crcs(path, what)
        fmt = "zip"
    elif _is_legacy_torch(path):
        fmt = "legacy"
    else:
        with open(path, "rb") as f:
            head = f.read(8)
        raise CheckpointError(f"{what} {path}: not a PyTorch or safetensors file ({size} bytes starting with "
                              f"{head!r}); it may be truncated or in another format")
    obj, names = _torch_load(path, fmt, what)
    if isinstance(obj, Placeholder):
        raise pickled_object_error(path, what, obj.qualname, isinstance(getattr(obj, "state", None), dict)
                                   and "_parameters" in obj.state)
    return WeightsFile(path, obj, fmt, names)


def pickled_object_error(path: Path, what: str, qualname: str, module: bool = True) -> CheckpointError:
    """The refusal of a file that pickles a whole object (``torch.save(model)``) instead of its state dict."""
    if not module:
        return CheckpointError(f"{what} {path}: a pickled {qualname} object, not a state dict of tensors; "
                               f"expected a file of weights (a state dict, or a checkpoint dict holding one)")
    cls = qualname.rsplit(".", 1)[-1]
    return CheckpointError(f"{what} {path}: a whole pickled module ({qualname}, as torch.save(model) writes), not a "
                           f"state dict; SlimBench never runs the code a pickle names, so it reads weights only: where "
                           f"{cls} can be imported, save them with torch.save(model.state_dict(), 'weights.pth') and "
                           f"import that file")


def _torch_load(path: Path, fmt: str, what: str):
    """``torch.load(weights_only=True)``; foreign globals become placeholders, found up front (zip) or one
    per attempt from the unpickler's refusal (legacy, which torch cannot list)."""
    names: List[str] = []
    if fmt == "zip":
        try:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # an unusual archive: fall back to learning them from refusals
            names = []
    for _ in range(_MAX_PLACEHOLDERS):
        try:
            with torch.serialization.safe_globals([(_placeholder(n), n) for n in names]):
                return torch.load(path, map_location="cpu", weights_only=True), sorted(names)
        except Exception as e:  # torch raises many types for damaged files
            m = _UNSUPPORTED.search(str(e))
            name = m.group(1) if m else None
            name = name if name is None or "." in name else f"builtins.{name}"  # torch prints builtins bare
            if name is None or name in names:
                raise _unreadable(path, what, e, names) from None
            names.append(name)
    raise CheckpointError(f"{what} {path}: names more than {_MAX_PLACEHOLDERS} foreign classes; not a weights file")


def _unreadable(path: Path, what: str, e: Exception, names: List[str]) -> CheckpointError:
    """Why torch could not load ``path``, in the file's terms (``format.unreadable``)."""
    if "persistent_load of storage" in str(e) and names:
        # torch's legacy writer stores a module's class as a ("module", class, source) record
        return pickled_object_error(path, what, names[-1])
    return unreadable(path, what, e)
