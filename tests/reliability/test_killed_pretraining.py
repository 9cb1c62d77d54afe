"""Pretraining killed with SIGKILL at three random points, resumed each time, ends bit-identical."""
import json
import random

import pytest
import torch
import yaml

from pretrain.checkpoints.format import load_checkpoint
from pretrain.trainer import CHECKPOINT_FILE, LOG_FILE, STATE_FILE
from tests.pretrain.test_trainer import tiny_recipe_dict
from tests.reliability.conftest import bench, kill, start_bench, wait_until


def logged_step(out):
    path = out / LOG_FILE
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])["step"] if lines else 0
    except json.JSONDecodeError:  # a line being written
        return 0


@pytest.mark.slow
def test_sigkill_three_times_then_resume_is_identical(tmp_path):
    data = tiny_recipe_dict("slimclr-mocov2", epochs=4, checkpoint_every=2, log_every=1)  # 4 steps an epoch
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(data))
    # the reference runs in a child too: float results depend on the thread count
    reference = bench("pretrain", "--config", recipe, "--out", tmp_path / "reference", "--no-progress")
    assert reference.returncode == 0 and "16/16 steps" in reference.stdout, reference.stderr

    out = tmp_path / "killed"
    points = sorted(random.Random(7).sample(range(2, 15), 3))
    for i, point in enumerate(points):
        args = ["pretrain", "--config", recipe, "--out", out, "--no-progress"] + (["--resume"] if i else [])
        proc = start_bench(*args)
        reached = wait_until(lambda: logged_step(out) >= point, proc)
        assert reached and proc.poll() is None, f"run ended before the kill at step {point}: {proc.stderr.read()}"
        kill(proc)
        assert (out / STATE_FILE).exists()
    done = bench("pretrain", "--config", recipe, "--out", out, "--resume", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "16/16 steps" in done.stdout

    ref_state = torch.load(tmp_path / "reference" / STATE_FILE, weights_only=False)
    got_state = torch.load(out / STATE_FILE, weights_only=False)
    ref_w = load_checkpoint(tmp_path / "reference" / CHECKPOINT_FILE).state_dict
    got_w = load_checkpoint(out / CHECKPOINT_FILE).state_dict
    assert ref_w.keys() == got_w.keys()
    assert all(torch.equal(ref_w[k], got_w[k]) for k in ref_w)
    assert all(torch.equal(a, b) for a, b in zip(_tensors(ref_state["method"]), _tensors(got_state["method"])))
    steps = [json.loads(line)["step"] for line in (out / LOG_FILE).read_text().splitlines()]
    assert steps == list(range(1, 17))  # the log holds each step once, as if never interrupted


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for k in sorted(tree):
            yield from _tensors(tree[k])
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _tensors(v)
