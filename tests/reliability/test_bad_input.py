"""Damaged checkpoints and bad configs: one clear error, nothing lost, never a deep traceback."""
import hashlib

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.cli import main
from benchmarks.results.store import ResultsStore
from benchmarks.suites import SUITES_DIR, load_suite
from pretrain.errors import SlimBenchError
from pretrain.recipe import load_recipe
from tests.reliability.conftest import bench

RECIPES_DIR = SUITES_DIR.parent / "pretrain"


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "r18.pt"
    assert bench("init", "--arch", "slim_resnet18", "--widths", "1.0,0.5", "--stem", "small",
                 "--out", path).returncode == 0
    return path


def damaged(kind, good, tmp_path):
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    elif kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "wrong-format":
        torch.save({"conv1.weight": torch.zeros(2)}, path)
    elif kind == "wrong-architecture":
        ckpt = torch.load(good, weights_only=True)
        ckpt["arch"]["depth"], ckpt["arch"]["arch"] = 34, "slim_resnet34"
        torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("kind,message", [("truncated", "not a PyTorch file"), ("zero-byte", "empty"),
                                          ("wrong-format", "not a SlimBench checkpoint"),
                                          ("wrong-architecture", "do not match its architecture slim_resnet34")])
def test_damaged_checkpoint_one_clear_error_nothing_lost(tmp_path, good_ckpt, kind, message, capsys):
    path = damaged(kind, good_ckpt, tmp_path)
    before = digest(path)
    db = tmp_path / "results.db"
    ResultsStore(db).start_run(suite="earlier", suite_digest="d", suite_json={}, protocol="complexity",
                               checkpoint_digest="c", checkpoint_path="p", checkpoint_method="random",
                               checkpoint_widths=[1.0], code_version="0", device="cpu")
    for args in (["run", "--suite", "complexity", "--checkpoint", path, "--db", db, "--out", tmp_path / "runs"],
                 ["export", "--checkpoint", path, "--subnet", "w0.5", "--to", "torchvision", "--out", tmp_path / "x"],
                 ["list", "subnets", path]):
        assert main([str(a) for a in args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("bench: error:") and message in err[0] and str(path) in err[0]
    assert digest(path) == before          # the bad file is left as it was
    assert not (tmp_path / "x").exists()   # no half-written export
    assert len(ResultsStore(db).runs()) == 1  # no run was started, the earlier one is intact


@pytest.mark.slow
def test_locked_database_one_clear_error_then_works(tmp_path, good_ckpt):
    import sqlite3

    db = tmp_path / "results.db"
    ResultsStore(db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    args = ["run", "--suite", "complexity", "--checkpoint", good_ckpt, "--db", db, "--out", tmp_path / "runs",
            "params.resolution=16"]
    done = bench(*args, SLIMBENCH_DB_TIMEOUT="1")
    assert done.returncode == 2, done.stderr
    assert "bench: error: results store" in done.stderr and "locked" in done.stderr
    assert "Traceback" not in done.stderr
    holder.execute("ROLLBACK")
    holder.close()
    assert bench(*args).returncode == 0
    assert [r["status"] for r in ResultsStore(db).runs()] == ["finished"]


# -- fuzzed configs: every failure is the clean validation error --------------------------------------------------

values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
                      | st.text(max_size=12), lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def mutate(data, draw):
    """Replace, add or delete one key somewhere in a nested mapping."""
    node = data
    while True:
        keys = [k for k in node if isinstance(node[k], dict)]
        if not keys or draw(st.booleans()):
            break
        node = node[draw(st.sampled_from(keys))]
    action = draw(st.sampled_from(["replace", "add", "delete"]))
    if action == "add" or not node:
        node[draw(st.text(min_size=1, max_size=10))] = draw(values)
    elif action == "replace":
        node[draw(st.sampled_from(sorted(node)))] = draw(values)
    else:
        del node[draw(st.sampled_from(sorted(node)))]
    return data


def check_clean(loader, data, path):
    path.write_text(yaml.safe_dump(data))
    try:
        loader(path)
    except SlimBenchError:
        pass  # the clean validation error; anything else propagates and fails the test


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_suites_fail_cleanly(tmp_path, data):
    base = data.draw(st.sampled_from(sorted(p.name for p in SUITES_DIR.glob("*.yaml"))))
    suite = mutate(yaml.safe_load((SUITES_DIR / base).read_text()), data.draw)
    check_clean(lambda p: load_suite(str(p)), suite, tmp_path / "fuzzed-suite.yaml")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_recipes_fail_cleanly(tmp_path, data):
    base = data.draw(st.sampled_from(sorted(p.name for p in RECIPES_DIR.glob("*.yaml"))))
    recipe = mutate(yaml.safe_load((RECIPES_DIR / base).read_text()), data.draw)
    check_clean(load_recipe, recipe, tmp_path / "fuzzed-recipe.yaml")
