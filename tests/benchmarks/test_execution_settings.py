"""Settings that only decide how a run executes split no leaderboard column and stop no reuse."""
import dataclasses
import hashlib
import json

import pytest

from benchmarks.digests import EXECUTION_ONLY, comparable, config_digest, run_digest
from benchmarks.report import build
from benchmarks.runner import run_suite
from benchmarks.results.store import ResultsStore
from benchmarks.suites import load_suite
from pretrain.models.spec import SubnetSpec
from tests.transfer.conftest import make_checkpoint
from transfer.protocols.base import get_protocol


@pytest.mark.parametrize("protocol", sorted(EXECUTION_ONLY))
def test_every_execution_only_key_is_a_field_of_its_protocol(protocol):
    fields = {f"params.{f.name}" for f in dataclasses.fields(get_protocol(protocol).Params)}
    assert set(EXECUTION_ONLY[protocol]) <= fields
    # a protocol with a loader-workers setting lists it
    assert not {"params.workers", "params.num_workers"} & fields - set(EXECUTION_ONLY[protocol])


def test_workers_and_the_feature_batch_change_no_digest_and_name_no_column():
    plain = load_suite("imagenet-knn")
    tuned = load_suite("imagenet-knn", ["params.workers=0", "params.batch_size=64"])
    assert tuned.variant == {}   # the column stays `imagenet-knn/top1`, not `imagenet-knn[workers=0]/top1`
    assert tuned.config_digest() == plain.config_digest()
    specs = [SubnetSpec(1.0)]
    assert tuned.digest(specs, 0) == plain.digest(specs, 0)
    k = load_suite("imagenet-knn", ["params.k=200", "params.workers=0"])
    assert k.variant == {"params.k": 200} and k.config_digest() != plain.config_digest()
    assert "workers" not in json.dumps(comparable(tuned.to_dict()))


def test_a_finished_run_is_reused_whatever_its_workers_and_old_rows_join_the_new_column(tmp_path):
    ckpt = make_checkpoint(tmp_path / "c.pt", widths=[1.0, 0.5])
    store = ResultsStore(tmp_path / "r.db")
    limits = ["dataset.train_limit=60", "dataset.val_limit=20", "params.k=5"]
    first = run_suite(load_suite("fmnist-knn", limits), ckpt, store, out_root=tmp_path / "runs", subnets="w0.5")
    again = run_suite(load_suite("fmnist-knn", limits + ["params.batch_size=7"]), ckpt, store,
                      out_root=tmp_path / "runs", subnets="w0.5")
    assert again.reused and again.run_id == first.run_id

    # a run recorded before workers was execution-only: its stored digest covered workers=3 (the old run_digest)
    suite = load_suite("fmnist-knn", limits + ["params.workers=3"])
    resolved = {**suite.to_dict([SubnetSpec(0.5)]), "seed": 1}
    old_digest = hashlib.sha256(json.dumps(
        {**{k: resolved[k] for k in ("protocol", "dataset", "params")}, "name": resolved["name"],
         "subnets": ["w0.5"], "seed": 1}, sort_keys=True).encode()).hexdigest()
    assert old_digest != run_digest(resolved, 1)
    old = store.start_run(suite="fmnist-knn", suite_digest=old_digest, suite_json=resolved, protocol="knn",
                          checkpoint_digest=store.runs()[0]["checkpoint_digest"],
                          checkpoint_path=str(ckpt), checkpoint_method="random", checkpoint_widths=[1.0, 0.5],
                          code_version="old", device="cpu", seed=1, variant={"params.workers": 3})
    store.add_results(old, [("w0.5", "top1", 50.0)])
    store.finish_run(old)
    reused = run_suite(load_suite("fmnist-knn", limits), ckpt, store, out_root=tmp_path / "runs", subnets="w0.5",
                       seed=1)
    assert reused.reused and reused.run_id == old
    board = build(store.rows())
    top1 = [c for c in board.metric_columns if c.endswith("/top1")]
    assert len(top1) == 1 and "workers" not in top1[0] and board.rows[0][top1[0]].n == 2
    assert config_digest(resolved) == load_suite("fmnist-knn", limits).config_digest()


def test_a_param_added_later_at_its_default_keeps_earlier_runs_digests():
    from benchmarks.digests import config_digest, run_digest
    from benchmarks.suites import load_suite

    now = load_suite("fmnist-linear-fast").to_dict()
    assert now["params"]["probe"] == "switchable"
    before = {**now, "params": {k: v for k, v in now["params"].items() if k != "probe"}}   # a run recorded earlier
    assert config_digest(now) == config_digest(before) and run_digest(now, 0) == run_digest(before, 0)
    slim = load_suite("fmnist-linear-fast", ["params.probe=slimmable"]).to_dict()
    assert config_digest(slim) != config_digest(now)
