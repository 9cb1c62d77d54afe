"""A pretraining one can watch: TensorBoard event files, the online kNN monitor, kept checkpoints."""
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pretrain.checkpoints.format import load_checkpoint
from pretrain.errors import ConfigError
from pretrain.checkpoints.keep import epoch_due
from pretrain.recipe import parse_recipe
from pretrain.tensorboard_log import tag
from pretrain.trainer import CHECKPOINT_FILE, LOG_FILE, train
from tests.pretrain.test_trainer import assert_same, final_state, tiny_recipe_dict

MONITOR = {"every_epochs": 1, "train_limit": 40, "val_limit": 20, "k": 5}


def recipe(**run):
    return parse_recipe(tiny_recipe_dict("slimclr-mocov2", log_every=3, **run), "tiny")   # 4 steps per epoch


def scalars(folder):
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_tags_group_each_term_of_every_subnetwork():
    assert tag("w0.5/infonce") == "infonce/w0.5" and tag("w1.0-d1.1.1.1/byol") == "byol/w1.0-d1.1.1.1"
    assert tag("lr") == "train/lr" and tag("data_time_s") == "train/data_time_s"
    assert epoch_due(8, 4, 2) == 2 and epoch_due(4, 4, 2) is None and epoch_due(6, 4, 1) is None
    assert epoch_due(4, 4, None) is None


@pytest.mark.slow
def test_event_files_monitor_and_kept_checkpoints_leave_the_training_unchanged(tmp_path):
    plain = train(recipe(), tmp_path / "plain", progress=False)
    watched = train(recipe(monitor=MONITOR, keep_every=1), tmp_path / "watched", progress=False)
    assert plain.steps == watched.steps == 8
    # the monitor reads in eval mode with its own generator: the same weights, optimizer and queue
    for a, b in zip(final_state(tmp_path / "plain"), final_state(tmp_path / "watched")):
        assert_same(a, b)

    lines = [json.loads(line) for line in (tmp_path / "watched" / LOG_FILE).read_text().splitlines()]
    by_step = {line["step"]: line for line in lines}
    assert sorted(by_step) == [3, 4, 6, 8]   # every 3 steps, the end, and each epoch end (4, 8) for the monitor
    for step in (4, 8):
        assert {"w1.0/knn_top1", "w0.5/knn_top1"} <= set(by_step[step])
        assert all(0 <= by_step[step][k] <= 100 for k in ("w1.0/knn_top1", "w0.5/knn_top1"))
    assert "w1.0/knn_top1" not in by_step[3]

    events = scalars(tmp_path / "watched")
    for key in ("train/lr", "train/grad_norm", "train/images_per_s", "train/data_time_s", "train/loss",
                "infonce/w1.0", "infonce/w0.5", "kd/w0.5", "knn_top1/w1.0", "knn_top1/w0.5"):
        assert key in events, sorted(events)
    # every numeric key of every log line, at its step, with its value (float32 in the event file)
    for line in lines:
        for key, value in line.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                assert (line["step"], pytest.approx(value, rel=1e-5, abs=1e-6)) in events[tag(key)]

    kept = sorted(p.name for p in (tmp_path / "watched").glob("checkpoint_epoch*.pt"))
    assert kept == ["checkpoint_epoch0001.pt", "checkpoint_epoch0002.pt"]
    first = load_checkpoint(tmp_path / "watched" / kept[0])
    assert first.extra["steps"] == 4   # the checkpoint as it was at the end of epoch 1
    last = load_checkpoint(tmp_path / "watched" / CHECKPOINT_FILE).state_dict
    assert all(torch.equal(last[k], v) for k, v in load_checkpoint(tmp_path / "watched" / kept[1]).state_dict.items())


@pytest.mark.slow
def test_a_resumed_run_purges_the_events_past_its_step(tmp_path):
    out = tmp_path / "run"
    train(recipe(max_steps=5, checkpoint_every=2), out, progress=False)   # logged at 3 and 5, saved at 4
    assert [s for s, _ in scalars(out)["train/loss"]] == [3, 5]
    train(recipe(checkpoint_every=2), out, resume=True, progress=False)   # resumes at step 4
    assert [s for s, _ in scalars(out)["train/loss"]] == [3, 6, 8]   # step 5 of the stopped segment is gone


def test_monitor_keys_are_checked_before_training(tmp_path):
    with pytest.raises(ConfigError, match="run.monitor.*imagefolder monitor needs root"):
        recipe(monitor={"dataset": "imagefolder"})
    with pytest.raises(ConfigError, match="keep_every"):
        recipe(keep_every=0)
