"""`bench sweep` through submitit's local executor: a job killed mid-run, the sweep rerun, stores merged."""
import os
import signal
import time
from pathlib import Path

import pytest
import submitit
import yaml

from benchmarks.cli import main
from benchmarks.report import build
from benchmarks.launch.jobs import JobRecord, Resources, make_executor
from benchmarks.results.merged import MergedStore, find_stores
from benchmarks.runner import run_suite
from benchmarks.results.store import ResultsStore
from benchmarks.suites import load_suite
from benchmarks.launch.sweep import JOB_FILE, Sweep, format_status
from pretrain.errors import ConfigError

KNN = ["dataset.train_limit=200", "dataset.val_limit=100"]
METRICS = {"complexity": {"params", "macs"}, "fmnist-knn": {"top1", "top5", "wall_time_s"}}


@pytest.fixture
def plan(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")   # eight jobs share two cores
    ckpt = tmp_path / "r18.pt"
    assert main(["init", "--arch", "slim_resnet18", "--widths", "1.0,0.5,0.25", "--stem", "small",
                 "--out", str(ckpt)]) == 0
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"checkpoints": [str(ckpt)], "suites": ["complexity", "fmnist-knn"],
                                    "subnets": ["w0.5", "w0.25"], "seeds": [0, 1],
                                    "overrides": {"fmnist-knn": KNN}, "launcher": {"time_min": 10}}))
    return path


def _children(pid: int):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _running_knn_cell(sweep):
    """A kNN cell whose run has started and not ended (its store says 'running'), or None."""
    for cell in sweep.cells:
        if cell.suite == "fmnist-knn" and cell.store_path.is_file():
            try:
                runs = ResultsStore.existing(cell.store_path).runs()
            except Exception:   # the job is creating the file this very moment
                continue
            if runs and runs[-1]["status"] == "running":
                return cell
    return None


@pytest.mark.slow
def test_a_killed_cell_is_resubmitted_alone_and_the_merged_board_equals_one_by_one_runs(plan, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", str(plan), "--out", str(out), "--launcher", "local"]
    assert main(argv) == 0
    sweep = Sweep(plan, out, "local")
    assert len(sweep.cells) == 8
    first_jobs = {c: JobRecord.load(c.folder / JOB_FILE).job_id for c in sweep.cells}
    deadline = time.monotonic() + 120
    while (victim := _running_knn_cell(sweep)) is None:   # kill a job in the middle of its run
        assert time.monotonic() < deadline, format_status(sweep.statuses(), out)
        time.sleep(0.01)
    controller = int(JobRecord.load(victim.folder / JOB_FILE).job_id)
    tasks = _children(controller)
    assert len(tasks) == 1
    os.kill(tasks[0], signal.SIGKILL)
    capsys.readouterr()

    assert main(argv + ["--status"]) == 0   # while the others may still run: the victim is failed, not running
    table = capsys.readouterr().out
    line = next(ln for ln in table.splitlines() if f" {victim.subnet} " in ln and "fmnist-knn" in ln
                and ln.split()[3] == str(victim.seed))
    assert " failed " in line, table

    assert main(argv + ["--wait"]) == 0
    printed = capsys.readouterr().out
    assert "8 finished, 0 running, 0 failed, 0 not started" in printed, printed
    assert "submitted 1 of 8 cells" in printed   # the others were finished or running
    jobs = {c: JobRecord.load(c.folder / JOB_FILE).job_id for c in sweep.cells}
    assert [c for c in sweep.cells if jobs[c] != first_jobs[c]] == [victim]

    merged = MergedStore(find_stores(out))
    for cell in sweep.cells:   # every cell finished once; the killed run is marked failed, never finished
        runs = [r for r in merged.runs() if Path(r["checkpoint_path"]) == cell.checkpoint
                and r["suite"] == cell.suite and r["seed"] == cell.seed
                and r["suite_json"].find(f'"{cell.subnet}"') >= 0]
        assert [r["status"] for r in runs] == (["failed", "finished"] if cell is victim else ["finished"])
        finished = runs[-1]["run_id"]
        rows = [(r["subnet"], r["metric"]) for r in merged.rows(finished)]
        assert sorted(rows) == sorted((cell.subnet, m) for m in METRICS[cell.suite])   # none lost, none twice

    reference = ResultsStore(tmp_path / "one-by-one.db")   # the same cells, one `bench run` each
    for cell in sweep.cells:
        suite = load_suite(cell.suite, list(cell.overrides))
        run_suite(suite, cell.checkpoint, reference, out_root=tmp_path / "ref", subnets=cell.subnet, seed=cell.seed)

    def cells(board):
        return {(r["checkpoint"], r["subnet"], c): [(m.seed, m.value) for m in r[c].measurements]
                for r in board.rows for c in board.metric_columns + ["params", "macs"]
                if c in r and not c.endswith("wall_time_s")}

    swept, one_by_one = build(merged.rows()), build(reference.rows())
    assert swept.metric_columns == one_by_one.metric_columns
    assert cells(swept) == cells(one_by_one) and len(cells(swept)) == 2 * 2 + 2 * 2
    assert all(len(v) == 2 for k, v in cells(swept).items() if k[2] not in ("params", "macs"))

    assert main(["leaderboard", "--runs", str(out)]) == 0
    board = capsys.readouterr().out
    assert "train_limit=200" in board and "w0.5" in board and "w0.25" in board


def test_plan_errors_name_the_key_before_any_work(tmp_path):
    bad = tmp_path / "plan.yaml"
    bad.write_text(yaml.safe_dump({"checkpoints": [str(tmp_path / "none.pt")], "suites": ["complexity"]}))
    with pytest.raises(ConfigError, match=r"checkpoints\[0\].*no such file"):
        Sweep(bad, tmp_path / "out", "local")
    bad.write_text(yaml.safe_dump({"checkpoints": ["x.pt"], "suites": ["complexity"], "overrides": {"knn": []}}))
    with pytest.raises(ConfigError, match="overrides.knn: not one of the plan's suites"):
        Sweep(bad, tmp_path / "out", "local")
    assert not (tmp_path / "out").exists()


def test_slurm_resources_reach_the_sbatch_script(plan, tmp_path, monkeypatch):
    """The plan's launcher block, under the command line's flags, is what sbatch is asked for."""
    from benchmarks.launch.sweep import LauncherPlan

    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ConfigError, match="sbatch and srun not on this machine's PATH.*--launcher local"):
        make_executor("slurm", tmp_path / "jobs", Resources())
    (tmp_path / "bin").mkdir()   # a login node: sbatch and srun exist (never run here: only the script is built)
    for tool in ("sbatch", "srun"):
        (tmp_path / "bin" / tool).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / "bin" / tool).chmod(0o755)

    text = plan.read_text().replace("time_min: 10", "time_min: 90\n  partition: gpu\n  account: slim\n"
                                    "  max_parallel: 3\n  mem_gb: 32")
    plan.write_text(text)
    sweep = Sweep(plan, tmp_path / "out", "slurm", LauncherPlan(partition="a100", cpus_per_job=6))
    res = sweep.resources(sweep.cells[0])
    assert res == Resources(partition="a100", account="slim", time_min=90, gpus_per_node=1, cpus_per_task=6,
                            mem_gb=32, array_parallelism=3)
    executor = make_executor("slurm", tmp_path / "jobs", res, name="sweep")
    assert isinstance(executor, submitit.SlurmExecutor)
    script = executor._make_submission_file_text("python -m x", "uid")
    for line in ("#SBATCH --partition=a100", "#SBATCH --account=slim", "#SBATCH --time=90",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=6", "#SBATCH --mem=32GB",
                 "#SBATCH --signal=USR2@120"):
        assert line in script, script


