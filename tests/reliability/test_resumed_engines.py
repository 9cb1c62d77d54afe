"""A `bench run` of Detectron2 or MMSeg SIGKILLed after the engine's first checkpoint resumes on rerun.

The same command is run again; the engines' own logs show where each run started: the rerun
continues after the checkpoint the killed run left, not from iteration 0, and the store ends with
one finished result per cell. Tiny width, tiny images, a checkpoint every 2 iterations.
"""
import json
import re
import signal

import pytest

from benchmarks.report import build
from benchmarks.results.store import ResultsStore
from tests.reliability.conftest import bench, db_statuses, kill, start_bench, wait_until

SCENES = "dataset: {kind: demo-scenes, num_train: 8, num_val: 4}\n"

DETECTRON2_SUITE = """\
name: resume-det
protocol: detectron2
""" + SCENES + """\
params:
  base_config: mask_rcnn_demo_FPN
  iterations: 20
  batch_size: 2
  lr: 0.01
  steps: []
  warmup_iters: 1
  checkpoint_period: 2
  min_size_train: [48]
  max_size_train: 64
  min_size_test: 48
  max_size_test: 64
  num_workers: 0
subnets: [w0.25]
"""

MMSEG_SUITE = """\
name: resume-seg
protocol: mmseg
""" + SCENES + """\
params:
  model: fcn
  iterations: 20
  batch_size: 2
  crop_size: [32, 32]
  resize_scale: [48, 48]
  ratio_range: [1.0, 1.0]
  checkpoint_interval: 2
  log_interval: 1
  num_workers: 0
  model_overrides:
    backbone.strides: [1, 2, 2, 2]
    backbone.dilations: [1, 1, 1, 1]
    decode_head.channels: 16
    auxiliary_head.channels: 8
subnets: [w0.25]
"""


@pytest.fixture
def workspace(tmp_path):
    """(tmp_path, the `bench run` arguments of a suite file) with a width-1.0/0.25 S-ResNet-18 checkpoint."""
    ckpt = tmp_path / "r18.pt"
    done = bench("init", "--arch", "slim_resnet18", "--widths", "1.0,0.25", "--stem", "small", "--out", ckpt)
    assert done.returncode == 0, done.stderr
    (tmp_path / "data").mkdir()

    def args(suite_text: str, name: str) -> list:
        (tmp_path / f"{name}.yaml").write_text(suite_text)
        return ["run", "--suite", tmp_path / f"{name}.yaml", "--checkpoint", ckpt, "--data-root", tmp_path / "data",
                "--out", tmp_path / "runs", "--db", tmp_path / "results.db"]
    return tmp_path, args


def kill_after_first_checkpoint(args: list, marker) -> None:
    """Start `bench ARGS`, SIGKILL it as soon as ``marker()`` (an engine's checkpoint record) exists."""
    proc = start_bench(*args)
    assert wait_until(lambda: marker() is not None, proc, timeout=600, poll=0.02), proc.communicate()[1][-3000:]
    kill(proc, signal.SIGKILL)


def one_finished_result_per_cell(db) -> None:
    assert sorted(db_statuses(db)) == ["finished", "running"]   # the killed run stays 'running', never finished
    board = build(ResultsStore(db).rows())
    assert [r["subnet"] for r in board.rows] == ["w0.25"]
    cells = {c: v for c, v in board.rows[0].items() if "/" in c}
    assert cells and all(cell.n == 1 for cell in cells.values())


def recorded_or_newest(record, pattern: str) -> str:
    """The checkpoint an engine's ``last_checkpoint`` names; if the kill came between opening the record and
    writing it (empty), the newest checkpoint file, which the rerun must then resume from."""
    named = record.read_text().strip()
    if named:
        return named
    numbered = [(int(m.group(1)), p.name) for p in record.parent.iterdir() if (m := re.fullmatch(pattern, p.name))]
    return max(numbered)[1]


def only(pattern, root):
    found = sorted(root.glob(pattern))
    return found[0] if len(found) == 1 else None


@pytest.mark.slow
def test_killed_detectron2_run_resumes_from_its_last_checkpoint(workspace):
    tmp_path, args = workspace
    run = args(DETECTRON2_SUITE, "det")
    marker = lambda: only("runs/work/resume-det/*/w0.25/seed0/last_checkpoint", tmp_path)  # noqa: E731
    kill_after_first_checkpoint(run, marker)
    work = marker().parent
    at_kill = recorded_or_newest(marker(), r"model_(\d+)\.pth")   # Detectron2's last complete checkpoint
    killed_iter = int(re.fullmatch(r"model_(\d+)\.pth", at_kill).group(1))   # 0-based: iterations 0..k done

    done = bench(*run, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    starts = [int(n) for n in re.findall(r"Starting training from iteration (\d+)", (work / "log.txt").read_text())]
    iterations = [json.loads(line)["iteration"] for line in (work / "metrics.json").read_text().splitlines()]
    print(f"\ndetectron2: killed with last checkpoint {at_kill} (iteration {killed_iter + 1} done); "
          f"runs started at iterations {starts}; metrics.json iterations {iterations}")
    assert starts == [0, killed_iter + 1] and 0 < killed_iter + 1 < 20
    assert 19 in iterations   # the rerun trained the last iteration (0-based) of the schedule
    assert (work / "model_final.pth").is_file() and (work / "results.json").is_file()
    one_finished_result_per_cell(tmp_path / "results.db")


@pytest.mark.slow
def test_killed_mmseg_run_resumes_from_its_last_checkpoint(workspace):
    tmp_path, args = workspace
    run = args(MMSEG_SUITE, "seg")
    marker = lambda: only("runs/work/resume-seg/*/w0.25/seed0/work_dir/last_checkpoint", tmp_path)  # noqa: E731
    kill_after_first_checkpoint(run, marker)
    work_dir = marker().parent
    at_kill = recorded_or_newest(marker(), r"iter_(\d+)\.pth")   # MMEngine's last complete checkpoint
    killed_iter = int(re.search(r"iter_(\d+)\.pth$", at_kill).group(1))

    done = bench(*run, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = sorted(work_dir.glob("*/*.log"))                     # one MMEngine log folder per invocation
    assert len(logs) == 2
    first, rerun = (sorted(json.loads(line)["iter"] for line in (log.parent / "vis_data" / "scalars.json")
                           .read_text().splitlines() if "iter" in json.loads(line)) for log in logs)
    resumed = re.findall(r"resumed epoch: \d+, iter: (\d+)", logs[1].read_text())
    print(f"\nmmseg: killed with last checkpoint {at_kill} (iteration {killed_iter}); killed run logged iterations "
          f"{first[0]}..{first[-1]}; MMEngine 'resumed ... iter: {resumed[0]}'; rerun logged {rerun[0]}..{rerun[-1]}")
    assert first[0] == 1 and resumed == [str(killed_iter)]
    assert rerun[0] == killed_iter + 1 and rerun[-1] == 20
    assert (work_dir.parent / "results.json").is_file()
    one_finished_result_per_cell(tmp_path / "results.db")
