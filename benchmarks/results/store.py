"""The results store: append-only SQLite (WAL) shared by every `bench run`.

Three tables, rows only ever inserted (triggers refuse UPDATE and DELETE):

- ``runs``: one row per run: suite, suite digest (of the resolved suite and the seed) and resolved
  suite, checkpoint digest (sha256), path, method and widths, protocol, code version, host, pid,
  device, start time, seed, and the overrides that differ from the suite file (``variant_json``).
- ``run_events``: status changes ``running`` -> ``finished`` | ``failed``, with time and message;
  a run's status is its latest event. A process killed without a chance to write ``failed`` stays
  ``running``; nothing but a completed protocol ever writes ``finished``.
- ``results``: (run, sub-network, metric, value) as the protocol yields them.

``rows()`` joins them into the flat rows the leaderboard is a pure function of. Several processes
may write at once: each write is one short ``BEGIN IMMEDIATE`` transaction, retried while the
database is busy.

Two journal modes (``mode``): ``shared`` (the default, one machine) keeps the file in WAL mode, so
readers never block the writer; WAL needs every process on one host (sqlite.org/wal.html), so a
shared store on a network filesystem (NFS, Lustre, GPFS, CIFS, ...) is refused before it is opened.
``job`` is a store of one job's own, inside its run folder (what ``bench sweep`` gives every cell):
SQLite's rollback journal, safe on a network filesystem while one process writes it;
``benchmarks.results.merged`` reads many of them as one.

A database written before a column existed gains it once, on first open (``ALTER TABLE ... ADD
COLUMN`` with its default; no row is rewritten), and ``PRAGMA user_version`` records the schema.
Runs recorded before ``seed`` existed read as seed 0, the seed ``bench run`` used by default.
"""
from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from pretrain.errors import SlimBenchError

from benchmarks.results import filesystems
from benchmarks.digests import run_digest

DEFAULT_DB = Path("runs") / "results.db"
DB_MODES = ("shared", "job")   # shared: WAL, one host; job: one job's own store, rollback journal
STATUSES = ("running", "finished", "failed")
SCHEMA_VERSION = 3  # 1: the first release (user_version 0); 2: runs.seed, runs.variant_json;
                    # 3: runs.checkpoint_meta_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, suite TEXT NOT NULL, suite_digest TEXT NOT NULL, suite_json TEXT NOT NULL,
    protocol TEXT NOT NULL, checkpoint_digest TEXT NOT NULL, checkpoint_path TEXT NOT NULL,
    checkpoint_method TEXT NOT NULL, checkpoint_widths TEXT NOT NULL, code_version TEXT NOT NULL,
    host TEXT NOT NULL, pid INTEGER NOT NULL, device TEXT NOT NULL, started_at TEXT NOT NULL,
    seed INTEGER NOT NULL DEFAULT 0, variant_json TEXT NOT NULL DEFAULT '{}',
    checkpoint_meta_json TEXT NOT NULL DEFAULT '{}');
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
"""
_TRIGGERS = "".join(
    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, 'the results store is append-only'); END;\n"
    for table in ("runs", "run_events", "results") for op in ("UPDATE", "DELETE"))
# Columns added to `runs` after schema 1, in order, as `_SCHEMA` declares them: an older file gains them.
_ADDED_RUN_COLUMNS = (("seed", "INTEGER NOT NULL DEFAULT 0"), ("variant_json", "TEXT NOT NULL DEFAULT '{}'"),
                      ("checkpoint_meta_json", "TEXT NOT NULL DEFAULT '{}'"))


class StoreError(SlimBenchError):
    """The results database cannot be opened or written."""


def now() -> str:
    """UTC time in ISO 8601 with microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def default_db_path() -> Path:
    """``$SLIMBENCH_DB``, else ``./runs/results.db``."""
    return Path(os.environ.get("SLIMBENCH_DB") or DEFAULT_DB)


