"""Recipes: every shipped YAML resolves; bad keys fail naming the file and the key; --dry-run."""
from pathlib import Path

import pytest
import yaml

from benchmarks.cli import main
from pretrain.errors import ConfigError
from pretrain.recipe import (BYOLRecipe, MoCoV2Recipe, MoCoV3Recipe, load_recipe, parse_recipe, recipe_dict,
                            recipe_digest)

RECIPES = sorted((Path(__file__).resolve().parents[2] / "configs" / "pretrain").glob("*.yaml"))


def test_the_published_and_demo_recipes_are_shipped():
    names = {p.stem for p in RECIPES}
    assert {"slimclr-mocov2-r50-200ep", "slimclr-mocov2-r50-800ep", "slimclr-mocov3-r50-300ep",
            "slimclr-simclr-r50-100ep", "dspnet-byol-r50", "demo-slimclr-mocov2", "demo-slimclr-simclr",
            "demo-dspnet"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_resolves(path):
    recipe = load_recipe(path)
    plain = recipe_dict(recipe)
    assert parse_recipe(plain, "round trip") == recipe   # the resolved form reads back the same


@pytest.mark.parametrize("stem, epochs, start", [("slimclr-mocov2-r50-200ep", 200, 100),
                                                 ("slimclr-mocov2-r50-800ep", 800, 400)])
def test_slimclr_mocov2_recipes_as_published(stem, epochs, start):
    r = load_recipe(next(p for p in RECIPES if p.stem == stem))
    assert isinstance(r.method, MoCoV2Recipe)
    assert (r.run.epochs, r.method.slim_start_epoch) == (epochs, start)
    assert (r.optim.name, r.optim.lr, r.optim.weight_decay, r.data.batch_size) == ("sgd", 0.2, 1e-4, 1024)
    assert (r.method.queue_size, r.method.momentum, r.method.temperature) == (65536, 0.999, 0.2)
    assert r.model.widths == [1.0, 0.75, 0.5, 0.25] and r.model.arch == "slim_resnet50"
    assert (r.method.distill_alpha, r.method.teacher_temp, r.method.student_temp) == (0.5, 5.0, 5.0)
    # mocov2.sh passes no slim_start_lr: params.py's 1e-4; warmup_proportion 0.05 (200 ep) / 0.0125 (800 ep)
    assert (r.method.slim_start_lr, r.optim.warmup_fraction, r.optim.min_lr) == (1e-4, 10 / epochs, 1e-8)
    assert r.model.zero_init_residual and r.method.shuffle_bn and not r.optim.exclude_bn_bias


def test_slimclr_mocov3_recipe_as_published():
    r = load_recipe(next(p for p in RECIPES if p.stem == "slimclr-mocov3-r50-300ep"))
    assert isinstance(r.method, MoCoV3Recipe)
    assert (r.run.epochs, r.method.slim_start_epoch, r.optim.name, r.optim.lr, r.optim.weight_decay) == \
        (300, 150, "lars", 1.2, 1e-6)
    assert (r.method.temperature, r.method.momentum, r.method.momentum_schedule) == (1.0, 0.99, "cosine")
    assert (r.method.slim_start_lr, r.optim.warmup_fraction, r.optim.min_lr) == (3.2, 0.033, 1e-8)
    assert (r.method.proj_dims, r.method.pred_dims) == ([4096, 256], [4096, 256])   # MoCo_ResNet, 2 layers each


def test_method_defaults_differ_per_method():
    base = {"data": {"dataset": "fashion-mnist"}}
    v2 = parse_recipe({**base, "method": {"name": "slimclr-mocov2"}}, "x").method
    v3 = parse_recipe({**base, "method": {"name": "slimclr-mocov3"}}, "x").method
    byol = parse_recipe({**base, "method": {"name": "dspnet-byol"}}, "x").method
    assert (v2.temperature, v2.teacher_temp, v2.queue_size) == (0.2, 5.0, 65536)
    assert (v3.temperature, v3.teacher_temp, v3.momentum_schedule) == (1.0, 1.0, "cosine")
    assert isinstance(byol, BYOLRecipe) and (byol.momentum, byol.momentum_schedule) == (0.996, "cosine")
    simclr = parse_recipe({**base, "method": {"name": "slimclr-simclr"}}, "x").method
    assert (simclr.temperature, simclr.proj_dims, simclr.distill) == (0.1, [2048, 128], "kd")


def test_distill_read_as_a_switch_keeps_its_meaning_and_every_digest():
    """``distill: true/false`` (before it had modes) is kd/none, and recipes digest as they did then."""
    base = {"data": {"dataset": "fashion-mnist"}}
    on = parse_recipe({**base, "method": {"name": "slimclr-mocov2", "distill": True}}, "x")
    off = parse_recipe({**base, "method": {"name": "slimclr-mocov2", "distill": False}}, "x")
    assert (on.method.distill, off.method.distill) == ("kd", "none")
    assert recipe_digest(on) == recipe_digest(parse_recipe({**base, "method": {"name": "slimclr-mocov2"}}, "x"))
    # the demo recipe's digest at 6052f1a, before distill_on and full_distill existed
    demo = load_recipe(next(p for p in RECIPES if p.stem == "demo-slimclr-mocov2"))
    assert recipe_digest(demo) == "91e87ea61d2475e34380f6dbefc3585c1d2cae55c064370e12d93ea4e0c6b316"
    demo.method.full_distill = True
    assert recipe_digest(demo) != "91e87ea61d2475e34380f6dbefc3585c1d2cae55c064370e12d93ea4e0c6b316"


def write(tmp_path, data):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("data, key", [
    ({"method": {"name": "slimclr-mocov2", "queue_sise": 10}}, "method.queue_sise"),
    ({"method": {"name": "slimclr-mocov3", "queue_size": 10}}, "method.queue_size"),   # a MoCo v2 key
    ({"method": {"name": "slimclr-mocov2"}, "optim": {"lr": "fast"}}, "optim.lr"),
    ({"method": {"name": "slimclr-mocov2"}, "model": {"widths": [0.5, 1.0]}}, "widths"),
    ({"method": {"name": "simclr"}}, "method.name"),
    ({"method": {"name": []}}, "method.name"),   # found by the recipe fuzzer: unhashable, not a clean error
    ({"method": {"name": "dspnet-byol", "desired": ["w0.3"]}}, "method.desired[0]"),
    ({"method": {"name": "dspnet-byol", "depths": [[4, 2, 2, 2]]}}, "method.depths[0]"),
    ({"method": {"name": "dspnet-byol", "uniformity_weight": -0.1}}, "method.uniformity_weight"),
    ({"method": {"name": "slimclr-mocov2"}, "data": {"dataset": "imagefolder"}}, "root"),
    ({"method": {"name": "slimclr-mocov2"}, "epochs": 3}, "epochs"),
    ({"method": {"name": "slimclr-mocov2", "bn_groups": 3}, "data": {"dataset": "fashion-mnist", "batch_size": 32}},
     "method.bn_groups"),
    ({"method": {"name": "slimclr-mocov2"}, "optim": {"lr_scale": {"predictor": 10}}}, "optim.lr_scale.predictor"),
    ({"method": {"name": "dspnet-byol"}, "optim": {"lr_scale": {"predictor": 0}}}, "lr_scale.predictor"),
    ({"method": {"name": "slimclr-mocov2"}, "optim": {"warmup_fraction": 1.5}}, "optim.warmup_fraction"),
    ({"method": {"name": "slimclr-mocov2"}, "optim": {"warmup_fraction": 0.1, "warmup_epochs": 2}},
     "optim.warmup_fraction"),
    ({"method": {"name": "slimclr-mocov3", "head_init_std": 0}}, "method.head_init_std"),
    ({"method": {"name": "slimclr-simclr", "momentum": 0.99}}, "method.momentum"),   # SimCLR has no key encoder
    ({"method": {"name": "slimclr-mocov2", "distill": "seed"}}, "method.distill"),
    ({"method": {"name": "slimclr-mocov2", "distill": "dkd", "distill_on": "features"}}, "method.distill_on"),
])
def test_bad_recipes_name_the_file_and_the_key(tmp_path, data, key):
    data.setdefault("data", {"dataset": "fashion-mnist"})
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and key in str(err.value)


def test_dry_run_prints_the_resolved_recipe_with_overrides(tmp_path, capsys):
    path = write(tmp_path, {"method": {"name": "slimclr-mocov3"}, "data": {"dataset": "fashion-mnist"}})
    assert main(["pretrain", "--config", str(path), "--dry-run", "run.epochs=7", "--data-root", "/x"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["run"]["epochs"] == 7 and printed["data"]["root"] == "/x"
    assert printed["method"]["temperature"] == 1.0 and printed["method"]["pred_dims"] == [4096, 256]
    assert not (tmp_path / "runs").exists()
    assert main(["pretrain", "--config", str(path), "--dry-run", "optim.lrr=1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err


def test_dry_run_shows_mocov3_heads_at_the_largest_and_smallest_width(capsys):
    path = next(p for p in RECIPES if p.stem == "slimclr-mocov3-r50-300ep")
    assert main(["pretrain", "--config", str(path), "--dry-run"]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# ")]
    assert heads == [
        "# networks per step: before epoch 150 only w1.0 (1 network), then every width "
        "(4 networks: w1.0, w0.75, w0.5, w0.25)",
        "# projector at w1.0: Linear(2048->4096, no bias) BN ReLU Linear(4096->256, no bias) BN(no affine)",
        "# predictor at w1.0: Linear(256->4096, no bias) BN ReLU Linear(4096->256, no bias)",
        "# projector at w0.25: Linear(512->1024, no bias) BN ReLU Linear(1024->256, no bias) BN(no affine)",
        "# predictor at w0.25: Linear(256->1024, no bias) BN ReLU Linear(1024->256, no bias)"]


def test_shuffle_bn_that_cannot_shuffle_is_refused_before_training(tmp_path, capsys):
    data = {"method": {"name": "slimclr-mocov2", "queue_size": 8, "proj_dims": [8, 8]},
            "model": {"arch": "slim_resnet18", "widths": [1.0, 0.5], "stem": "small"},
            "data": {"dataset": "fashion-mnist", "image_size": 8, "batch_size": 4, "workers": 0, "limit": 8}}
    path = write(tmp_path, data)
    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "method.shuffle_bn" in err and "bn_groups" in err
    assert not out.exists()
    data["method"]["bn_groups"] = 2          # two BN batches of 2: the shuffle can work on one process
    assert main(["pretrain", "--config", str(write(tmp_path, data)), "--out", str(out), "--no-progress",
                 "run.max_steps=1"]) == 0


def test_a_run_saved_before_distill_had_modes_resumes_under_the_new_spelling():
    from pretrain.trainer import recipe_changes

    recipe = load_recipe(next(p for p in RECIPES if p.stem == "demo-slimclr-mocov2"))
    saved = recipe_dict(recipe)   # as a training state written before distill_on and full_distill existed
    saved["method"]["distill"] = True
    del saved["method"]["distill_on"], saved["method"]["full_distill"]
    assert recipe_changes(saved, recipe) == []
    recipe.method.distill = "mse"
    assert recipe_changes(saved, recipe) == ["method.distill: True -> 'mse'"]
