"""The SlimBench checkpoint format: one versioned, self-describing file holding every width.

Layout (a ``torch.save`` dict, readable with ``weights_only=True``)::

    format          "slimbench.checkpoint"
    format_version  1
    arch            SlimResNet constructor arguments, including the width list in stored order
    method          "random", "slimclr-mocov2", "slimclr-mocov3", "dspnet-byol", "import:..."
    config          the recipe that produced it (plain data)
    desired         sub-network names to show first (DSPNet's desired networks)
    state_dict      the SlimResNet encoder's state dict
    extra           optional plain data (heads, training state are kept in run folders instead)
    code_version    SlimBench version that wrote it
    probe           (version 2 only) a switchable linear probe stored with the encoder:
                    {subnets: [names], num_classes, feature_norm, state_dict: {heads.{i}.weight/bias}, source}

A file without a probe is written as version 1, so SlimBench versions that predate probes still read
it; one with a probe is version 2. Both versions are read.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from pretrain.errors import SlimBenchError
from pretrain.models.resnet import SlimResNet, parse_arch
from pretrain.version import __version__

FORMAT = "slimbench.checkpoint"
FORMAT_VERSION = 1
PROBE_FORMAT_VERSION = 2   # version 1 plus the optional top-level ``probe``
READABLE_VERSIONS = (FORMAT_VERSION, PROBE_FORMAT_VERSION)


class CheckpointError(SlimBenchError):
    """A checkpoint file that cannot be read as what was expected."""


@dataclass
class Checkpoint:
    """A slimmable checkpoint in memory."""

    arch: Dict[str, Any]
    state_dict: Dict[str, torch.Tensor]
    method: str = "random"
    config: Dict[str, Any] = field(default_factory=dict)
    desired: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    code_version: str = __version__
    path: Optional[Path] = None
    probe: Optional[Dict[str, Any]] = None   # a stored switchable linear probe (see the module docstring)

    @property
    def widths(self) -> List[float]:
        return list(self.arch["widths"])

    @classmethod
    def from_model(cls, model: SlimResNet, method: str = "random", config: Optional[dict] = None,
                   desired: Optional[list] = None, extra: Optional[dict] = None,
                   probe: Optional[dict] = None) -> "Checkpoint":
        """Snapshot a SlimResNet (weights copied to CPU), optionally with a stored probe."""
        sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        ckpt = cls(model.arch_config(), sd, method, dict(config or {}), [str(d) for d in desired or []],
                   dict(extra or {}), probe=probe)
        if probe is not None:
            check_probe(probe, "checkpoint")
        return ckpt

    def build_model(self) -> SlimResNet:
        """Rebuild the SlimResNet and load the weights strictly."""
        where = f"checkpoint {self.path}" if self.path else "checkpoint"
        try:
            parse_arch(self.arch.get("arch", f"slim_resnet{self.arch.get('depth')}"))
            model = SlimResNet.from_arch_config(self.arch)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: cannot build its architecture {self.arch!r}: {e}") from None
        result = model.load_state_dict(self.state_dict, strict=False)
        shape_errors = [k for k, v in model.state_dict().items()
                        if k in self.state_dict and tuple(self.state_dict[k].shape) != tuple(v.shape)]
        if result.missing_keys or result.unexpected_keys or shape_errors:
            raise CheckpointError(
                f"{where}: weights do not match its architecture {self.arch.get('arch')} widths "
                f"{self.arch.get('widths')}: {len(result.missing_keys)} missing (e.g. {result.missing_keys[:3]}), "
                f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]}), "
                f"{len(shape_errors)} of wrong shape (e.g. {shape_errors[:3]})"
            )
        return model

    def to_dict(self) -> Dict[str, Any]:
        out = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": self.arch, "method": self.method,
               "config": self.config, "desired": self.desired, "state_dict": self.state_dict,
               "extra": self.extra, "code_version": self.code_version}
        if self.probe is not None:
            out.update(format_version=PROBE_FORMAT_VERSION, probe=self.probe)
        return out


def check_probe(probe: Any, where: str) -> None:
    """Raise CheckpointError unless ``probe`` is a well-formed stored probe: one linear layer per named sub-network."""
    if not isinstance(probe, dict):
        raise CheckpointError(f"{where}: 'probe' must be a dict, found {type(probe).__name__}")
    missing = [k for k in ("subnets", "num_classes", "state_dict") if k not in probe]
    if missing:
        raise CheckpointError(f"{where}: probe is missing {missing}")
    subnets, sd, n = probe["subnets"], probe["state_dict"], probe["num_classes"]
    if not isinstance(subnets, list) or not subnets or not all(isinstance(s, str) for s in subnets):
        raise CheckpointError(f"{where}: probe 'subnets' must be a non-empty list of sub-network names")
    for i, name in enumerate(subnets):
        w, b = sd.get(f"heads.{i}.weight"), sd.get(f"heads.{i}.bias")
        if not isinstance(w, torch.Tensor) or w.dim() != 2 or w.shape[0] != n:
            raise CheckpointError(f"{where}: probe head {i} ({name}) needs heads.{i}.weight of shape "
                                  f"[{n}, features], found {None if w is None else list(getattr(w, 'shape', []))}")
        if not isinstance(b, torch.Tensor) or tuple(b.shape) != (n,):
            raise CheckpointError(f"{where}: probe head {i} ({name}) needs heads.{i}.bias of shape [{n}]")


def _create_temporary(path: Path) -> "tuple[int, str]":
    """A new, exclusively created file beside ``path``: (open descriptor, its name)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            # Mode 0o666 lets the kernel apply the umask (and a folder's default ACL), exactly as
            # open() or torch.save would; tempfile.mkstemp's fixed 0o600 hid checkpoints and pages
            # from everyone else on a shared machine. Nothing reads the umask, so no other thread
            # ever sees it changed.
            return os.open(tmp, flags, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary file name for {path.name}")


def atomic_write_bytes(path: "str | os.PathLike", data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, fsync the folder); mode as open() gives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    with _suppress():
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_torch_save(obj: Any, path: "str | os.PathLike") -> None:
    """``torch.save`` that never leaves a half-written file at ``path``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def save_checkpoint(ckpt: Checkpoint, path: "str | os.PathLike") -> Path:
    """Write a checkpoint atomically and return its path."""
    atomic_torch_save(ckpt.to_dict(), path)
    ckpt.path = Path(path)
    return ckpt.path


def present_file_size(path: Path, what: str = "checkpoint") -> int:
    """The size of ``path``, or one clear error when it is missing or empty."""
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{what} {path}: the file is empty (0 bytes)")
    return size


def check_zip_crcs(path: Path, what: str = "checkpoint") -> None:
    """Refuse a damaged zip archive: torch.load does not check the CRCs, so damaged tensor bytes would load silently."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(f"{what} {path}: damaged archive ({e})") from None
    if bad is not None:
        raise CheckpointError(f"{what} {path}: damaged: the checksum of member {bad!r} does not match")


def read_torch_file(path: "str | os.PathLike", what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with one clear error for missing, empty, truncated or foreign files."""
    path = Path(path)
    size = present_file_size(path, what)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(8)
        raise CheckpointError(
            f"{what} {path}: not a PyTorch file ({size} bytes starting with {head!r}); "
            f"it may be truncated or in another format"
        )
    check_zip_crcs(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged archives
        raise unreadable(path, what, e) from None


_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module (\S+) is blocked)")


def unreadable(path: Path, what: str, e: Exception) -> CheckpointError:
    """Why ``torch.load(weights_only=True)`` refused ``path``: the global its pickle names, or torch's reason;
    never torch's opening advice to load with ``weights_only=False``, which would run the code the file names."""
    text = str(e)
    named = _GLOBAL.search(text)
    if named and named.group(2):
        return CheckpointError(f"{what} {path}: its pickle calls {named.group(1)} (module {named.group(2)}, which torch "
                               f"blocks outright); a weights file has no use for it and SlimBench never runs what a "
                               f"file names, so this file cannot be read")
    if named:
        return CheckpointError(f"{what} {path}: cannot be read: its pickle names {named.group(1)}, beyond the tensors "
                               f"and plain data SlimBench reads, and SlimBench never runs code a file names "
                               f"(a foreign checkpoint is read by `bench import`)")
    reason = text.split("WeightsUnpickler error:", 1)[-1].strip()   # torch's advice comes before this marker
    first = (reason.splitlines() or [""])[0].strip()
    if "weights_only" in first:
        first = "torch's weights-only loader refused it"
    return CheckpointError(f"{what} {path}: cannot be read ({type(e).__name__}: {first[:300]})")


def load_checkpoint(path: "str | os.PathLike") -> Checkpoint:
    """Read a SlimBench checkpoint, rejecting anything else with an error that says what was found."""
    path = Path(path)
    obj = read_torch_file(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        found = (f"a dict with keys {sorted(obj)[:8]}" if isinstance(obj, dict) else f"a {type(obj).__name__}")
        hint = " (use `bench import` for torchvision or SlimCLR files)" if isinstance(obj, dict) else ""
        raise CheckpointError(f"checkpoint {path}: not a SlimBench checkpoint: found {found}{hint}")
    version = obj.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"checkpoint {path}: format version {version!r}, this SlimBench reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    missing = [k for k in ("arch", "state_dict", "method") if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path}: incomplete, missing {missing}")
    ckpt = Checkpoint(arch=obj["arch"], state_dict=obj["state_dict"], method=obj["method"],
                      config=obj.get("config") or {}, desired=list(obj.get("desired") or []),
                      extra=obj.get("extra") or {}, code_version=obj.get("code_version", "?"), path=path,
                      probe=obj.get("probe") if version >= PROBE_FORMAT_VERSION else None)
    if ckpt.probe is not None:
        check_probe(ckpt.probe, f"checkpoint {path}")
    return ckpt


def load_model(path: "str | os.PathLike") -> SlimResNet:
    """Load a checkpoint and build its SlimResNet."""
    return load_checkpoint(path).build_model()


def file_digest(path: "str | os.PathLike") -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