def default_db_mode() -> str:
    """``$SLIMBENCH_DB_MODE``, else ``shared``."""
    mode = os.environ.get("SLIMBENCH_DB_MODE") or "shared"
    if mode not in DB_MODES:
        raise StoreError(f"$SLIMBENCH_DB_MODE={mode!r}: expected one of {', '.join(DB_MODES)}")
    return mode


def refuse_network_wal(path: Path, mountinfo: "str | os.PathLike | None" = None) -> None:
    """Refuse a WAL (shared) store on a network filesystem, naming the per-job mode that works there."""
    mount = filesystems.network_filesystem(path, mountinfo)
    if mount is not None:
        raise StoreError(
            f"results store {path}: it is on a network filesystem ({mount.fstype} {mount.source} at "
            f"{mount.mount_point}), where SQLite's WAL mode breaks (every process must be on one host, "
            f"sqlite.org/wal.html). Give each job a store of its own: `bench run --db-mode job --db "
            f"<its run folder>/results.db` (what `bench sweep` does), read them together with `bench leaderboard "
            f"--runs DIR`; or keep the shared store on a local disk (--db, $SLIMBENCH_DB)")


def _recomputed_digest(row: Dict[str, Any]) -> Optional[str]:
    try:
        return run_digest(json.loads(row["suite_json"]), int(row.get("seed") or 0))
    except (ValueError, TypeError, AttributeError):
        return None


def journal_is_wal(path: "str | os.PathLike") -> bool:
    """Whether an existing database file is in WAL mode (its header's read/write versions are 2)."""
    with open(path, "rb") as f:
        header = f.read(20)
    return len(header) == 20 and header[:16] == b"SQLite format 3\x00" and header[18] == 2


