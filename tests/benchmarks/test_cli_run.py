"""`bench run`, `bench list suites|runs` and `bench leaderboard` end to end through benchmarks.cli.main."""
import csv
import io

import pytest

from benchmarks.cli import main
from benchmarks.store import ResultsStore
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
    assert "tiny-linear-fast: run " in out and "w0.5" in out and "top1=100" in out
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
    assert bench(tmp_path, "run", "--suite", "imagenet-knn", "--checkpoint", str(ckpt),
                 "--data-root", str(tmp_path / "nowhere")) == 2
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
