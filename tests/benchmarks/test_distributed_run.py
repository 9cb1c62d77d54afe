"""`bench run` under torchrun with two CPU processes (gloo): DDP probe, sharded evaluation, one writer."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.results.store import ResultsStore
from tests.transfer.conftest import make_checkpoint, make_image_folder

SUITE = """\
name: tiny-linear
protocol: linear
dataset: {kind: imagefolder, resolution: 16, resize: 16}
params: {epochs: 15, batch_size: 8, lr: 1.0, milestones: [12], workers: 0, rrc_scale: [0.5, 1.0]}
subnets: all
"""


@pytest.mark.slow
def test_linear_under_torchrun_two_processes(tmp_path):
    make_image_folder(tmp_path / "data", per_class=7, size=16)  # 14 val images: shards of 7 and 7
    ckpt = make_checkpoint(tmp_path / "c.pt")
    (tmp_path / "tiny.yaml").write_text(SUITE)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "benchmarks", "run",
           "--suite", str(tmp_path / "tiny.yaml"), "--checkpoint", str(ckpt), "--data-root", str(tmp_path / "data"),
           "--out", str(tmp_path / "runs"), "--db", str(tmp_path / "r.db")]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    store = ResultsStore(tmp_path / "r.db")
    (run,) = store.runs()  # rank 0 alone writes
    assert run["status"] == "finished"
    rows = {(r["subnet"], r["metric"]): r["value"] for r in store.rows()}
    assert len(rows) == 10 and rows[("w1.0", "top1")] >= 90.0   # top1/top5 (the pick), *_last, wall time
    # the sharded evaluation counted every image once: accuracies are multiples of 1/14
    assert all(abs(rows[(s, "top1")] * 14 / 100 - round(rows[(s, "top1")] * 14 / 100)) < 1e-6 for s in ("w1.0", "w0.5"))


KNN_SUITE = """\
name: tiny-knn
protocol: knn
dataset: {kind: imagefolder, resolution: 16, resize: 16}
params: {k: 5, batch_size: 4, workers: 0}
subnets: all
"""


def _torchrun(tmp_path, *bench_args, timeout=300):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "benchmarks", *bench_args]
    return subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_knn_under_torchrun_extracts_shards_and_matches_one_process(tmp_path):
    from benchmarks.cli import main

    make_image_folder(tmp_path / "data", per_class=7, size=16, classes=3)  # 21 images: padded shards of 11
    ckpt = make_checkpoint(tmp_path / "c.pt")
    (tmp_path / "knn.yaml").write_text(KNN_SUITE)
    common = ["--suite", str(tmp_path / "knn.yaml"), "--checkpoint", str(ckpt), "--data-root", str(tmp_path / "data")]
    done = _torchrun(tmp_path, "run", *common, "--out", str(tmp_path / "runs2"), "--db", str(tmp_path / "two.db"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert main(["run", *common, "--out", str(tmp_path / "runs1"), "--db", str(tmp_path / "one.db")]) == 0

    def rows(db):
        return {(r["subnet"], r["metric"]): r["value"] for r in ResultsStore(db).rows() if r["metric"] != "wall_time_s"}
    assert len(ResultsStore(tmp_path / "two.db").runs()) == 1   # rank 0 alone writes
    assert rows(tmp_path / "two.db") == rows(tmp_path / "one.db") and len(rows(tmp_path / "one.db")) == 4
    caches = sorted(p.name for p in (tmp_path / "runs2" / "cache").rglob("*") if p.is_file())
    assert caches == ["w0.5-train.pt", "w0.5-val.pt", "w1.0-train.pt", "w1.0-val.pt"]


@pytest.mark.slow
def test_detectron2_suite_under_torchrun_is_refused_before_any_work(tmp_path):
    make_image_folder(tmp_path / "data", per_class=1, size=16)
    ckpt = make_checkpoint(tmp_path / "c.pt")
    done = _torchrun(tmp_path, "run", "--suite", "demo-det", "--checkpoint", str(ckpt), "--data-root",
                     str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "--db", str(tmp_path / "r.db"),
                     timeout=120)
    assert done.returncode != 0
    assert done.stderr.count("bench: error: suite demo-det: protocol detectron2 cannot run under torchrun "
                             "(WORLD_SIZE=2): Detectron2's launch spawns its own processes (params.num_gpus") == 2
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "runs").exists()
