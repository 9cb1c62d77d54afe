"""Many results stores read as one: the per-job stores of a sweep (or of any jobs), merged by run id.

Each job records into a store of its own (``ResultsStore(mode="job")`` in its run folder), so no
SQLite file is ever shared across hosts. Readers (`bench leaderboard`, `bench list runs`) take any
number of them (``--db`` repeated, ``--runs DIR`` for every ``results.db`` below a folder) and see
the union, under the store's own rules:

- a run id names one run: the same run found in two stores (a copied file) must be recorded
  identically there, else the merge refuses, naming both files;
- events and results are unions (a row found twice, as in a copy, counts once); a run's status is
  its latest event, and a run that ended differently in two stores (finished in one, failed in the
  other) is refused: a run ends exactly once;
- nothing is written to any store.

``MergedStore.runs()`` and ``.rows()`` return what ``ResultsStore.runs()`` and ``.rows()`` return, so
the leaderboard stays a pure function of the rows.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from benchmarks.results.store import ResultsStore, StoreError

STORE_FILE = "results.db"
_ROW_KEYS = ("run_id", "suite", "suite_digest", "suite_json", "variant_json", "seed", "protocol",
             "checkpoint_digest", "checkpoint_path", "checkpoint_method", "checkpoint_widths",
             "checkpoint_meta_json", "subnet", "metric", "value", "code_version", "host", "device", "info_json",
             "started_at", "ended_at", "status")
_EVENT_KEY = ("status", "at", "message", "info_json")
_RESULT_KEY = ("subnet", "metric", "value", "recorded_at")


def find_stores(folder: "str | os.PathLike") -> List[Path]:
    """Every ``results.db`` below ``folder`` (a sweep's per-job stores), in path order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StoreError(f"--runs {folder}: no such folder; expected a folder holding per-job stores "
                         f"({STORE_FILE} files, as `bench sweep --out` writes them)")
    found = sorted(p for p in folder.rglob(STORE_FILE) if p.is_file())
    if not found:
        raise StoreError(f"--runs {folder}: no {STORE_FILE} below it; expected the per-job stores of a sweep "
                         f"or of `bench run --db-mode job` runs")
    return found


class MergedStore:
    """The union of several results stores, read-only, with ``runs()`` and ``rows()`` as ``ResultsStore``'s."""

    def __init__(self, paths: Iterable["str | os.PathLike"]):
        self.paths = list(dict.fromkeys(Path(p).resolve() for p in paths))
        self._runs: Dict[str, Dict[str, Any]] = {}
        self._origin: Dict[str, Path] = {}
        self._events: Dict[str, Dict[Tuple, Dict[str, Any]]] = {}
        self._results: Dict[str, Dict[Tuple, Dict[str, Any]]] = {}
        for path in self.paths:
            self._add(path, ResultsStore.existing(path).tables())
        self._status = {run_id: self._latest(run_id) for run_id in self._runs}

    def _add(self, path: Path, tables: Dict[str, List[Dict[str, Any]]]) -> None:
        for run in tables["runs"]:
            run_id = run["run_id"]
            known = self._runs.get(run_id)
            if known is None:
                self._runs[run_id], self._origin[run_id] = run, path
            elif known != run:
                differ = sorted(k for k in set(known) | set(run) if known.get(k) != run.get(k))
                raise StoreError(f"run {run_id} is recorded differently in {self._origin[run_id]} and {path} "
                                 f"({', '.join(differ)}); a run id names one run")
        for event in tables["run_events"]:
            self._events.setdefault(event["run_id"], {}).setdefault(tuple(event[k] for k in _EVENT_KEY), event)
        for result in tables["results"]:
            self._results.setdefault(result["run_id"], {}).setdefault(tuple(result[k] for k in _RESULT_KEY), result)

    def _latest(self, run_id: str) -> Dict[str, Any]:
        events = sorted(self._events.get(run_id, {}).values(), key=lambda e: e["at"])
        ends = [e for e in events if e["status"] != "running"]
        if len(ends) > 1:
            raise StoreError(f"run {run_id} ended more than once across the stores ("
                             + ", ".join(f"{e['status']} at {e['at']}" for e in ends)
                             + f"; first seen in {self._origin[run_id]}); a run ends exactly once")
        if not events:
            raise StoreError(f"run {run_id} in {self._origin[run_id]} has no status event")
        last = ends[0] if ends else events[-1]
        return {"status": last["status"], "message": last["message"], "info_json": last["info_json"],
                "ended_at": None if last["status"] == "running" else last["at"]}

    def status(self, run_id: str) -> Optional[str]:
        """A run's status across the stores, or None when none of them has it."""
        return self._status[run_id]["status"] if run_id in self._status else None

    def runs(self, status: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every run with its current status, oldest first."""
        out = [{**run, **self._status[run_id]} for run_id, run in self._runs.items()]
        out.sort(key=lambda r: (r["started_at"], r["run_id"]))
        return [r for r in out if status is None or r["status"] == status]

    def rows(self, run_id: Optional[str] = None) -> List[Dict[str, Any]]:
        """Flat result rows as ``ResultsStore.rows()`` returns them, over every store."""
        out = []
        for run in self.runs():
            if run_id is not None and run["run_id"] != run_id:
                continue
            results = sorted(self._results.get(run["run_id"], {}).values(), key=lambda r: (r["recorded_at"], r["id"]))
            out += [{k: {**run, **r}[k] for k in _ROW_KEYS} for r in results]
        return out


def open_results(dbs: Sequence["str | os.PathLike"] = (), runs_dir: Optional["str | os.PathLike"] = None):
    """The store(s) a reader names: one existing database, or the merge of several and of ``runs_dir``'s.

    With neither, the default store (``$SLIMBENCH_DB`` or ./runs/results.db), which must exist.
    """
    from benchmarks.results.store import default_db_path

    paths = [Path(p) for p in dbs] + (find_stores(runs_dir) if runs_dir is not None else [])
    if not paths:
        paths = [default_db_path()]
    if len(paths) == 1 and runs_dir is None:
        return ResultsStore.existing(paths[0])
    return MergedStore(paths)
