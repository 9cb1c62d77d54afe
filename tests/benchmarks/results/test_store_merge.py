"""Results that survive shared filesystems: per-job stores, their merge by run id, the network-mount refusal."""
import shutil
import sqlite3

import pytest

from benchmarks.cli import main
from benchmarks.results.filesystems import mount_of, network_filesystem
from benchmarks.report import build
from benchmarks.results.merged import MergedStore, find_stores
from benchmarks.results.store import ResultsStore, StoreError, journal_is_wal

RUN = dict(suite="s", suite_digest="d" * 64, suite_json={"name": "s", "protocol": "knn", "params": {"k": 20}},
           protocol="knn", checkpoint_digest="c" * 64, checkpoint_path="/x/c.pt", checkpoint_method="random",
           checkpoint_widths=[1.0, 0.5], code_version="test", device="cpu")


def mountinfo(tmp_path, *mounts):
    """A fake /proc/self/mountinfo: (mount point, fstype, source) lines in the kernel's format (proc(5))."""
    lines = [f"{20 + i} 1 0:{i} / {point.replace(' ', chr(92) + '040')} rw,relatime shared:{i} - {fstype} {source} rw"
             for i, (point, fstype, source) in enumerate(mounts)]
    path = tmp_path / f"mountinfo-{len(list(tmp_path.glob('mountinfo-*')))}"
    path.write_text("\n".join(lines) + "\n")
    return path


def finished_run(store, subnet="w1.0", value=60.0, **kw):
    run_id = store.start_run(**{**RUN, **kw})
    store.add_results(run_id, [(subnet, "top1", value)])
    store.finish_run(run_id)
    return run_id


def test_a_shared_store_on_a_network_filesystem_is_refused_naming_the_per_job_mode(tmp_path):
    shared = tmp_path / "lustre mount"   # a mount point exists; the store's folders below it may not yet
    shared.mkdir()
    table = mountinfo(tmp_path, ("/", "ext4", "/dev/sda1"), (str(shared), "lustre", "10.0.0.1@tcp:/scratch"))
    assert mount_of(shared / "runs" / "results.db", table).fstype == "lustre"   # the nearest mount above it
    assert network_filesystem(tmp_path / "elsewhere.db", table) is None
    with pytest.raises(StoreError, match=r"network filesystem \(lustre .* at .*lustre mount\).*--db-mode job"):
        ResultsStore(shared / "runs" / "results.db", mountinfo=table)
    assert not (shared / "runs" / "results.db").exists()   # refused before anything was created
    for fstype in ("nfs4", "gpfs", "cifs", "nfs"):
        with pytest.raises(StoreError, match=f"network filesystem \\({fstype}"):
            ResultsStore(tmp_path / "x.db", mountinfo=mountinfo(tmp_path, ("/", fstype, "server:/export")))
    # the per-job mode keeps SQLite's rollback journal, which works there (one writer per store)
    job = ResultsStore(shared / "runs" / "results.db", mode="job", mountinfo=table)
    finished_run(job)
    assert not journal_is_wal(job.path) and not (shared / "runs" / "results.db-wal").exists()
    assert ResultsStore.existing(job.path, mountinfo=table).mode == "job"   # a reader keeps the file's mode
    # an existing WAL store there is refused to readers too
    local = ResultsStore(tmp_path / "local.db", mountinfo=mountinfo(tmp_path, ("/", "ext4", "/dev/sda1")))
    assert journal_is_wal(local.path)
    moved = shutil.copy(local.path, shared / "copied.db")
    with pytest.raises(StoreError, match="--db-mode job"):
        ResultsStore.existing(moved, mountinfo=table)


def test_bench_run_refuses_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("benchmarks.results.filesystems.MOUNTINFO", mountinfo(tmp_path, ("/", "nfs4", "server:/home")))
    assert main(["run", "--suite", "complexity", "--checkpoint", str(tmp_path / "none.pt"),
                 "--db", str(tmp_path / "r.db"), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: results store") and "--db-mode job" in err and err.count("\n") == 1
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "runs").exists()


def test_merged_stores_equal_one_store_and_keep_the_append_only_rules(tmp_path):
    one = ResultsStore(tmp_path / "one.db")
    a, b = ResultsStore(tmp_path / "a" / "results.db", mode="job"), ResultsStore(tmp_path / "b" / "results.db", mode="job")
    for store in (one, a):
        finished_run(store, "w1.0", 61.0, run_id="r1")
    for store in (one, b):
        finished_run(store, "w0.5", 52.0, run_id="r2")
        failed = store.start_run(**RUN, run_id="r3")
        store.fail_run(failed, "boom")
    merged = MergedStore(find_stores(tmp_path))
    assert [p.parent.name for p in merged.paths] == ["a", "b"]
    drop = ("recorded_at", "started_at", "ended_at", "pid")
    strip = lambda rows: sorted(tuple((k, v) for k, v in r.items() if k not in drop) for r in rows)
    assert strip(merged.rows()) == strip(one.rows())
    assert [(r["run_id"], r["status"]) for r in merged.runs()] == [("r1", "finished"), ("r2", "finished"),
                                                                   ("r3", "failed")]
    assert build(merged.rows()).rows[0]["s/top1"].mean == 61.0

    # a copy of a store is the same runs, events and results: nothing counts twice
    shutil.copy(a.path, tmp_path / "copy.db")
    again = MergedStore([a.path, b.path, tmp_path / "copy.db"])
    assert len(again.rows()) == 2 and len(again.runs()) == 3

    # one run id recorded differently, or ended twice, is refused naming the files
    other = ResultsStore(tmp_path / "c" / "results.db", mode="job")
    finished_run(other, "w1.0", 99.0, run_id="r1", device="cuda")
    with pytest.raises(StoreError, match=r"run r1 is recorded differently in .*a/results.db and .*c/results.db \(device"):
        MergedStore([a.path, other.path])
    twice = tmp_path / "twice.db"
    shutil.copy(b.path, twice)
    with sqlite3.connect(twice) as con:   # the same run r2 ending a second time, in the copy
        con.execute("INSERT INTO run_events (run_id, status, at, message) VALUES ('r2', 'failed', '2999', 'x')")
    with pytest.raises(StoreError, match="run r2 ended more than once"):
        MergedStore([b.path, twice])


def test_leaderboard_and_list_runs_read_many_stores(tmp_path, capsys):
    finished_run(ResultsStore(tmp_path / "runs" / "a" / "results.db", mode="job"), "w1.0", 61.0, run_id="r1")
    finished_run(ResultsStore(tmp_path / "b.db"), "w0.5", 52.0, run_id="r2")
    assert main(["leaderboard", "--runs", str(tmp_path / "runs"), "--db", str(tmp_path / "b.db"),
                 "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert "w1.0" in csv and "w0.5" in csv and "61" in csv and "52" in csv
    assert main(["list", "runs", "--db", str(tmp_path / "runs" / "a" / "results.db"),
                 "--db", str(tmp_path / "b.db")]) == 0
    listed = capsys.readouterr().out
    assert "r1" in listed and "r2" in listed
    assert main(["leaderboard", "--runs", str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err
