"""`bench diagnose` on real, tiny pretraining runs: plots, CSV, summary, PCA and the errors a user meets."""
import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmarks.cli import main
from benchmarks.report.diagnose import load_diagnostics, plot_trajectory, summarize, trajectory_pca
from pretrain.diagnostics import TRAJECTORY_FILE, read_trajectory
from pretrain.recipe import parse_recipe
from pretrain.trainer import train
from tests.pretrain.test_trainer import tiny_recipe_dict

RATIOS = ("grad/ratio_full_smallest", "grad/ratio_rest_smallest")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs with diagnostics on every step (SlimCLR-MoCoV2, DSPNet-BYOL) and one without (trained once)."""
    root = tmp_path_factory.mktemp("runs")
    for name, method, run in [("mocov2", "slimclr-mocov2", {"max_steps": 4, "diagnose_every": 1}),
                              ("byol", "dspnet-byol", {"max_steps": 4, "diagnose_every": 1}),
                              ("plain", "slimclr-mocov2", {"max_steps": 2})]:
        train(parse_recipe(tiny_recipe_dict(method, **run), "tiny"), root / name, progress=False)
    return root


def log_lines(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def png(path):
    """The image, checked to be a real plot: a sizeable canvas with more than a handful of colours drawn."""
    img = Image.open(path)
    img.load()
    assert img.format == "PNG" and img.width >= 500 and img.height >= 300
    assert len(img.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
    return img


def test_cli_writes_plots_csv_and_summary(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["diagnose", str(runs / "mocov2"), str(runs / "byol"), "--out", str(out)]) == 0
    ratios, norms, trajectory = png(out / "ratios.png"), png(out / "norms.png"), png(out / "trajectory.png")
    # Side by side: two panels per figure, wider than tall.
    assert all(img.width > 2 * img.height for img in (ratios, norms, trajectory))
    printed = capsys.readouterr().out
    assert "mocov2 (slimclr-mocov2): 4 diagnostic steps, 1 to 4" in printed
    assert "byol (dspnet-byol): 4 diagnostic steps, 1 to 4" in printed
    for name in ("ratios.png", "norms.png", "trajectory.png", "diagnostics.csv"):
        assert f"wrote {out / name}" in printed
    assert all(len(line) <= 100 for line in printed.splitlines())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temporary file left behind


def test_csv_holds_the_logged_values_and_the_pca(runs, tmp_path):
    out = tmp_path / "out"
    assert main(["diagnose", str(runs / "mocov2"), str(runs / "byol"), "--out", str(out)]) == 0
    rows = read_csv(out / "diagnostics.csv")
    for label in ("mocov2", "byol"):
        got = {(int(r["step"]), r["key"]): float(r["value"]) for r in rows if r["run"] == label}
        logged = {(line["step"], k): v for line in log_lines(runs / label) for k, v in line.items()
                  if k.startswith("grad/")}
        assert got.keys() - {k for k in got if k[1] in ("pc1", "pc2")} == logged.keys()
        for key, value in logged.items():
            assert got[key] == value, key   # exactly: the CSV writes the logged float in full
        assert {k[1] for k in logged} >= set(RATIOS)
        steps, grads = read_trajectory(runs / label / TRAJECTORY_FILE)
        proj, _ = trajectory_pca(grads)
        np.testing.assert_allclose([got[(s, "pc1")] for s in steps.tolist()], proj[:, 0], rtol=1e-6)
        np.testing.assert_allclose([got[(s, "pc2")] for s in steps.tolist()], proj[:, 1], rtol=1e-6)
    # DSPNet logs the networks it sampled, only on the steps it sampled them.
    byol_keys = {r["key"] for r in rows if r["run"] == "byol"}
    assert "grad/norm_w0.5-d1.1.1.1" in byol_keys


def test_summary_shows_the_ratios_at_first_middle_and_last_step(runs):
    run = load_diagnostics(runs / "mocov2")
    lines = log_lines(runs / "mocov2")
    text = summarize([run])
    full = [line["grad/ratio_full_smallest"] for line in lines]
    row = next(line for line in text.splitlines() if line.strip().startswith("full/smallest")).split()
    # step 1, step 2 (the middle of 4), step 4, and the mean of the last quarter (step 4)
    assert row[1:] == [f"{full[0]:.3f}", f"{full[1]:.3f}", f"{full[3]:.3f}", f"{full[3]:.3f}"]
    assert "step 1" in text and "step 2" in text and "step 4" in text
    assert "PC1 explains" in text


def test_trajectory_pca_recovers_a_known_direction():
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(64)
    direction /= np.linalg.norm(direction)
    t = np.linspace(-3.0, 5.0, 20)
    grads = 2.0 + t[:, None] * direction[None, :] + 1e-5 * rng.standard_normal((20, 64))
    proj, ratio = trajectory_pca(grads.astype(np.float32), k=2)
    assert proj.shape == (20, 2) and ratio.shape == (2,)
    assert ratio[0] > 0.9999 and ratio[1] < 1e-4
    sign = np.sign(proj[0, 0] * (t[0] - t.mean()))
    np.testing.assert_allclose(sign * proj[:, 0], t - t.mean(), atol=1e-3)   # unit direction: projection = t
    # A second, orthogonal direction with a smaller spread is PC2, and the variances split as the spreads.
    other = rng.standard_normal(64)
    other -= other @ direction * direction
    other /= np.linalg.norm(other)
    s = np.tile([1.0, -1.0, -1.0, 1.0], 5)   # zero mean, uncorrelated with t: the components separate
    proj, ratio = trajectory_pca(t[:, None] * direction + s[:, None] * other)
    np.testing.assert_allclose(np.abs(proj[:, 1]), 1.0, atol=1e-6)
    var_t = ((t - t.mean()) ** 2).sum()
    np.testing.assert_allclose(ratio, [var_t / (var_t + 20), 20 / (var_t + 20)], rtol=1e-6)
    # Fewer steps than components: the missing component is zero, not NaN.
    proj, ratio = trajectory_pca(np.ones((1, 5)), k=2)
    assert np.all(proj == 0) and np.all(ratio == 0)


def test_overlay_and_labels(runs, tmp_path):
    side, over = tmp_path / "side", tmp_path / "over"
    assert main(["diagnose", str(runs / "mocov2"), str(runs / "byol"), "--out", str(side)]) == 0
    assert main(["diagnose", str(runs / "mocov2"), str(runs / "byol"), "--out", str(over), "--overlay",
                 "--labels", "slimclr,dspnet"]) == 0
    # One axes instead of a panel per run.
    assert png(over / "ratios.png").width < png(side / "ratios.png").width
    assert {r["run"] for r in read_csv(over / "diagnostics.csv")} == {"slimclr", "dspnet"}


def test_labels_must_match_the_runs(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["diagnose", str(runs / "mocov2"), str(runs / "byol"), "--out", str(out), "--labels", "x"]) == 2
    assert "--labels: 1 labels for 2 run folders" in capsys.readouterr().err
    assert not out.exists()


def test_run_without_trajectory_is_left_out_of_its_plot(runs, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(runs / "mocov2", bare, ignore=shutil.ignore_patterns(TRAJECTORY_FILE, "*.pt"))
    run, other = load_diagnostics(bare), load_diagnostics(runs / "byol")
    assert run.trajectory is None and other.trajectory is not None
    assert plot_trajectory([run, other], tmp_path / "t.png") == ["bare"]
    assert png(tmp_path / "t.png").width < 2 * png(tmp_path / "t.png").height   # one panel only
    assert "head-gradient trajectory: none" in summarize([run])
    out = tmp_path / "out"
    assert main(["diagnose", str(bare), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["diagnostics.csv", "norms.png", "ratios.png"]


def test_torn_last_log_line_of_a_running_run_is_skipped(runs, tmp_path):
    live = tmp_path / "live"
    shutil.copytree(runs / "mocov2", live, ignore=shutil.ignore_patterns("*.pt"))
    with open(live / "log.jsonl", "a") as f:
        f.write('{"step": 5, "grad/norm_w1.0": 1.')
    run = load_diagnostics(live)
    assert run.steps.tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("case", ["no grad keys", "missing folder"])
def test_bad_input_is_one_line_with_status_2_and_writes_nothing(runs, tmp_path, capsys, case):
    bad = runs / "plain" if case == "no grad keys" else tmp_path / "nowhere"
    out = tmp_path / "out"
    assert main(["diagnose", str(runs / "mocov2"), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bench: error: ") and str(bad) in err
    if case == "no grad keys":
        assert "run.diagnose_every" in err
    else:
        assert "no such run folder" in err
    assert not out.exists()   # every input is checked before anything is written
