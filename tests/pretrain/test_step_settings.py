"""The GPU step settings that depend on the method: DDP's unused-parameter search and the data-time log."""
import json
import logging

import pytest
import torch

from pretrain.methods import StepContext, build_method
from pretrain.recipe import parse_recipe
from pretrain.trainer import LOG_FILE, build_encoder, train
from tests.pretrain.test_trainer import tiny_recipe_dict

CASES = [("slimclr-mocov2", {}), ("slimclr-mocov3", {}), ("dspnet-byol", {}),
         ("dspnet-byol", {"sample": "desired", "desired": ["w0.5"]}),   # an individual baseline's networks
         ("dspnet-byol", {"sample": "sandwich", "num_random": 0})]


@pytest.mark.parametrize("name, method", CASES)
@pytest.mark.parametrize("slim_active", [False, True])
def test_declared_unused_parameters_are_the_ones_a_step_leaves_without_gradient(name, method, slim_active):
    data = tiny_recipe_dict(name)
    data["method"].update(method)
    recipe = parse_recipe(data, "tiny")
    torch.manual_seed(0)
    m = build_method(recipe, build_encoder(recipe)).train()
    ctx = StepContext(3, 8, 0.75, slim_active)
    declared = m.leaves_parameters_unused(ctx)
    views = torch.randn(2, 4, 3, 8, 8)
    loss, _ = m(views[0], views[1], ctx)
    loss.backward()
    unused = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert declared == bool(unused), unused[:3]


class ScriptedClock:
    """The trainer's clock, advanced only by the test: timing assertions independent of the machine's load."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def script_timing(monkeypatch, per_image: float, per_step: float) -> None:
    """Each image read costs ``per_image`` seconds and each training step ``per_step``, on a scripted clock."""
    from pretrain import trainer
    from pretrain.data import loader

    clock = ScriptedClock()
    monkeypatch.setattr(trainer, "clock", clock)
    read, step = loader.TwoViewDataset.__getitem__, trainer.Trainer._step

    def timed_read(self, key):
        clock.now += per_image
        return read(self, key)

    def timed_step(self, *args):
        clock.now += per_step
        return step(self, *args)
    monkeypatch.setattr(loader.TwoViewDataset, "__getitem__", timed_read)
    monkeypatch.setattr(trainer.Trainer, "_step", timed_step)


def test_log_has_data_and_compute_time_and_a_data_bound_run_is_named(tmp_path, monkeypatch, caplog):
    script_timing(monkeypatch, per_image=0.25, per_step=0.1)   # a loader far slower than the model
    with caplog.at_level(logging.WARNING, logger="pretrain.trainer"):
        train(parse_recipe(tiny_recipe_dict(max_steps=4), "tiny"), tmp_path, progress=False)
    lines = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert len(lines) == 4
    for line in lines:   # 4 images of 0.25 s a step, then 0.1 s of compute
        assert line["data_time_s"] == pytest.approx(1.0) and line["compute_time_s"] == pytest.approx(0.1)
        assert line["data_share"] == pytest.approx(1.0 / 1.1, abs=1e-4)
    warned = [r.getMessage() for r in caplog.records if "wait for data" in r.getMessage()]
    assert len(warned) == 1 and "raise data.workers (now 0 per rank" in warned[0]


def test_a_model_bound_run_is_not_warned(tmp_path, monkeypatch, caplog):
    script_timing(monkeypatch, per_image=0.01, per_step=1.0)
    with caplog.at_level(logging.WARNING, logger="pretrain.trainer"):
        train(parse_recipe(tiny_recipe_dict(max_steps=4), "tiny"), tmp_path, progress=False)
    lines = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [line["data_share"] for line in lines] == pytest.approx([0.04 / 1.04] * 4, abs=1e-4)
    assert not [r for r in caplog.records if "wait for data" in r.getMessage()]
