"""The importer contract: each layout is one ``Importer`` registered by name; ``--from auto`` asks each one.

An importer answers two questions about a loaded file (``formats.WeightsFile``): ``claim`` — are these
keys mine, and why (a ``Claim``; ``specific`` when a key only that framework writes is present, not
just a common prefix) — and ``convert`` — the SlimBench checkpoint of its encoder, every head, momentum
encoder, queue and optimizer state dropped and listed in ``extra``. ``detect`` picks the one specific
claim, or the one claim when none is specific, and refuses anything else naming the candidates.

Many files hold a second copy of the encoder: a momentum / target / teacher network (MoCo's ``encoder_k``,
BYOL's target) or a model EMA (timm's ``state_dict_ema``). The online encoder is imported by default;
``ImportOptions.encoder`` (``bench import --encoder momentum|ema``) picks the copy instead, since some
papers evaluate the target network. ``pick_copy`` makes that choice and says what a file holds when it
lacks the copy asked for (a file with only a momentum copy is refused unless it is asked for).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from pretrain.checkpoints.format import Checkpoint, CheckpointError
from pretrain.checkpoints.importers.formats import WeightsFile

IMPORTERS: Dict[str, "Importer"] = {}


@dataclass(frozen=True)
class Claim:
    """Why an importer recognises a file; ``specific`` when the evidence is a key only its framework writes."""

    reason: str
    specific: bool = True


@dataclass(frozen=True)
class ImportOptions:
    """What a user may state about a plain network (``--width``, ``--blocks``); else read from the tensors."""

    width: Optional[float] = None
    blocks: Optional[Tuple[int, ...]] = None
    encoder: str = "online"    # which copy of the encoder: online, momentum (target/teacher/key) or ema


class Importer(abc.ABC):
    """One foreign layout; subclasses set ``name``, ``defined_by`` and implement ``claim`` and ``convert``."""

    name: ClassVar[str]
    defined_by: ClassVar[str]            # the framework file that defines the layout (repository: path)
    takes_width: ClassVar[bool] = False  # whether --width/--blocks describe this layout (plain networks)
    encoders: ClassVar[Tuple[str, ...]] = ("online",)  # the encoder copies its files can hold (--encoder)

    @abc.abstractmethod
    def claim(self, wf: WeightsFile) -> Optional[Claim]:
        """Why ``wf`` is in this layout, or None."""

    @abc.abstractmethod
    def convert(self, wf: WeightsFile, options: ImportOptions) -> Checkpoint:
        """The SlimBench checkpoint of ``wf``'s encoder."""


def register_importer(cls):
    """Class decorator: register an importer under its ``name`` (``bench import --from NAME``)."""
    for attr in ("name", "defined_by"):
        if not getattr(cls, attr, None):
            raise TypeError(f"importer {cls.__name__} must define {attr}")
    IMPORTERS[cls.name] = cls()
    return cls


def get_importer(name: str) -> "Importer":
    """The importer registered as ``name``."""
    if name not in IMPORTERS:
        raise CheckpointError(f"unknown layout {name!r}; expected auto or one of {', '.join(IMPORTERS)}")
    return IMPORTERS[name]


def detect(wf: WeightsFile) -> Tuple["Importer", Claim]:
    """The one importer whose layout ``wf`` is, with its reason; an error naming the candidates otherwise."""
    claims = [(imp, c) for imp in IMPORTERS.values() for c in [imp.claim(wf)] if c is not None]
    specific = [(imp, c) for imp, c in claims if c.specific]
    chosen = specific if specific else claims
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        raise CheckpointError(f"{wf.path}: no importer recognises its keys ({describe_keys(wf.obj)}); "
                              f"expected one of the layouts {', '.join(IMPORTERS)}")
    listed = "; ".join(f"{imp.name} ({c.reason})" for imp, c in chosen)
    raise CheckpointError(f"{wf.path}: ambiguous layout, {len(chosen)} importers recognise it: {listed}; "
                          f"name one with --from")


# -- helpers the layouts share ------------------------------------------------------------------------

def tensors_only(d: Any) -> bool:
    """Whether ``d`` is a non-empty dict of tensors (a state dict)."""
    return isinstance(d, Mapping) and bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def state_dict_of(obj: Any, keys: Sequence[str] = ("state_dict", "model")) -> Optional[Dict[str, torch.Tensor]]:
    """The state dict of a checkpoint: ``obj`` itself, or under ``state_dict`` / ``model`` (nested once more)."""
    for _ in range(3):
        if tensors_only(obj):
            return dict(obj)
        nxt = next((obj[k] for k in keys if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)), None)
        if nxt is None:
            return None
        obj = nxt
    return None