@pytest.mark.slow
def test_max_parallel_holds_local_cells_back_until_a_slot_frees(plan, tmp_path, capsys):
    data = yaml.safe_load(plan.read_text())
    plan.write_text(yaml.safe_dump({**data, "suites": ["complexity"], "overrides": {}, "seeds": [0],
                                    "launcher": {"time_min": 10, "max_parallel": 1}}))
    out = tmp_path / "sweep"
    assert main(["sweep", str(plan), "--out", str(out), "--launcher", "local", "--wait"]) == 0
    printed = capsys.readouterr().out
    assert "submitted 1 of 2 cells (local); 1 wait for a free slot" in printed
    assert "2 cells in" in printed and "2 finished" in printed
    runs = sorted(MergedStore(find_stores(out)).runs(), key=lambda r: r["started_at"])
    assert len(runs) == 2 and runs[0]["ended_at"] < runs[1]["started_at"]   # one after the other


def test_local_jobs_spread_over_the_gpus_least_used_first():
    from benchmarks.launch.jobs import assign_gpus

    assert assign_gpus(4, 1, [], 6) == [[0], [1], [2], [3], [0], [1]]
    assert assign_gpus(4, 1, [0, 1, 1], 3) == [[2], [3], [0]]   # GPUs 0 and 1 already run cells
    assert assign_gpus(8, 2, [0], 3) == [[1, 2], [3, 4], [5, 6]]
    assert assign_gpus(1, 1, [0], 2) == [[0], [0]]   # one GPU: every job shares it


def test_a_suite_named_by_its_path_gets_the_folder_of_its_name(plan, tmp_path, capsys):
    suite = tmp_path / "suites" / "mine.yaml"
    suite.parent.mkdir()
    suite.write_text(yaml.safe_dump({"name": "my-complexity", "protocol": "complexity", "subnets": "all"}))
    data = yaml.safe_load(plan.read_text())
    plan.write_text(yaml.safe_dump({**data, "suites": [str(suite)], "overrides": {}, "seeds": [0]}))
    sweep = Sweep(plan, tmp_path / "out", "local")
    assert [c.folder.parent.parent.name for c in sweep.cells] == ["my-complexity"] * 2
    assert main(["sweep", str(plan), "--out", str(tmp_path / "out"), "--launcher", "local", "--status"]) == 0
    table = capsys.readouterr().out
    assert table.count("my-complexity") == 2 and "2 not started" in table
