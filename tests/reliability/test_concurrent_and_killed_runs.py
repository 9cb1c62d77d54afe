"""`bench run` under stress: eight writers on one database, runs killed mid-way, then rerun."""
import signal
import sqlite3

import pytest

from benchmarks.report import build
from benchmarks.results.store import ResultsStore
from tests.reliability.conftest import bench, db_statuses, kill, start_bench, wait_until


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "r18.pt"
    done = bench("init", "--arch", "slim_resnet18", "--widths", "1.0,0.75,0.5,0.25", "--stem", "small", "--out", path)
    assert done.returncode == 0, done.stderr
    return path


@pytest.mark.slow
def test_eight_concurrent_runs_lose_no_row(tmp_path, ckpt):
    db = tmp_path / "results.db"
    procs = [start_bench("run", "--suite", "complexity", "--checkpoint", ckpt, "--db", db, "--out", tmp_path / "runs",
                         "--force", "params.resolution=16") for _ in range(8)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    store = ResultsStore(db)
    runs = store.runs()
    assert len(runs) == 8 and {r["status"] for r in runs} == {"finished"}
    rows = store.rows()
    # every run wrote params and MACs for each of the four widths
    assert len(rows) == 8 * 4 * 2
    assert {(r["run_id"], r["subnet"], r["metric"]) for r in rows} == {
        (run["run_id"], f"w{w}", m) for run in runs for w in (1.0, 0.75, 0.5, 0.25) for m in ("params", "macs")}


@pytest.mark.slow
@pytest.mark.parametrize("sig,status", [(signal.SIGKILL, "running"), (signal.SIGTERM, "failed")])
def test_killed_run_is_never_finished_and_rerun_completes(tmp_path, ckpt, sig, status):
    db = tmp_path / "results.db"
    args = ["run", "--suite", "latency", "--checkpoint", ckpt, "--db", db, "--out", tmp_path / "runs",
            "params.resolution=16", "params.batch_size=4", "params.warmup=1"]
    proc = start_bench(*args, "params.repeats=100000")  # long enough to be killed mid-way
    assert wait_until(lambda: "running" in db_statuses(db), proc, timeout=300)
    kill(proc, sig)
    assert db_statuses(db) == [status]
    board = build(ResultsStore(db).rows())
    assert board.rows == []  # nothing of a dead run reaches the leaderboard

    done = bench(*args, "params.repeats=3")
    assert done.returncode == 0, done.stderr
    statuses = sorted(db_statuses(db))
    assert statuses == sorted([status, "finished"])
    board = build(ResultsStore(db).rows())
    assert [r["subnet"] for r in board.rows] == ["w1.0", "w0.75", "w0.5", "w0.25"]
    # one column per metric, named by the suite, its overrides and the device
    assert board.metric_columns == [f"latency[batch_size=4,repeats=3,resolution=16,warmup=1]@cpu/{m}"
                                    for m in ("latency_ms", "throughput_img_s")]
    assert all(r[c].mean > 0 for r in board.rows for c in board.metric_columns)
    # one cell per (checkpoint, sub-network, metric): the finished run's
    con = sqlite3.connect(db)
    per_cell = con.execute("SELECT COUNT(*) FROM results r JOIN run_status s USING (run_id) "
                           "WHERE s.status = 'finished' GROUP BY r.subnet, r.metric").fetchall()
    assert {n for (n,) in per_cell} == {1}
