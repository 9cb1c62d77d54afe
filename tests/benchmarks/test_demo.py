"""Pieces of the demo driver: the reuse check it makes without a child process, where each suite runs,
and its stage times."""
from pathlib import Path

from benchmarks.demo import DemoPaths, Stages, finished_before
from benchmarks.suites import load_suite
from tests.benchmarks.test_cli_run import setup  # noqa: F401  (fixture)


def test_a_finished_suite_is_seen_without_starting_bench_run(setup):
    tmp_path, ckpt = setup
    paths = DemoPaths(tmp_path, tmp_path / "data")          # its results.db is <runs>/results.db
    suite = load_suite(str(tmp_path / "tiny.yaml"))
    assert not finished_before(suite, ckpt, paths)          # no database yet
    common = ["--checkpoint", str(ckpt), "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "runs")]
    assert main_run(tmp_path, paths, common) == 0
    assert finished_before(suite, ckpt, paths)
    assert not finished_before(load_suite("complexity"), ckpt, paths)   # another suite: still to run


def main_run(tmp_path, paths, common):
    from benchmarks.cli import main
    return main(["run", "--db", str(paths.db), "--suite", str(tmp_path / "tiny.yaml"), *common])


def test_stage_times_are_listed_with_their_total():
    stages = Stages()
    stages.times += [("pretrain demo-dspnet", 372.4), ("suite demo-det (3 checkpoints)", 61.0)]
    assert stages.table().splitlines() == ["demo stages:", "  pretrain demo-dspnet            6:12",
                                           "  suite demo-det (3 checkpoints)  1:01",
                                           "  total                           7:13"]


def test_classification_suites_run_in_the_demo_process_and_engines_in_a_child(setup, monkeypatch, capsys):
    import types

    import benchmarks.demo as demo
    from benchmarks.demo import run_demo_suite
    from benchmarks.results.store import ResultsStore
    from transfer.protocols.base import PROTOCOL_MODULES, get_protocol
    tmp_path, ckpt = setup
    paths = DemoPaths(tmp_path / "runs", tmp_path / "data")
    paths.runs.mkdir()
    def no_child(*args, **kwargs):
        raise AssertionError(f"a child process ran: {args}")

    monkeypatch.setattr(demo, "subprocess", types.SimpleNamespace(run=no_child))
    run_demo_suite(str(tmp_path / "tiny.yaml"), ckpt, paths)
    (run,) = ResultsStore(paths.db).runs()
    assert run["status"] == "finished" and "tiny-linear-fast seed 0: run" in capsys.readouterr().out
    assert finished_before(load_suite(str(tmp_path / "tiny.yaml")), ckpt, paths)
    engines = {name for name in PROTOCOL_MODULES if get_protocol(name).uses_engine}
    assert engines == {"detectron2", "mmseg"}


def test_the_demo_vanilla_variant_is_the_ablation_plans(tmp_path):
    from benchmarks.demo import VANILLA_OVERRIDES
    from benchmarks.launch.sweep import load_plan

    plan = load_plan(Path(__file__).resolve().parents[2] / "configs/ablations/demo-slimclr-mocov2-techniques.yaml")
    (vanilla,) = [v for v in plan.pretrain if v.name == "demo-vanilla"]
    assert tuple(vanilla.overrides) == VANILLA_OVERRIDES and vanilla.recipe.endswith("demo-slimclr-mocov2.yaml")


def test_the_demo_diagnoses_its_slimclr_run_beside_the_vanilla_one(tmp_path):
    from benchmarks.demo import BASELINE_RECIPE, VANILLA, VANILLA_OVERRIDES, diagnose_demo
    from pretrain.recipe import parse_recipe
    from pretrain.config import apply_overrides
    from pretrain.trainer import train
    from tests.pretrain.test_trainer import tiny_recipe_dict

    paths = DemoPaths(tmp_path / "runs", tmp_path / "data")
    for name, overrides in ((BASELINE_RECIPE, ()), (VANILLA, VANILLA_OVERRIDES)):
        data = apply_overrides(tiny_recipe_dict(max_steps=4, diagnose_every=2), list(overrides), source="test")
        train(parse_recipe(data, "tiny"), paths.runs / "pretrain" / name, progress=False)
    printed = diagnose_demo(paths)
    assert printed.startswith("vanilla (slimclr-mocov2)") and "slimclr (slimclr-mocov2)" in printed
    assert (paths.runs / "diagnose" / "ratios.png").stat().st_size > 10_000
