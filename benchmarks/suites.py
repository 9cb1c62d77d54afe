"""Suites: YAML files naming a protocol, its dataset block, its hyper-parameters and sub-networks.

```yaml
name: fmnist-linear-fast          # default: the file name
description: one line for `bench list suites`
protocol: linear-fast             # a name in transfer.protocols.base.PROTOCOL_MODULES
dataset: {kind: fmnist, ...}      # the protocol's Dataset dataclass
params: {epochs: 30, ...}         # the protocol's Params dataclass
subnets: all                      # all | widths | desired | [w1.0, w0.5, ...]
seeds: [0, 1, 2, 3, 4]            # optional: the runs `bench run` makes without --seed/--seeds (default [0])
```

Loading validates every key against the protocol's dataclasses (``pretrain.config.from_dict``):
an unknown key or a wrong type fails before any work starts, naming the file and the key.
``key=value`` overrides that change a resolved value are kept as the suite's ``variant``, which
names its leaderboard columns (``fmnist-knn[k=200]``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from pretrain.checkpoints.format import Checkpoint
from pretrain.config import apply_overrides, from_dict, load_yaml, to_dict
from pretrain.errors import ConfigError, DataError, SlimBenchError
from pretrain.models.spec import SubnetSpec
from transfer.protocols.base import Protocol, get_protocol

from benchmarks.digests import config_digest, result_variant, run_digest

SUITES_DIR = Path(__file__).resolve().parents[1] / "configs" / "suites"
SELECTIONS = ("all", "widths", "desired")
_MISSING = object()


@dataclass
class SuiteFile:
    """The top level of a suite file (the two nested blocks are checked against the protocol)."""

    protocol: str
    name: Optional[str] = None
    description: str = ""
    dataset: Dict[str, Any] = field(default_factory=dict)
    params: Dict[str, Any] = field(default_factory=dict)
    subnets: Union[str, List[str]] = "all"
    seeds: Optional[List[int]] = None

    def validate(self) -> None:
        if self.seeds is not None and (not self.seeds or any(s < 0 for s in self.seeds)
                                       or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError(f"seeds must be distinct non-negative integers, at least one; got {self.seeds}")


@dataclass
class Suite:
    """A validated suite."""

    name: str
    description: str
    protocol: str
    dataset: Any
    params: Any
    subnets: Union[str, List[str]]
    path: Optional[Path] = None
    variant: Dict[str, Any] = field(default_factory=dict)  # overridden keys that differ from the file
    # the runs a protocol's published numbers average (MoCo's VOC: 5 trials); not in either digest,
    # each run records its own seed
    seeds: List[int] = field(default_factory=lambda: [0])

    @property
    def protocol_cls(self) -> type:
        return get_protocol(self.protocol)

    def to_dict(self, subnets: Optional[Sequence[SubnetSpec]] = None) -> Dict[str, Any]:
        """The resolved suite as plain data (what its digest and the run folder's suite.yaml hold)."""
        return {"name": self.name, "description": self.description, "protocol": self.protocol,
                "dataset": to_dict(self.dataset), "params": to_dict(self.params),
                "subnets": [str(s) for s in subnets] if subnets is not None else self.subnets}

    def digest(self, subnets: Sequence[SubnetSpec], seed: int = 0) -> str:
        """The run digest: name, protocol, dataset, params, sub-network list and seed (not the description)."""
        return run_digest(self.to_dict(subnets), seed)

    def config_digest(self) -> str:
        """The digest of what makes runs comparable: protocol, dataset and params."""
        return config_digest(self.to_dict())

    def check_data(self, data_root: Path) -> None:
        """Fail before any work when the dataset is not where the suite's dataset block expects it."""
        try:
            self.dataset.check(Path(data_root))
        except DataError as e:
            raise DataError(f"suite {self.path or self.name}: dataset: {e}") from None


def suite_paths(folder: Path = SUITES_DIR) -> List[Path]:
    """Every suite file shipped in ``configs/suites``."""
    return sorted(folder.glob("*.yaml"))


def find_suite(name_or_path: str) -> Path:
    """A suite file from a path or a name in ``configs/suites``."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"suite file {path}: no such file")
        return path
    candidate = SUITES_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(p.stem for p in suite_paths()) or "none"
    raise ConfigError(f"unknown suite {name_or_path!r}: not a file and not in {SUITES_DIR} (known: {known})")


def load_suite(name_or_path: str, overrides: Sequence[str] = ()) -> Suite:
    """Load and validate a suite; ``overrides`` are ``key=value`` strings such as ``params.epochs=1``."""
    path = find_suite(name_or_path)
    source = f"{path} (with overrides {' '.join(overrides)})" if overrides else str(path)
    from_file = load_yaml(path)
    suite = _validate(apply_overrides(copy.deepcopy(from_file), overrides, source=source), path, source)
    if overrides:
        suite.variant = _variant(suite, from_file, path)
    return suite


def _validate(raw: Dict[str, Any], path: Path, source: str) -> Suite:
    top = from_dict(SuiteFile, raw, source)
    protocol: type[Protocol] = get_protocol(top.protocol, source=f"{source}: key 'protocol'")
    dataset = from_dict(protocol.Dataset, top.dataset, source, prefix="dataset.")
    params = from_dict(protocol.Params, top.params, source, prefix="params.")
    subnets = _check_selection(top.subnets, f"{source}: key 'subnets'")
    return Suite(top.name or path.stem, top.description, top.protocol, dataset, params, subnets, path,
                 seeds=list(top.seeds) if top.seeds is not None else [0])


def _variant(suite: Suite, from_file: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """The resolved protocol/dataset/params values that differ from the suite file's, by dotted key."""
    try:
        base = dict(_flat(_validate(from_file, path, str(path)).to_dict()))
    except SlimBenchError:  # the file is only valid with its overrides: every resolved value is theirs
        base = {}
    changed = {key: value for key, value in _flat(suite.to_dict()) if base.get(key, _MISSING) != value}
    return result_variant(suite.protocol, changed)   # `params.workers=0` names no leaderboard column


def _flat(resolved: Dict[str, Any]) -> Iterator[Tuple[str, Any]]:
    """``(dotted key, value)`` of the protocol, dataset and params of a resolved suite (lists stay whole)."""
    def walk(prefix: str, value: Any) -> Iterator[Tuple[str, Any]]:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                yield from walk(f"{prefix}.{k}", v)
        else:
            yield prefix, value

    yield "protocol", resolved["protocol"]
    for block in ("dataset", "params"):
        yield from walk(block, resolved[block])


def _check_selection(selection: Union[str, List[str]], where: str) -> Union[str, List[str]]:
    if isinstance(selection, str) and selection in SELECTIONS:
        return selection
    names = selection.split(",") if isinstance(selection, str) else selection
    try:
        return [str(SubnetSpec.parse(n)) for n in names]
    except SlimBenchError as e:
        raise ConfigError(f"{where}: expected 'all', 'widths', 'desired' or a list of sub-networks; {e}") from None


def recipe_depths(checkpoint: Checkpoint) -> List[Tuple[int, ...]]:
    """The depths the checkpoint's pretraining recipe sampled (``method.depths`` of its stored config).

    Empty for a recipe that trained only its desired networks (``method.sample: desired``).
    """
    method = (checkpoint.config or {}).get("method")
    depths = method.get("depths") if isinstance(method, dict) else None
    if not depths or method.get("sample") == "desired":
        return []
    try:
        return [tuple(int(b) for b in d) for d in depths]
    except (TypeError, ValueError):
        raise ConfigError(f"checkpoint {checkpoint.path}: config method.depths must be lists of blocks per "
                          f"stage such as [[1, 1, 1, 1]], got {depths!r}") from None


def resolve_subnets(selection: Union[str, List[str]], checkpoint: Checkpoint) -> List[SubnetSpec]:
    """The sub-networks a selection means for one checkpoint (checked to be contained in it).

    ``all``: every width at full depth, the desired networks, and every width at each depth the
    recipe sampled (DSPNet's grid); ``widths``: every width at full depth.
    """
    model = checkpoint.build_model()
    if selection == "widths":
        specs = model.subnets()
    elif selection == "all":
        desired = [model.check_subnet(d) for d in checkpoint.desired]
        grid = [model.check_subnet(s) for s in model.subnets(recipe_depths(checkpoint))]
        specs = [*grid[:len(model.widths)], *desired, *grid[len(model.widths):]]
    elif selection == "desired":
        if not checkpoint.desired:
            raise ConfigError(f"checkpoint {checkpoint.path}: records no desired networks; use --subnets all "
                              f"or a list such as w1.0,w0.5")
        specs = [model.check_subnet(d) for d in checkpoint.desired]
    else:  # a width the checkpoint does not store is allowed: protocols calibrate its BatchNorm on data
        specs = [model.check_subnet(s, allow_any_width=True) for s in _check_selection(selection, "--subnets")]
    return list(dict.fromkeys(specs))
