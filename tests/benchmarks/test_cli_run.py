"""`bench run`, `bench list suites|runs` and `bench leaderboard` end to end through benchmarks.cli.main."""
import csv
import io

import pytest

from benchmarks.cli import main
from benchmarks.results.store import ResultsStore
from tests.transfer.conftest import make_checkpoint, make_image_folder

TINY_SUITE = """\
name: tiny-linear-fast
description: a tiny ImageFolder suite for tests
protocol: linear-fast
dataset: {kind: imagefolder, resolution: 16, resize: 16}
params: {epochs: 20, batch_size: 8, lr: 0.5, milestones: [15], workers: 0, feature_norm: true}
subnets: all
"""


@pytest.fixture
def setup(tmp_path):
    make_image_folder(tmp_path / "data", per_class=6, size=16)
    (tmp_path / "tiny.yaml").write_text(TINY_SUITE)
    return tmp_path, make_checkpoint(tmp_path / "c.pt")


def bench(tmp_path, command, *args):
    """`bench COMMAND --db <tmp>/r.db ARGS...`"""
    return main([command, "--db", str(tmp_path / "r.db"), *args])


def test_run_reuse_force_and_leaderboard(setup, capsys):
    tmp_path, ckpt = setup
    common = ["--checkpoint", str(ckpt), "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "runs")]
    assert bench(tmp_path, "run", "--suite", str(tmp_path / "tiny.yaml"), *common) == 0
    out = capsys.readouterr().out
    assert "tiny-linear-fast seed 0: run " in out and "w0.5" in out and "top1=100" in out
    store = ResultsStore(tmp_path / "r.db")
    (first,) = store.runs()
    assert first["status"] == "finished" and first["checkpoint_method"] == "random"
    assert (tmp_path / "runs" / "tiny-linear-fast" / first["run_id"] / "suite.yaml").is_file()
    assert (tmp_path / "runs" / "tiny-linear-fast" / first["run_id"] / "run.log").read_text()

    # same checkpoint and suite: the finished run is reused; --force runs again; another subnet list is new work
    assert bench(tmp_path, "run", "--suite", str(tmp_path / "tiny.yaml"), *common) == 0
    assert "reused finished run " + first["run_id"] in capsys.readouterr().out
    assert bench(tmp_path, "run", "--suite", str(tmp_path / "tiny.yaml"), *common, "--force") == 0
    second = [r for r in store.runs("finished") if r["run_id"] != first["run_id"]][0]

    def accuracies(run_id):  # features now come from the cache: the same probe, the same numbers
        return {(r["subnet"], r["metric"]): r["value"] for r in store.rows(run_id) if r["metric"].startswith("top")}
    assert accuracies(second["run_id"]) == accuracies(first["run_id"])
    assert bench(tmp_path, "run", "--suite", "complexity", *common, "--subnets", "w0.5") == 0
    assert len(store.runs("finished")) == 3
    capsys.readouterr()

    assert bench(tmp_path, "leaderboard", "--format", "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["subnet"] for r in rows] == ["w1.0", "w0.5"]
    assert float(rows[1]["tiny-linear-fast/top1"]) == 100.0 and float(rows[1]["macs"]) > 0 and rows[0]["macs"] == ""
    assert bench(tmp_path, "leaderboard", "--format", "html", "--out", str(tmp_path / "board.html")) == 0
    assert (tmp_path / "board.html").read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "board.png").read_bytes().startswith(b"\x89PNG")
    assert main(["list", "runs", "--db", str(tmp_path / "r.db")]) == 0
    assert capsys.readouterr().out.count("finished") == 3


def test_run_errors_are_one_line_and_start_no_run(setup, capsys):
    tmp_path, ckpt = setup
    (tmp_path / "empty").mkdir()
    assert bench(tmp_path, "run", "--suite", "imagenet-knn", "--checkpoint", str(ckpt),
                 "--data-root", str(tmp_path / "empty")) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: suite ") and "train/CLASS/IMAGE" in err and len(err.splitlines()) == 1
    assert bench(tmp_path, "run", "--suite", "no-such-suite", "--checkpoint", str(ckpt)) == 2
    assert "unknown suite 'no-such-suite'" in capsys.readouterr().err
    assert bench(tmp_path, "run", "--suite", str(tmp_path / "tiny.yaml"), "--checkpoint", str(ckpt),
                 "--data-root", str(tmp_path / "data"), "params.epochs=zero") == 2
    assert "params.epochs" in capsys.readouterr().err
    assert ResultsStore(tmp_path / "r.db").runs() == []


def test_failed_protocol_is_recorded_as_failed(setup, capsys):
    tmp_path, ckpt = setup
    suite = tmp_path / "semi.yaml"
    suite.write_text("protocol: semi\ndataset: {kind: imagefolder, resolution: 16}\n"
                     "params: {subset: file, subset_file: missing.txt, workers: 0}\n")
    assert bench(tmp_path, "run", "--suite", str(suite), "--checkpoint", str(ckpt),
                 "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "runs")) == 2
    assert "missing.txt: no such file" in capsys.readouterr().err
    (run,) = ResultsStore(tmp_path / "r.db").runs()
    assert run["status"] == "failed" and "DataError" in run["message"]


def test_list_suites(capsys):
    assert main(["list", "suites"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines["imagenet-linear"].split()[1:3] == ["linear", "imagefolder"]
    assert lines["fmnist-knn"].split()[1:3] == ["knn", "fmnist"]
    assert lines["latency"].split()[1:3] == ["latency", "-"]


@pytest.mark.parametrize("suite", ["fmnist-knn", "imagenet-knn", "demo-det"])
def test_a_named_data_root_that_does_not_exist_is_an_error(setup, capsys, monkeypatch, suite):
    # Fashion-MNIST is also installed system-wide: without the check fmnist-knn would quietly use that copy
    tmp_path, ckpt = setup
    monkeypatch.delenv("SLIMBENCH_DATA", raising=False)
    assert bench(tmp_path, "run", "--suite", suite, "--checkpoint", str(ckpt),
                 "--data-root", str(tmp_path / "nonexistent")) == 2
    err = capsys.readouterr().err
    assert err == f"bench: error: --data-root {tmp_path / 'nonexistent'}: no such folder; expected the folder " \
                  f"holding the suite's dataset\n"
    monkeypatch.setenv("SLIMBENCH_DATA", str(tmp_path / "c.pt"))   # the environment's root is named too
    assert bench(tmp_path, "run", "--suite", suite, "--checkpoint", str(ckpt)) == 2
    assert f"$SLIMBENCH_DATA {tmp_path / 'c.pt'}: not a folder" in capsys.readouterr().err
    assert not (tmp_path / "r.db").exists()   # refused before the results store was opened


def test_leaderboard_and_list_runs_refuse_a_missing_database(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLIMBENCH_DB", raising=False)
    for argv in (["leaderboard", "--db", "missing.db"], ["list", "runs", "--db", "missing.db"], ["leaderboard"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        name = "missing.db" if "--db" in argv else "runs/results.db"
        assert err.startswith(f"bench: error: results store {name}: no such file;") and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []   # nothing was created


def test_detectron2_suite_is_refused_under_torchrun_before_any_work(setup, capsys, monkeypatch):
    tmp_path, ckpt = setup
    monkeypatch.setenv("WORLD_SIZE", "2")   # what torchrun sets; the in-process check needs no process group
    assert bench(tmp_path, "run", "--suite", "demo-det", "--checkpoint", str(ckpt),
                 "--data-root", str(tmp_path / "data")) == 2
    err = capsys.readouterr().err
    assert "cannot run under torchrun (WORLD_SIZE=2): Detectron2's launch spawns its own processes" in err
    assert "params.num_gpus" in err and not (tmp_path / "r.db").exists()


def test_only_machine_0_of_a_multi_machine_detectron2_run_records_it(setup, capsys):
    # A real two-machine run needs GPUs (Detectron2's launch asserts CUDA); on CPU both machines stop at the
    # launch check inside the protocol, after the point where the run row is written: machine 0 records the
    # failure, machine 1 records nothing.
    from transfer.detection.protocol import Detectron2Params, Detectron2Protocol

    assert Detectron2Protocol().records_run(Detectron2Params(num_machines=2, machine_rank=0))
    assert not Detectron2Protocol().records_run(Detectron2Params(num_machines=2, machine_rank=1))
    tmp_path, ckpt = setup
    for machine in (1, 0):
        assert bench(tmp_path, "run", "--suite", "demo-det", "--checkpoint", str(ckpt), "--data-root",
                     str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "params.num_machines=2",
                     f"params.machine_rank={machine}") == 2
        assert "num_machines > 1 needs GPUs" in capsys.readouterr().err
        runs = ResultsStore(tmp_path / "r.db").runs()
        assert [r["status"] for r in runs] == ([] if machine == 1 else ["failed"])


def test_seeds_run_once_each_are_reused_and_the_leaderboard_shows_their_spread(setup, capsys):
    tmp_path, ckpt = setup
    common = ["--suite", str(tmp_path / "tiny.yaml"), "--checkpoint", str(ckpt), "--data-root", str(tmp_path / "data"),
              "--out", str(tmp_path / "runs")]
    assert bench(tmp_path, "run", *common, "--seeds", "0,1") == 0
    store = ResultsStore(tmp_path / "r.db")
    assert sorted(r["seed"] for r in store.runs("finished")) == [0, 1]
    capsys.readouterr()
    assert bench(tmp_path, "run", *common, "--seeds", "0,1,2") == 0   # seeds 0 and 1 are done: only 2 runs
    out = capsys.readouterr().out
    assert out.count("reused finished run") == 2 and "tiny-linear-fast seed 2: run " in out
    assert bench(tmp_path, "run", *common, "--seed", "1") == 0        # seed 1 is its own run, not seed 0's
    (seed1,) = [r for r in store.runs() if r["seed"] == 1]
    assert f"seed 1: reused finished run {seed1['run_id']}" in capsys.readouterr().out
    assert sorted(r["seed"] for r in store.runs()) == [0, 1, 2]

    assert bench(tmp_path, "leaderboard", "--format", "md", "--columns", "all") == 0
    lines = capsys.readouterr().out.splitlines()
    column = lines[0].split(" | ").index("tiny-linear-fast/top1")
    assert all(line.split(" | ")[column].endswith("(3)") and " ± " in line for line in lines[2:])
    assert bench(tmp_path, "leaderboard") == 0                          # the compact terminal view
    compact = capsys.readouterr().out.splitlines()
    assert compact[0].split()[:4] == ["checkpoint", "subnet", "params", "MACs"] and "±" in compact[2]
    assert bench(tmp_path, "leaderboard", "--format", "csv-long") == 0
    long = [r for r in csv.DictReader(io.StringIO(capsys.readouterr().out)) if r["column"] == "tiny-linear-fast/top1"]
    assert sorted((r["subnet"], r["seed"]) for r in long) == [(s, str(i)) for s in ("w0.5", "w1.0") for i in range(3)]
