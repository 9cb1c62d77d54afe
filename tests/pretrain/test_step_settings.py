"""The GPU step settings that depend on the method: DDP's unused-parameter search and the data-time log."""
import json
import logging
import time

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


def test_log_has_data_and_compute_time_and_a_data_bound_run_is_named(tmp_path, monkeypatch, caplog):
    from pretrain import loader

    slow = loader.TwoViewDataset.__getitem__

    def slow_getitem(self, key):   # a loader far slower than the model
        time.sleep(0.25)
        return slow(self, key)
    monkeypatch.setattr(loader.TwoViewDataset, "__getitem__", slow_getitem)
    with caplog.at_level(logging.WARNING, logger="pretrain.trainer"):
        train(parse_recipe(tiny_recipe_dict(max_steps=4), "tiny"), tmp_path, progress=False)
    lines = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    for line in lines:
        assert line["data_time_s"] >= 4 * 0.25 * 0.9   # 4 images a step, each waited for
        assert line["compute_time_s"] > 0 and 0 < line["data_share"] < 1
    warned = [r.getMessage() for r in caplog.records if "wait for data" in r.getMessage()]
    assert len(warned) == 1 and "raise data.workers (now 0 per rank" in warned[0]


def test_a_model_bound_run_is_not_warned(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pretrain.trainer"):
        train(parse_recipe(tiny_recipe_dict(max_steps=4), "tiny"), tmp_path, progress=False)
    lines = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert all(line["data_share"] < 0.5 for line in lines[1:])
    assert not [r for r in caplog.records if "wait for data" in r.getMessage()]
