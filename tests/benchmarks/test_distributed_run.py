"""`bench run` under torchrun with two CPU processes (gloo): DDP probe, sharded evaluation, one writer."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.store import ResultsStore
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
    assert len(rows) == 6 and rows[("w1.0", "top1")] >= 90.0
    # the sharded evaluation counted every image once: accuracies are multiples of 1/14
    assert all(abs(rows[(s, "top1")] * 14 / 100 - round(rows[(s, "top1")] * 14 / 100)) < 1e-6 for s in ("w1.0", "w0.5"))
