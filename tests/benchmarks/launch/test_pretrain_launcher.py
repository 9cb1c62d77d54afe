"""`bench pretrain --launcher local`: a two-process DDP run from submitit's distributed environment."""
import json

import pytest
import torch
import yaml

from benchmarks.cli import main
from benchmarks.launch.pretrain import PretrainJob
from pretrain.checkpoints.format import load_checkpoint
from pretrain.recipe import parse_recipe
from pretrain.trainer import LOG_FILE, STATE_FILE
from tests.pretrain.test_trainer import tiny_recipe_dict


@pytest.fixture
def recipe_file(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = tiny_recipe_dict("slimclr-mocov2", max_steps=4, checkpoint_every=2)
    data["data"]["batch_size"] = 8   # 4 images per rank
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


@pytest.mark.slow
def test_two_processes_through_the_local_executor_join_one_ddp_run(recipe_file, tmp_path, capsys):
    path, _ = recipe_file
    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(path), "--out", str(out), "--launcher", "local",
                 "--gpus-per-node", "2", "--time-min", "10", "--wait"]) == 0
    printed = capsys.readouterr().out
    assert "1 node(s) x 2 process(es)" in printed and "4/4 steps" in printed
    state = torch.load(out / STATE_FILE, weights_only=False)
    assert state["world_size"] == 2 and state["step"] == 4
    cost = load_checkpoint(out / "checkpoint.pt").extra["cost"]
    assert cost["segments"][0]["devices"] == 2
    logs = sorted((out / "jobs").glob("*_log.err"))
    assert len(logs) == 2   # one per task; each joined the rendezvous as its own rank
    assert "task 0 of 2" in logs[0].read_text() and "task 1 of 2" in logs[1].read_text()
    assert len((out / LOG_FILE).read_text().splitlines()) == 4   # rank 0 alone writes the log

    jobs = len(list((out / "jobs").iterdir()))
    assert main(["pretrain", "--config", str(path), "--out", str(out), "--launcher", "local",
                 "--gpus-per-node", "2"]) == 2   # the same run folder again: refused before anything is submitted
    assert "already holds a run" in capsys.readouterr().err and len(list((out / "jobs").iterdir())) == jobs


def test_a_requeued_job_resumes_from_the_last_checkpoint(recipe_file, tmp_path, monkeypatch):
    _, data = recipe_file
    data = {**data, "data": {**data["data"], "batch_size": 4}}
    out = tmp_path / "run"
    job = PretrainJob(parse_recipe({**data, "run": {**data["run"], "max_steps": 2}}, "tiny"), out)
    requeued = job.checkpoint()   # what submitit calls on a time-out or preemption
    assert isinstance(requeued.function, PretrainJob) and requeued.function.requeued
    # the variables submitit's local executor gives a one-task job (the job runs here, in this process)
    for key, value in dict(SUBMITIT_EXECUTOR="local", SUBMITIT_LOCAL_JOB_ID="1", SUBMITIT_LOCAL_NTASKS="1",
                           SUBMITIT_LOCAL_JOB_NUM_NODES="1", SUBMITIT_LOCAL_NODEID="0", SUBMITIT_LOCAL_GLOBALID="0",
                           SUBMITIT_LOCAL_LOCALID="0", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
                           LOCAL_WORLD_SIZE="1", MASTER_ADDR="localhost", MASTER_PORT="0").items():
        monkeypatch.setenv(key, value)   # restored after the test, whatever the job exports
    assert job().steps == 2
    longer = PretrainJob(parse_recipe({**data, "run": {**data["run"], "max_steps": 3}}, "tiny"), out).checkpoint()
    assert longer.function().steps == 3   # resumed at step 2 (a fresh run would be refused: the state exists)
    assert torch.load(out / STATE_FILE, weights_only=False)["step"] == 3


@pytest.mark.slow
def test_a_preempted_local_job_is_requeued_by_submitit_and_resumes(recipe_file, tmp_path):
    """The signal SLURM sends before a time limit or preemption, delivered to the running task: submitit calls
    ``PretrainJob.checkpoint``, the local controller starts the requeued job, and it resumes from the last save."""
    import os
    import signal
    import time
    from pathlib import Path

    from submitit.local.local import LocalJobEnvironment

    from benchmarks.launch.jobs import Resources, make_executor

    _, data = recipe_file
    data = {**data, "data": {**data["data"], "batch_size": 4},
            "run": {**data["run"], "epochs": 20, "max_steps": None, "checkpoint_every": 10, "log_every": 10}}
    out = tmp_path / "run"
    executor = make_executor("local", tmp_path / "jobs", Resources(time_min=10))
    job = executor.submit(PretrainJob(parse_recipe(data, "tiny"), out))
    deadline = time.monotonic() + 120
    while not (out / STATE_FILE).exists():   # the first save (step 10 of 80)
        assert time.monotonic() < deadline and job.state == "RUNNING", job.stderr()
        time.sleep(0.01)
    task = int(Path(f"/proc/{job.job_id}/task/{job.job_id}/children").read_text().split()[0])
    os.kill(task, LocalJobEnvironment._usr_sig())
    result = job.result()
    assert result.steps == result.total_steps == 80
    log = job.stderr()
    assert "Requeued" in log and log.count("task 0 of 1") == 2
    starts = [int(line.rsplit("from step ", 1)[1]) for line in log.splitlines() if "from step " in line]
    assert starts[0] == 0 and len(starts) == 2 and starts[1] >= 10 and starts[1] % 10 == 0
    steps = [json.loads(line)["step"] for line in (out / LOG_FILE).read_text().splitlines()]
    assert steps == list(range(10, 81, 10))   # resumed at its last save: nothing lost, nothing twice