class ResultsStore:
    """An append-only results database; every method opens its own short-lived connection."""

    def __init__(self, path: "str | os.PathLike | None" = None, retries: int = 50,
                 timeout: Optional[float] = None, mode: Optional[str] = None,
                 mountinfo: "str | os.PathLike | None" = None):
        self.path = Path(path) if path is not None else default_db_path()
        self.mode = mode or default_db_mode()
        if self.mode not in DB_MODES:
            raise StoreError(f"results store {self.path}: mode {self.mode!r}: expected one of {', '.join(DB_MODES)}")
        if self.mode == "shared":
            refuse_network_wal(self.path, mountinfo)
        self.retries = retries
        # how long to wait for another writer before giving up with a clear error ($SLIMBENCH_DB_TIMEOUT)
        self.timeout = float(timeout if timeout is not None else os.environ.get("SLIMBENCH_DB_TIMEOUT", 120))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"results store {self.path}: cannot create its folder: {e}") from None
        self._retry(self._init_schema)

    @classmethod
    def existing(cls, path: "str | os.PathLike", mountinfo: "str | os.PathLike | None" = None
                 ) -> "ResultsStore":
        """Open an existing store in the journal mode it was written in (a reader never switches it)."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"results store {path}: no such file; expected the database `bench run` wrote "
                             f"(--db, $SLIMBENCH_DB, default ./runs/results.db)")
        try:
            wal = journal_is_wal(path)
        except OSError as e:
            raise StoreError(f"results store {path}: cannot be read: {e}") from None
        return cls(path, mode="shared" if wal else "job", mountinfo=mountinfo)

    # -- connection plumbing --------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=min(30.0, self.timeout), isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout = {int(min(30.0, self.timeout) * 1000)}")
        return con

    def _retry(self, fn, *args):
        """Run ``fn(connection, *args)``, retrying with jittered back-off while SQLite reports busy/locked."""
        delay = 0.01
        deadline = time.monotonic() + self.timeout
        for attempt in range(self.retries):
            try:
                con = self._connect()
                try:
                    return fn(con, *args)
                finally:
                    con.close()
            except sqlite3.OperationalError as e:
                text = str(e).lower()
                if "locked" not in text and "busy" not in text:
                    raise StoreError(f"results store {self.path}: {e}") from None
                if attempt == self.retries - 1 or time.monotonic() >= deadline:
                    raise StoreError(f"results store {self.path}: {e}: waited up to "
                                     f"{self.timeout:g} s for another writer ($SLIMBENCH_DB_TIMEOUT); nothing was written") from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)
            except sqlite3.DatabaseError as e:
                raise StoreError(f"results store {self.path}: not a SlimBench results database ({e})") from None

    @staticmethod
    def _write(con: sqlite3.Connection, statements: Sequence[tuple]) -> None:
        con.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                con.execute(sql, params)
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def _init_schema(self, con: sqlite3.Connection) -> None:
        # WAL: readers never block the writer (persists in the file); a job's own store keeps the
        # rollback journal, which needs no shared memory and so works on a network filesystem
        con.execute(f"PRAGMA journal_mode = {'WAL' if self.mode == 'shared' else 'DELETE'}")
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"results store {self.path}: schema version {version} was written by a newer SlimBench; "
                             f"this one reads versions up to {SCHEMA_VERSION}")
        con.executescript("BEGIN IMMEDIATE;\n" + _SCHEMA + _TRIGGERS + "COMMIT;")
        if version < SCHEMA_VERSION:
            self._migrate(con)

    @staticmethod
    def _migrate(con: sqlite3.Connection) -> None:
        """Add the columns an older ``runs`` table lacks and record the schema version, in one transaction."""
        con.execute("BEGIN IMMEDIATE")
        try:  # checked under the write lock: another process may have just migrated the same file
            have = {row["name"] for row in con.execute("PRAGMA table_info(runs)")}
            for name, decl in _ADDED_RUN_COLUMNS:
                if name not in have:
                    con.execute(f"ALTER TABLE runs ADD COLUMN {name} {decl}")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    # -- writing --------------------------------------------------------------------------------
    def start_run(self, *, suite: str, suite_digest: str, suite_json: Dict[str, Any], protocol: str,
                  checkpoint_digest: str, checkpoint_path: str, checkpoint_method: str,
                  checkpoint_widths: Sequence[float], code_version: str, device: str, seed: int = 0,
                  variant: Optional[Dict[str, Any]] = None, checkpoint_meta: Optional[Dict[str, Any]] = None,
                  run_id: Optional[str] = None) -> str:
        """Insert a run and its ``running`` event; returns the run id.

        ``checkpoint_meta``: what the checkpoint says of its pretraining (recipe digest, individual
        baseline record, training cost), so pairing baselines needs only the rows.
        """
        run_id = run_id or f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
        at = now()
        row = dict(run_id=run_id, suite=suite, suite_digest=suite_digest,
                   suite_json=json.dumps(suite_json, sort_keys=True), protocol=protocol,
                   checkpoint_digest=checkpoint_digest, checkpoint_path=str(checkpoint_path),
                   checkpoint_method=checkpoint_method, checkpoint_widths=json.dumps(list(checkpoint_widths)),
                   code_version=code_version, host=socket.gethostname(), pid=os.getpid(), device=device,
                   started_at=at, seed=int(seed), variant_json=json.dumps(variant or {}, sort_keys=True),
                   checkpoint_meta_json=json.dumps(checkpoint_meta or {}, sort_keys=True))
        self._retry(self._write, [
            (f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())),
            ("INSERT INTO run_events (run_id, status, at) VALUES (?, 'running', ?)", (run_id, at)),
        ])
        return run_id

    def add_results(self, run_id: str, results: Iterable[tuple]) -> None:
        """Append (subnet, metric, value) rows to a running run."""
        rows = [(run_id, str(s), str(m), float(v), now()) for s, m, v in results]
        self._require_running(run_id)
        self._retry(self._write, [("INSERT INTO results (run_id, subnet, metric, value, recorded_at) "
                                   "VALUES (?,?,?,?,?)", r) for r in rows])

    def finish_run(self, run_id: str, info: Optional[Dict[str, Any]] = None) -> None:
        """Mark a running run finished (its results are complete)."""
        self._end(run_id, "finished", "", info)

    def fail_run(self, run_id: str, message: str, info: Optional[Dict[str, Any]] = None) -> None:
        """Mark a running run failed, with the error message."""
        self._end(run_id, "failed", message, info)

    def _end(self, run_id: str, status: str, message: str, info: Optional[Dict[str, Any]]) -> None:
        def write(con):
            con.execute("BEGIN IMMEDIATE")
            try:  # check and append in one transaction, so a run ends exactly once
                row = con.execute("SELECT status FROM run_status WHERE run_id = ?", (run_id,)).fetchone()
                if row is None or row["status"] != "running":
                    raise StoreError(f"results store {self.path}: run {run_id} is "
                                     f"{row['status'] if row else 'unknown'}, not running; cannot mark it {status}")
                con.execute("INSERT INTO run_events (run_id, status, at, message, info_json) VALUES (?,?,?,?,?)",
                            (run_id, status, now(), message, json.dumps(info or {}, sort_keys=True, default=str)))
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        self._retry(write)

    def _require_running(self, run_id: str) -> None:
        status = self.status(run_id)
        if status != "running":
            raise StoreError(f"results store {self.path}: run {run_id} is {status or 'unknown'}; "
                             f"results can only be added to a running run")

    # -- reading --------------------------------------------------------------------------------
    def _query(self, sql: str, params: tuple = ()) -> List[Dict[str, Any]]:
        return self._retry(lambda con: [dict(r) for r in con.execute(sql, params).fetchall()])

    def status(self, run_id: str) -> Optional[str]:
        rows = self._query("SELECT status FROM run_status WHERE run_id = ?", (run_id,))
        return rows[0]["status"] if rows else None

    def runs(self, status: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every run with its current status, oldest first."""
        if status is None:
            return self._query("SELECT * FROM run_status ORDER BY started_at")
        return self._query("SELECT * FROM run_status WHERE status = ? ORDER BY started_at", (status,))

    def find_finished(self, checkpoint_digest: str, suite_digest: str) -> Optional[Dict[str, Any]]:
        """The latest finished run of this suite on this checkpoint, if any.

        A run matches by its stored run digest or by the run digest of its stored resolved suite as
        ``digests.run_digest`` computes it today, so a run recorded before a setting was declared
        execution-only (``params.workers``) is still the same work.
        """
        rows = self._query("SELECT * FROM run_status WHERE checkpoint_digest = ? AND status = 'finished' "
                           "ORDER BY ended_at DESC", (checkpoint_digest,))
        for row in rows:
            if row["suite_digest"] == suite_digest or _recomputed_digest(row) == suite_digest:
                return row
        return None

    def tables(self) -> Dict[str, List[Dict[str, Any]]]:
        """The three tables as stored, read in one transaction (``benchmarks.results.merged`` merges them)."""
        def read(con):
            con.execute("BEGIN")
            try:
                return {table: [dict(r) for r in con.execute(f"SELECT * FROM {table} ORDER BY rowid")]
                        for table in ("runs", "run_events", "results")}
            finally:
                con.execute("COMMIT")
        return self._retry(read)

    def rows(self, run_id: Optional[str] = None) -> List[Dict[str, Any]]:
        """Flat result rows: run, suite (resolved, variant), digests, seed, checkpoint, sub-network, metric, value,
        versions, device, status, times, run info."""
        sql = ("SELECT s.run_id, s.suite, s.suite_digest, s.suite_json, s.variant_json, s.seed, s.protocol, "
               "s.checkpoint_digest, s.checkpoint_path, s.checkpoint_method, s.checkpoint_widths, "
               "s.checkpoint_meta_json, r.subnet, "
               "r.metric, r.value, s.code_version, s.host, s.device, s.info_json, s.started_at, s.ended_at, "
               "s.status FROM results r JOIN run_status s USING (run_id)")
        if run_id is not None:
            return self._query(sql + " WHERE s.run_id = ? ORDER BY r.id", (run_id,))
        return self._query(sql + " ORDER BY r.id")
