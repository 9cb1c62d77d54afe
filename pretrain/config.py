"""Typed configs from YAML: dataclasses as schemas, one clear error per bad key.

Used by pretraining recipes and benchmark suites alike: an unknown key, a wrong type or a bad
value raises ``ConfigError`` naming the file, the dotted key and what was expected.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Type, TypeVar, Union

import yaml

from pretrain.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: "str | Path") -> Dict[str, Any]:
    """Read a YAML mapping, with a ConfigError for a missing file, bad YAML or a non-mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}".splitlines()[0]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, found {type(data).__name__}")
    return data


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + (" or null" if len(args) < len(typing.get_args(tp)) else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, List, tuple):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin in (dict, Dict):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp, source: str, key: str):
    def fail(extra: str = ""):
        raise ConfigError(f"{source}: key '{key}': expected {_type_name(tp)}, got {value!r}{extra}")

    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        nested = None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, source, key)
            except ConfigError as e:   # a mapping for an optional section: its own key's error says more
                if dataclasses.is_dataclass(a) and isinstance(value, Mapping):
                    nested = nested or e
                continue
        if nested is not None:
            raise nested
        fail()
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        fail()
    if origin in (list, List, tuple):
        if not isinstance(value, (list, tuple)):
            fail()
        args = typing.get_args(tp)
        item = args[0] if args else Any
        out = [_convert(v, item, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Dict):
        if not isinstance(value, Mapping):
            fail()
        args = typing.get_args(tp)
        vt = args[1] if args else Any
        return {str(k): _convert(v, vt, source, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            fail()
        return from_dict(tp, value, source, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        fail()
    if tp is str:
        if isinstance(value, str):
            return value
        fail()
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    fail()


def from_dict(cls: Type[T], data: Mapping[str, Any], source: str, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types by name."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{source}: unknown key '{prefix}{unknown[0]}'; expected one of "
                          f"{', '.join(prefix + f for f in fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], source, prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key '{prefix}{name}' ({_type_name(hints[name])})")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: {e}") from None
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(f"{source}: {prefix}{e}") from None
    return obj


def to_dict(obj) -> Dict[str, Any]:
    """A dataclass config as plain data (for printing, digests and checkpoints)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(obj)


def apply_overrides(data: Dict[str, Any], overrides: Iterable[str], source: str = "command line") -> Dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a nested mapping, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                raise ConfigError(f"{source}: override {key!r}: '{p}' is not a mapping")
            node = node[p]
        node[parts[-1]] = value
    return data


def optional_path(value: Optional[str]) -> Optional[Path]:
    """A config path value as a Path (None stays None)."""
    return None if value in (None, "") else Path(value)
