from dataclasses import dataclass, field
from typing import List, Literal, Optional

import pytest

from pretrain.config import apply_overrides, from_dict, load_yaml, to_dict
from pretrain.errors import ConfigError


@dataclass
class Inner:
    lr: float = 0.1
    steps: List[int] = field(default_factory=lambda: [60, 80])


@dataclass
class Outer:
    name: str
    kind: Literal["a", "b"] = "a"
    epochs: int = 10
    inner: Inner = field(default_factory=Inner)
    note: Optional[str] = None


def test_valid_config_builds_and_converts_ints_to_floats():
    cfg = from_dict(Outer, {"name": "x", "inner": {"lr": 30, "steps": [1, 2]}}, "s.yaml")
    assert cfg.inner.lr == 30.0 and isinstance(cfg.inner.lr, float) and cfg.inner.steps == [1, 2]
    assert to_dict(cfg)["inner"] == {"lr": 30.0, "steps": [1, 2]}


@pytest.mark.parametrize("data,match", [
    ({"name": "x", "epoch": 3}, r"s\.yaml: unknown key 'epoch'"),
    ({"name": "x", "inner": {"lrr": 1}}, r"unknown key 'inner\.lrr'"),
    ({"name": "x", "epochs": "ten"}, r"key 'epochs': expected int"),
    ({"name": "x", "epochs": True}, r"key 'epochs': expected int"),
    ({"name": "x", "kind": "c"}, r"key 'kind': expected one of 'a', 'b'"),
    ({"name": "x", "inner": {"steps": [1, "x"]}}, r"key 'inner\.steps\[1\]'"),
    ({}, r"missing required key 'name'"),
])
def test_bad_configs_name_file_and_key(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Outer, data, "s.yaml")


def test_overrides_parse_yaml_values():
    data = apply_overrides({"a": {"b": 1}}, ["a.b=2.5", "c=[1, 2]", "d=text"])
    assert data == {"a": {"b": 2.5}, "c": [1, 2], "d": "text"}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(lst)
