"""The results store: concurrent writers lose nothing; crashed runs never look finished; rows are append-only."""
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from benchmarks.report import build
from benchmarks.results.store import SCHEMA_VERSION, ResultsStore, StoreError
from tests.transfer.conftest import make_checkpoint

RUN = dict(suite="s", suite_digest="d" * 64, suite_json={"a": 1}, protocol="knn", checkpoint_digest="c" * 64,
           checkpoint_path="/x/c.pt", checkpoint_method="random", checkpoint_widths=[1.0, 0.5],
           code_version="test", device="cpu")


# The schema of the first release (store.py at b8e46df), verbatim: databases written by it must stay readable.
FIRST_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, suite TEXT NOT NULL, suite_digest TEXT NOT NULL, suite_json TEXT NOT NULL,
    protocol TEXT NOT NULL, checkpoint_digest TEXT NOT NULL, checkpoint_path TEXT NOT NULL,
    checkpoint_method TEXT NOT NULL, checkpoint_widths TEXT NOT NULL, code_version TEXT NOT NULL,
    host TEXT NOT NULL, pid INTEGER NOT NULL, device TEXT NOT NULL, started_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(run_id),
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')), at TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '', info_json TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(run_id),
    subnet TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL, recorded_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS run_events_run ON run_events(run_id, id);
CREATE INDEX IF NOT EXISTS results_run ON results(run_id);
CREATE INDEX IF NOT EXISTS runs_lookup ON runs(checkpoint_digest, suite_digest);
CREATE VIEW IF NOT EXISTS run_status AS
    SELECT r.*, e.status AS status, e.message AS message, e.info_json AS info_json,
           CASE WHEN e.status = 'running' THEN NULL ELSE e.at END AS ended_at
    FROM runs r JOIN run_events e ON e.id = (SELECT MAX(id) FROM run_events WHERE run_id = r.run_id);
""" + "".join(
    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, 'the results store is append-only'); END;\n"
    for table in ("runs", "run_events", "results") for op in ("UPDATE", "DELETE"))


def first_schema_db(path):
    """A results.db as the first release wrote it: one finished knn run (top-1 61.5 at w1.0)."""
    suite = {"name": "knn", "description": "", "protocol": "knn", "dataset": {}, "params": {"k": 20},
             "subnets": ["w1.0"]}
    with sqlite3.connect(path) as con:
        con.executescript(FIRST_SCHEMA)
        con.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    ("old", "knn", "e" * 64, json.dumps(suite), "knn", "c" * 64, "/x/c.pt", "random", "[1.0, 0.5]",
                     "0.1", "h", 1, "cpu", "2026-01-01T00:00:00"))
        con.execute("INSERT INTO run_events (run_id, status, at) VALUES ('old', 'running', '2026-01-01T00:00:00')")
        con.execute("INSERT INTO results (run_id, subnet, metric, value, recorded_at) "
                    "VALUES ('old', 'w1.0', 'top1', 61.5, '2026-01-01T00:00:01')")
        con.execute("INSERT INTO run_events (run_id, status, at) VALUES ('old', 'finished', '2026-01-01T00:00:02')")
    con.close()
    return path


def test_a_first_schema_database_is_migrated_once_and_keeps_its_rows(tmp_path):
    db = first_schema_db(tmp_path / "old.db")
    store = ResultsStore(db)
    (old,) = store.rows()
    assert (old["run_id"], old["value"], old["seed"], old["variant_json"]) == ("old", 61.5, 0, "{}")
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = [r[1] for r in con.execute("PRAGMA table_info(runs)")]
        assert columns[-3:] == ["seed", "variant_json", "checkpoint_meta_json"]
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):  # the triggers survived
            con.execute("UPDATE runs SET seed = 1")
    run_id = store.start_run(**RUN, seed=2, variant={"params.k": 200})
    store.add_results(run_id, [("w1.0", "top1", 64.0)])
    store.finish_run(run_id)
    ResultsStore(db)  # opening again migrates nothing more
    rows = {r["run_id"]: r for r in ResultsStore(db).rows()}
    assert (rows["old"]["seed"], rows[run_id]["seed"], json.loads(rows[run_id]["variant_json"])) == \
        (0, 2, {"params.k": 200})
    assert {c: r[c].mean for r in build(rows.values()).rows for c in r if "/" in c} == \
        {"knn/top1": 61.5, "s[k=200]/top1": 64.0}


def _open(db):
    ResultsStore(db)


def test_processes_opening_an_old_database_together_migrate_it_once(tmp_path):
    db = first_schema_db(tmp_path / "old.db")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_open, args=(db,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    assert [r["seed"] for r in ResultsStore(db).rows()] == [0]


def test_a_newer_schema_is_refused_with_its_version(tmp_path):
    db = tmp_path / "new.db"
    with sqlite3.connect(db) as con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError, match=rf"new\.db: schema version {SCHEMA_VERSION + 1} was written by a newer"):
        ResultsStore(db)


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
