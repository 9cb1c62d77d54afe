"""`bench sweep` of a plan with pretraining variants (the techniques ablation): each variant pretrained as a
local job, then benchmarked; a bad variant refused before any job; a killed pretraining resumed."""
import json
from pathlib import Path

import pytest
import yaml

from benchmarks.cli import main
from benchmarks.results.merged import MergedStore, find_stores
from benchmarks.launch.sweep import Sweep, load_plan
from pretrain.checkpoints.format import load_checkpoint
from pretrain.errors import ConfigError
from pretrain.recipe import load_recipe
from tests.pretrain.test_trainer import tiny_recipe_dict

VANILLA = ["method.slim_start_epoch=0", "method.distill=none", "method.loss_weights=uniform"]


@pytest.fixture
def plan(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(max_steps=4)))
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({
        "pretrain": [{"name": "vanilla", "recipe": str(recipe), "overrides": VANILLA},
                     {"name": "slimclr", "recipe": str(recipe)}],
        "pretrain_overrides": ["run.diagnose_every=2"],
        "suites": ["complexity"], "subnets": "widths", "launcher": {"time_min": 10, "max_parallel": 2}}))
    return path


@pytest.mark.slow
def test_variants_pretrain_as_jobs_then_their_cells_run(plan, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(plan), "--out", str(out), "--launcher", "local", "--wait"]) == 0
    printed = capsys.readouterr().out
    assert "submitted 2 pretraining(s) (local): vanilla, slimclr" in printed
    assert "4 cells in" in printed and "4 finished" in printed
    for name, slow_start in (("vanilla", 0), ("slimclr", 0.5)):
        ckpt = load_checkpoint(out / "pretrain" / name / "checkpoint.pt")
        assert ckpt.config["method"]["slim_start_epoch"] == slow_start and ckpt.config["run"]["diagnose_every"] == 2
        lines = [json.loads(x) for x in (out / "pretrain" / name / "log.jsonl").read_text().splitlines()]
        assert [x["step"] for x in lines if "grad/ratio_full_smallest" in x] == [2, 4]
    assert load_checkpoint(out / "pretrain" / "vanilla" / "checkpoint.pt").config["method"]["distill"] == "none"
    rows = MergedStore(find_stores(out)).rows()
    assert {r["checkpoint_path"].split("/")[-2] for r in rows} == {"vanilla", "slimclr"}
    assert main(["sweep", str(plan), "--out", str(out), "--status"]) == 0
    table = capsys.readouterr().out
    assert "vanilla" in table and "finished" in table and "4 finished" in table
    assert not any(line.startswith("checkpoint@") for line in table.splitlines())   # cells named by their variant
    assert main(["leaderboard", "--runs", str(out)]) == 0
    board = capsys.readouterr().out
    assert "vanilla" in board and "slimclr" in board


def test_a_bad_variant_is_refused_naming_the_key_before_any_job(plan, tmp_path):
    data = yaml.safe_load(plan.read_text())
    data["pretrain"][0]["overrides"] = ["method.no_such_key=1"]
    plan.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="no_such_key"):
        load_plan(plan)
    data["pretrain"][0]["overrides"], data["pretrain"][1]["name"] = [], "vanilla"
    plan.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"pretrain\[1\].name"):
        load_plan(plan)
    assert not (tmp_path / "sweep").exists()


def test_an_unfinished_pretraining_lists_no_cells_and_a_stopped_one_is_resumed(plan, tmp_path):
    from pretrain.recipe import load_recipe
    from pretrain.trainer import train

    out = tmp_path / "sweep"
    data = yaml.safe_load(plan.read_text())
    recipe = load_recipe(data["pretrain"][1]["recipe"], ["run.max_steps=2", "run.diagnose_every=2"])
    train(recipe, out / "pretrain" / "slimclr", progress=False)   # as a job killed after step 2
    sweep = Sweep(plan, out, "local")
    assert [v.state for v in sweep.variants] == ["not started", "not started"] and sweep.cells == []
    sweep.tried.add("vanilla")   # submit only the stopped one
    (submitted,) = sweep.submit_pretraining()
    assert submitted.detail == "submitted (resumes its last save)"
    sweep.wait()
    assert [v.state for v in sweep.variants] == ["not started", "finished"]
    assert len(sweep.cells) == 2


def test_local_cpu_jobs_split_the_cores_between_them(plan, tmp_path, monkeypatch):
    import torch

    from benchmarks.launch import jobs
    from benchmarks.launch.sweep import CellJob

    monkeypatch.setattr(jobs.os, "cpu_count", lambda: 8)
    sweep = Sweep(plan, tmp_path / "sweep", "local")     # the plan's max_parallel: 2
    assert sweep.local_threads(sweep.statuses(), starting=5) == 4
    assert Sweep(plan, tmp_path / "sweep", "slurm").local_threads([], starting=5) is None
    CellJob(["list", "suites"], threads=1)()   # the job's own process takes its share before it works
    assert torch.get_num_threads() == 1


REPO = Path(__file__).resolve().parents[3]
ABLATIONS = sorted((REPO / "configs" / "ablations").glob("*.yaml"))


@pytest.mark.parametrize("path", ABLATIONS, ids=[p.stem for p in ABLATIONS])
def test_every_shipped_ablation_plan_resolves_each_pretraining(path):
    plan = load_plan(path)
    names = [load_recipe(REPO / v.recipe, [*plan.pretrain_overrides, *v.overrides]) and v.name for v in plan.pretrain]
    assert len(set(names)) == len(plan.pretrain) >= 4


def test_the_distillation_and_weighting_plans_cover_every_mode():
    from pretrain.methods.losses import DISTILLATIONS, LOSS_WEIGHTINGS

    def methods(name):
        plan = load_plan(REPO / "configs" / "ablations" / f"{name}.yaml")
        return [load_recipe(REPO / v.recipe, list(v.overrides)).method for v in plan.pretrain]

    distilled = methods("slimclr-mocov2-distillation")
    assert {m.distill for m in distilled} == set(DISTILLATIONS)
    assert {(m.distill, m.distill_on) for m in distilled} >= {("kd", "features"), ("mse", "features")}
    assert any(m.full_distill for m in distilled)
    assert {m.loss_weights for m in methods("slimclr-mocov2-loss-weights")} == set(LOSS_WEIGHTINGS)
