"""The trainer: exact resume, non-finite loss stop, logs, checkpoints usable by `bench`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pretrain.checkpoints.format import load_checkpoint
from pretrain.recipe import parse_recipe
from pretrain.trainer import CHECKPOINT_FILE, LOG_FILE, STATE_FILE, NonFiniteLoss, TrainingError, train

ROOT = Path(__file__).resolve().parents[2]


def tiny_recipe_dict(name="slimclr-mocov2", **run):
    """A recipe that trains in seconds on CPU: 8 px Fashion-MNIST, slim_resnet18 at widths 1.0/0.5."""
    method = {"slimclr-mocov2": {"queue_size": 24, "proj_dims": [16, 8], "slim_start_epoch": 0.5, "shuffle_bn": False},
              "slimclr-mocov3": {"proj_dims": [16, 16, 8], "pred_dims": [16, 8]},
              "slimclr-simclr": {"proj_dims": [16, 8], "slim_start_epoch": 0.5},
              "dspnet-byol": {"proj_dims": [16, 8], "pred_dims": [16, 8], "depths": [[1, 1, 1, 1]],
                              "desired": ["w0.5-d1.1.1.1"], "num_random": 1}}[name]
    return {"method": {"name": name, **method},
            "model": {"arch": "slim_resnet18", "widths": [1.0, 0.5], "stem": "small"},
            "data": {"dataset": "fashion-mnist", "image_size": 8, "batch_size": 4, "workers": 0, "limit": 16},
            "optim": {"name": "sgd", "lr": 0.05, "warmup_epochs": 0.5},
            "run": {"epochs": 2, "seed": 0, "deterministic": True, "checkpoint_every": 2, "log_every": 1, **run}}


def tiny(name="slimclr-mocov2", **run):
    return parse_recipe(tiny_recipe_dict(name, **run), "tiny")


def final_state(out):
    state = torch.load(out / STATE_FILE, weights_only=False)
    return state["method"], state["optimizer"]["state"], load_checkpoint(out / CHECKPOINT_FILE).state_dict


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            assert_same(a[k], b[k])
        elif isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


@pytest.mark.slow
@pytest.mark.parametrize("name", ["slimclr-mocov2", "dspnet-byol"])
def test_stop_and_resume_equals_uninterrupted_run(tmp_path, name):
    # 4 steps per epoch, 8 in all; stop at 3 (mid-epoch, after the slow start switch at step 2).
    full = train(tiny(name), tmp_path / "full", progress=False)
    assert full.steps == 8 and full.total_steps == 8
    part = train(tiny(name, max_steps=3), tmp_path / "part", progress=False)
    assert part.steps == 3
    assert load_checkpoint(part.checkpoint).extra["steps"] == 3
    train(tiny(name), tmp_path / "part", resume=True, progress=False)
    for a, b in zip(final_state(tmp_path / "full"), final_state(tmp_path / "part")):
        assert_same(a, b)
    logged = [json.loads(line) for line in (tmp_path / "part" / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 9))


def test_grad_clip_scales_the_step_and_the_log_keeps_the_norm_before_clipping(tmp_path):
    clip = 1e-3
    records, trained = [], []
    for run, grad_clip in (("plain", None), ("clipped", clip)):
        d = tiny_recipe_dict(max_steps=1)
        d["optim"].update(momentum=0.0, weight_decay=0.0, grad_clip=grad_clip)   # step = -lr * grad
        train(parse_recipe(d, run), tmp_path / run, progress=False)
        records.append(json.loads((tmp_path / run / LOG_FILE).read_text()))
        state = torch.load(tmp_path / run / STATE_FILE, weights_only=False)["method"]
        trained.append({k: v for k, v in state.items() if k.startswith(("encoder.", "head."))})
    norm, lr = records[0]["grad_norm"], records[0]["lr"]
    assert records[1]["grad_norm"] == norm > clip   # same init and batch; the log has the norm before clipping
    # Both runs start from the same weights: plain - clipped = -lr * g * (1 - clip / |g|).
    gap = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm((trained[0][k] - trained[1][k]).float())
                                                for k in trained[0]]))
    assert gap.item() == pytest.approx(lr * (norm - clip), rel=1e-3)


def test_log_lines_checkpoint_and_slow_start(tmp_path):
    result = train(tiny(max_steps=4), tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert {"lr", "loss", "momentum", "grad_norm", "images_per_s", "epoch", "w1.0/infonce"} <= set(r)
        assert 0 < r["grad_norm"] < float("inf")
    # slim_start_epoch 0.5 of a 4-step epoch: steps 1-2 train the full width only.
    assert [r["slim_active"] for r in records] == [False, False, True, True]
    assert "w0.5/kd" not in records[1] and "w0.5/kd" in records[2]
    assert records[0]["lr"] < records[1]["lr"]   # warm-up
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.method == "slimclr-mocov2" and ckpt.widths == [1.0, 0.5]
    assert ckpt.config["method"]["temperature"] == 0.2 and ckpt.config["run"]["max_steps"] == 4
    ckpt.build_model()
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text()) == ckpt.config
    with pytest.raises(TrainingError, match="--resume"):
        train(tiny(max_steps=4), tmp_path, progress=False)
    with pytest.raises(TrainingError, match="optim.lr"):
        changed = tiny_recipe_dict(max_steps=6)
        changed["optim"]["lr"] = 0.5
        train(parse_recipe(changed, "tiny"), tmp_path, resume=True, progress=False)


def test_the_run_ends_with_the_methods_diagnosis_of_its_last_logged_terms(tmp_path, monkeypatch, caplog):
    import pretrain.methods.slimclr_mocov2 as mocov2

    from benchmarks.runner import checkpoint_meta

    monkeypatch.setattr(mocov2, "DISCRIMINATION_MARGIN", 10.0)   # every network now counts as collapsed
    result = train(tiny(max_steps=4), tmp_path / "run", progress=False)
    last = json.loads((tmp_path / "run" / LOG_FILE).read_text().splitlines()[-1])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "tells no two" in r.getMessage()]
    assert [w.split()[0] for w in warned] == ["w1.0", "w0.5"]
    assert f"positive {last['w0.5/pos']:.3f}, other fresh keys {last['w0.5/neg_batch']:.3f}" in warned[1]
    diagnosis = load_checkpoint(result.checkpoint).extra["diagnosis"]   # what the leaderboard's comparison marks
    assert [d["subnet"] for d in diagnosis] == ["w1.0", "w0.5"] and diagnosis[1]["message"] in warned[1]
    assert checkpoint_meta(load_checkpoint(result.checkpoint))["diagnosis"] == diagnosis


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = tiny_recipe_dict("slimclr-mocov3", checkpoint_every=1, max_steps=8)
    data["optim"] = {"name": "sgd", "lr": 1.0e+30}   # diverges within a few steps
    with pytest.raises(NonFiniteLoss) as err:
        train(parse_recipe(data, "tiny"), tmp_path, progress=False)
    message = str(err.value)
    assert "w1.0/infonce=" in message and "last good checkpoint" in message
    failed_step = int(message.split("step ")[1].split(":")[0])
    kept = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert kept.extra["steps"] == failed_step - 1
    assert all(torch.isfinite(v).all() for v in kept.state_dict.values() if v.is_floating_point())


def run_bench(*args, cwd=ROOT):
    """Run `bench` in a subprocess (what a SIGKILL reliability test drives as well)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "benchmarks.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_bench_pretrain_cli_runs_and_resumes(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict("dspnet-byol")))
    out = tmp_path / "run"
    first = run_bench("pretrain", "--config", str(recipe), "--out", str(out), "--no-progress", "run.max_steps=2")
    assert first.returncode == 0, first.stderr
    assert "2/8 steps" in first.stdout
    second = run_bench("pretrain", "--config", str(recipe), "--out", str(out), "--resume", "--no-progress",
                       "run.max_steps=4")
    assert second.returncode == 0, second.stderr
    ckpt = load_checkpoint(out / CHECKPOINT_FILE)
    assert ckpt.extra["steps"] == 4 and ckpt.method == "dspnet-byol"
    assert ckpt.desired == ["w0.5-d1.1.1.1"]   # `bench list subnets` shows it first


