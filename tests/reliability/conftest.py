"""Shared helpers for the reliability suite: real `bench` processes, killed for real."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench_env(**extra) -> dict:
    """Environment for a `bench` child: one thread, so parallel children share the 2 cores fairly."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)


def bench(*args, cwd=ROOT, timeout=300, **env) -> subprocess.CompletedProcess:
    """Run `bench ARGS` to completion."""
    return subprocess.run([sys.executable, "-m", "benchmarks.cli", *map(str, args)], cwd=cwd, env=bench_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def start_bench(*args, cwd=ROOT, **env) -> subprocess.Popen:
    """Start `bench ARGS` in the background."""
    return subprocess.Popen([sys.executable, "-m", "benchmarks.cli", *map(str, args)], cwd=cwd, env=bench_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(predicate, proc: subprocess.Popen, timeout: float = 120.0, poll: float = 0.002) -> bool:
    """Poll ``predicate`` until it holds (True) or ``proc`` exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(poll)
    raise TimeoutError("condition not reached in time")


def kill(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    """Send ``sig`` and reap the process."""
    proc.send_signal(sig)
    proc.communicate(timeout=60)


def db_statuses(db: Path) -> list:
    """Every run's current status in a results database (read-only, never blocks writers)."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return [r[0] for r in con.execute("SELECT status FROM run_status")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()