def other_entries(obj: Any, kept: Sequence[str] = ("state_dict",)) -> List[str]:
    """Top-level entries of a checkpoint beside its state dict (optimizer, epoch, ...), for ``extra``."""
    return sorted(str(k) for k in obj if k not in kept) if isinstance(obj, Mapping) and not tensors_only(obj) else []


def under(sd: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The entries of ``sd`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def has_resnet(sd: Optional[Mapping[str, Any]], prefix: str = "") -> bool:
    """Whether ``sd`` holds torchvision-named ResNet stages under ``prefix`` (``layer1.0.*``)."""
    return bool(sd) and any(k.startswith(prefix + "layer1.0.") for k in sd)


def describe_keys(obj: Any) -> str:
    """A short description of what a file holds, for errors."""
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}"
    sd = state_dict_of(obj)
    top = f"top-level keys {sorted(map(str, obj))[:6]}" if not tensors_only(obj) else ""
    keys = f"first tensor keys {list(sd)[:4]}" if sd else "no state dict of tensors"
    return ", ".join(x for x in (top, keys) if x)


ENCODERS = ("online", "momentum", "ema")
COPY_NAMES = {"online": "the online encoder", "momentum": "a momentum (target) encoder", "ema": "an EMA copy"}


def held_copies(sd: Optional[Mapping[str, Any]], copies: Mapping[str, Sequence[str]]) -> Dict[str, str]:
    """``{kind: prefix}`` of the encoder copies ``sd`` holds, from ``copies`` (``{kind: candidate prefixes}``)."""
    held = {kind: next((p for p in prefixes if has_resnet(sd, p)), None) for kind, prefixes in copies.items()}
    return {kind: p for kind, p in held.items() if p is not None}


def choose_copy(wf: WeightsFile, held: Mapping[str, str], options: ImportOptions) -> str:
    """The kind ``options.encoder`` names among ``held`` (``{kind: where}``); else an error saying what ``wf`` holds."""
    if options.encoder in held:
        return options.encoder
    holds = " and ".join(f"{COPY_NAMES[k]} ({where})" for k, where in held.items())
    if options.encoder == "online":
        raise CheckpointError(f"{wf.path}: holds only {holds}, no online encoder; import that copy with "
                              f"--encoder {'|'.join(held)}")
    raise CheckpointError(f"{wf.path}: --encoder {options.encoder}, but the file holds no {options.encoder} copy: "
                          f"it holds {holds}; expected --encoder {'|'.join(held)}")


def pick_copy(wf: WeightsFile, sd: Mapping[str, torch.Tensor], copies: Mapping[str, Sequence[str]],
              options: ImportOptions) -> Tuple[str, str]:
    """(kind, prefix) of the encoder copy ``options.encoder`` names, among the ``copies`` that ``sd`` holds."""
    held = held_copies(sd, copies)
    kind = choose_copy(wf, {k: f"{p}*" for k, p in held.items()}, options)
    return kind, held[kind]


def encoder_checkpoint(importer: "Importer", wf: WeightsFile, sd: Mapping[str, torch.Tensor], prefix: str,
                       options: ImportOptions, heads: Sequence[str] = (), copy: str = "online") -> Checkpoint:
    """The checkpoint of the torchvision-named ResNet under ``prefix`` of ``sd`` (the encoder ``copy`` chosen); its
    ``heads`` (sub-prefixes, e.g. ``fc.`` for a projection MLP) and every key outside ``prefix`` are dropped and listed."""
    from pretrain.checkpoints.importers.resnet_state import resnet_checkpoint

    encoder = {k: v for k, v in under(sd, prefix).items() if not k.startswith(tuple(heads))}
    dropped = [k for k in sd if not (k.startswith(prefix) and k[len(prefix):] in encoder)]
    extra = {"dropped_keys": dropped, "dropped_entries": other_entries(wf.obj),
             "not_unpickled": list(wf.placeholders)}
    return resnet_checkpoint(encoder, wf.path, f"import:{importer.name}", options.width, options.blocks,
                             config={"layout": importer.name, "format": wf.format, "prefix": prefix,
                                     "encoder": copy}, extra=extra)
