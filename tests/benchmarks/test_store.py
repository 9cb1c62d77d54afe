"""The results store: concurrent writers lose nothing; crashed runs never look finished; rows are append-only."""
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from benchmarks.leaderboard import build
from benchmarks.store import ResultsStore, StoreError
from tests.transfer.conftest import make_checkpoint

RUN = dict(suite="s", suite_digest="d" * 64, suite_json={"a": 1}, protocol="knn", checkpoint_digest="c" * 64,
           checkpoint_path="/x/c.pt", checkpoint_method="random", checkpoint_widths=[1.0, 0.5],
           code_version="test", device="cpu")


def _writer(db, worker, rows):
    store = ResultsStore(db)
    run_id = store.start_run(**RUN, run_id=f"run{worker}")
    for i in range(rows):
        store.add_results(run_id, [(f"w{worker}", f"m{i}", float(i))])
    store.finish_run(run_id)


def test_four_concurrent_writers_lose_no_row(tmp_path):
    db = tmp_path / "r.db"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(db, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = ResultsStore(db)
    rows = store.rows()
    assert len(rows) == 200
    assert {(r["run_id"], r["metric"]) for r in rows} == {(f"run{w}", f"m{i}") for w in range(4) for i in range(50)}
    assert {r["status"] for r in rows} == {"finished"}
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_states_and_append_only(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    run_id = store.start_run(**RUN)
    store.add_results(run_id, [("w1.0", "top1", 50.0)])
    assert store.status(run_id) == "running" and store.rows()[0]["ended_at"] is None
    store.fail_run(run_id, "boom")
    assert store.status(run_id) == "failed" and store.runs()[0]["message"] == "boom"
    with pytest.raises(StoreError, match="is failed, not running"):
        store.finish_run(run_id)
    with pytest.raises(StoreError, match="only be added to a running run"):
        store.add_results(run_id, [("w1.0", "top1", 1.0)])
    assert build(store.rows()).rows == []  # failed runs never reach the leaderboard
    with sqlite3.connect(store.path) as con, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("UPDATE run_events SET status = 'finished'")
    with sqlite3.connect(store.path) as con, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM results")


def test_not_a_database(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="junk.db"):
        ResultsStore(tmp_path / "junk.db")


def _wait_for_running(store, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = store.runs("running")
        if runs:
            return runs[0]
        time.sleep(0.2)
    raise AssertionError("no running run appeared")


@pytest.mark.slow
@pytest.mark.parametrize("sig,expected", [(signal.SIGTERM, "failed"), (signal.SIGKILL, "running")],
                         ids=["SIGTERM", "SIGKILL"])
def test_killed_run_is_never_finished(tmp_path, sig, expected):
    ckpt = make_checkpoint(tmp_path / "c.pt")
    db = tmp_path / "r.db"
    # a latency run long enough to be killed while it measures
    cmd = [sys.executable, "-m", "benchmarks", "run", "--suite", "latency", "--checkpoint", str(ckpt),
           "--db", str(db), "--out", str(tmp_path / "runs"), "params.repeats=200000", "params.warmup=0",
           "params.resolution=8", "params.batch_size=1", "--subnets", "w0.5,w1.0"]
    proc = subprocess.Popen(cmd, cwd=os.getcwd(), env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        store = ResultsStore(db) if db.exists() else None
        deadline = time.time() + 60
        while store is None and time.time() < deadline:
            time.sleep(0.2)
            store = ResultsStore(db) if db.exists() else None
        _wait_for_running(store)
    finally:
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    runs = store.runs()
    assert len(runs) == 1 and runs[0]["status"] == expected
    if expected == "failed":
        assert "SIGTERM" in runs[0]["message"]
    assert build(store.rows()).rows == []