def test_recipe_changes_name_the_keys_a_resume_may_not_change():
    from pretrain.trainer import recipe_changes, recipe_dict
    old = recipe_dict(tiny())
    assert recipe_changes(old, tiny(max_steps=5, log_every=3)) == []   # resumable keys
    data = tiny_recipe_dict()
    data["optim"]["lr"] = 0.1
    del old["data"]["blur"]                                            # a run from before the key existed
    assert recipe_changes(old, parse_recipe(data, "tiny")) == ["data.blur: None -> True", "optim.lr: 0.05 -> 0.1"]


@pytest.mark.parametrize("amx", [True, False])
def test_cpu_bf16_autocasts_on_amx_and_falls_back_to_fp32_without(tmp_path, monkeypatch, caplog, amx):
    # The probe is patched: bfloat16 autocast runs on any CPU (AMX only makes it fast), so both
    # branches are exercised wherever the suite runs.
    monkeypatch.setattr("pretrain.trainer.cpu_has_amx", lambda: amx)
    conv_dtypes = set()

    def record(module, args, output):
        if isinstance(module, torch.nn.Conv2d) and module.training:
            conv_dtypes.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        train(tiny("dspnet-byol", max_steps=2, cpu_bf16=True), tmp_path / "bf16", progress=False)
    finally:
        handle.remove()
    assert conv_dtypes == ({torch.bfloat16} if amx else {torch.float32})
    assert ("no AMX tiles" in caplog.text) is not amx
    bf16_weights = load_checkpoint(tmp_path / "bf16" / CHECKPOINT_FILE).state_dict
    assert all(v.dtype == torch.float32 for v in bf16_weights.values() if v.is_floating_point())
    train(tiny("dspnet-byol", max_steps=2), tmp_path / "fp32", progress=False)
    fp32_weights = load_checkpoint(tmp_path / "fp32" / CHECKPOINT_FILE).state_dict
    same = all(torch.equal(bf16_weights[k], fp32_weights[k]) for k in fp32_weights)
    assert same is not amx   # the fallback computes exactly what fp32 does


@pytest.mark.parametrize("overrides", [(), ("method.distill=atkd", "method.full_distill=true")])
def test_the_demo_slimclr_simclr_recipe_trains_a_few_steps(tmp_path, overrides):
    """configs/pretrain/demo-slimclr-simclr.yaml as shipped, cut to 3 steps of 96 images (slow start: step 0)."""
    from pretrain.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "configs/pretrain/demo-slimclr-simclr.yaml",
                         ["data.limit=96", "run.max_steps=3", "run.log_every=1", *overrides])
    train(recipe, tmp_path / "run", progress=False)
    logged = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    distill = recipe.method.distill
    assert [r["slim_active"] for r in logged] == [False, True, True]
    last = logged[-1]
    assert {f"w{w}/{t}" for w in ("1.0", "0.75", "0.5", "0.25") for t in ("infonce",)} <= set(last)
    assert {f"w{w}/{distill}" for w in ("0.75", "0.5", "0.25")} <= set(last)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in last.items() if isinstance(v, float))
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE).method == "slimclr-simclr"
