"""`bench diagnose`: plots and tables of the interference diagnostics a pretraining run logged.

A run trained with ``run.diagnose_every: N`` logs the ``grad/`` keys of ``pretrain.diagnostics`` every
N steps, and the projection head's gradient to ``head_grad.bin``. This draws SlimCLR's evidence
(IJCV 2024, Figure 3; upstream ``visualize/plot_grad.py`` and ``plot_eig.py``) from them:

* ``ratios.png``: ||g_full|| / ||g_smallest|| and ||g_full\\smallest|| / ||g_smallest|| against step;
* ``norms.png``: every network's gradient norm against step;
* ``trajectory.png``: the head gradient's projections on its first two principal components;
* ``diagnostics.csv``: every value above in long format (``run,step,key,value``).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from pretrain.checkpoints.format import atomic_write_bytes
from pretrain.diagnostics import TRAJECTORY_FILE, read_trajectory
from pretrain.errors import SlimBenchError

from benchmarks.report.plot import pyplot

LOG_FILE = "log.jsonl"      # pretrain.trainer's names (importing the trainer would load every method)
RECIPE_FILE = "recipe.yaml"
FULL_KEY, REST_KEY = "grad/ratio_full_smallest", "grad/ratio_rest_smallest"
DEFAULT_OUT = Path("runs") / "diagnose"


@dataclass
class RunDiagnostics:
    """The diagnostics of one run folder: ``values[key][i]`` is ``key`` at ``steps[i]`` (NaN where not logged)."""

    path: Path
    label: str
    method: str
    widths: List[float]
    steps: np.ndarray                                   # int64 [n]: the diagnostic steps
    values: Dict[str, np.ndarray] = field(default_factory=dict)
    trajectory_steps: Optional[np.ndarray] = None       # int64 [m]
    trajectory: Optional[np.ndarray] = None             # float32 [m, D]: the head's flattened gradient
    _pca: Optional[Tuple[np.ndarray, np.ndarray]] = field(default=None, repr=False)

    def pca(self) -> Tuple[np.ndarray, np.ndarray]:
        """``trajectory_pca`` of the trajectory, computed once (a long run's is large)."""
        if self._pca is None:
            self._pca = trajectory_pca(self.trajectory)
        return self._pca

    @property
    def title(self) -> str:
        return f"{self.label} ({self.method})"

    def ratio_labels(self) -> Tuple[str, str]:
        """Mathtext names of the two ratios, with the run's widths (SlimCLR's g_1.0 / g_0.25)."""
        # str(float): 1.0 and 0.25, as the log's keys (w1.0) spell widths
        full, small = (str(max(self.widths)), str(min(self.widths))) if self.widths else ("full", "smallest")
        return (rf"$\|\nabla\theta_{{{full}}}\| \,/\, \|\nabla\theta_{{{small}}}\|$",
                rf"$\|\nabla\theta_{{{full}\setminus{small}}}\| \,/\, \|\nabla\theta_{{{small}}}\|$")


def _name(run: Path) -> str:
    return run.name or run.resolve().name   # "." has no name of its own


def _read_log(path: Path) -> List[dict]:
    """The records of a ``log.jsonl``; a torn last line (a run writing right now) is left out."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines):
                break
            raise SlimBenchError(f"{path}: line {i} is not JSON ({e})") from None
    return records


def _read_recipe(run: Path) -> Tuple[str, List[float]]:
    """Method name and widths from the run's ``recipe.yaml`` ('?' and none if it has none)."""
    path = run / RECIPE_FILE
    if not path.is_file():
        return "?", []
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SlimBenchError(f"{path}: not YAML ({e})") from None
    method = (recipe.get("method") or {}).get("name", "?")
    widths = [float(w) for w in (recipe.get("model") or {}).get("widths") or []]
    return str(method), widths


def load_diagnostics(run_dir: "str | Path", label: Optional[str] = None) -> RunDiagnostics:
    """Read the ``grad/`` keys of a run folder's ``log.jsonl`` and its ``head_grad.bin`` if present."""
    run = Path(run_dir)
    if not run.is_dir():
        what = "not a folder" if run.exists() else "no such run folder"
        raise SlimBenchError(f"{run}: {what} (expected a pretraining run folder with {LOG_FILE})")
    log_path = run / LOG_FILE
    if not log_path.is_file():
        raise SlimBenchError(f"{run}: no {LOG_FILE} (expected a pretraining run folder written by `bench pretrain`)")
    records = [r for r in _read_log(log_path) if "step" in r and any(k.startswith("grad/") for k in r)]
    if not records:
        raise SlimBenchError(f"{log_path}: no grad/ keys on any line (pretrain with run.diagnose_every: N "
                             f"to log them)")
    keys = list(dict.fromkeys(k for r in records for k in r if k.startswith("grad/")))
    values = {k: np.array([r.get(k, math.nan) for r in records], dtype=np.float64) for k in keys}
    method, widths = _read_recipe(run)
    diag = RunDiagnostics(run, label or _name(run), method, widths,
                          np.array([r["step"] for r in records], dtype=np.int64), values)
    traj = run / TRAJECTORY_FILE
    if traj.is_file():
        try:
            steps, grads = read_trajectory(traj)
        except (ValueError, KeyError) as e:
            raise SlimBenchError(f"{traj}: unreadable gradient trajectory ({e})") from None
        if len(steps):
            diag.trajectory_steps, diag.trajectory = steps, grads
    return diag


def trajectory_pca(grads: np.ndarray, k: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """The centred rows' projections [n, k] on their first k principal components, and explained variance ratios [k]."""
    x = np.asarray(grads)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    # Fix each component's sign (largest loading positive, as sklearn's svd_flip) so plots are reproducible.
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1
    proj, var = u * s * signs, s.astype(np.float64) ** 2
    ratio = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    # Fewer steps than components: the missing ones explain nothing.
    m = min(k, proj.shape[1])
    out, ratios = np.zeros((len(x), k), dtype=proj.dtype), np.zeros(k)
    out[:, :m], ratios[:m] = proj[:, :m], ratio[:m]
    return out, ratios


# -- plots -------------------------------------------------------------------------------------
def _grid(plt, n: int, sharey: bool = False):
    """A figure with one panel per run, at most three a row; the spare panels are hidden."""
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.8 * rows), squeeze=False, sharey=sharey)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(plt, fig, path: "str | Path") -> None:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _axes(ax, title: str, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # steps
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def _finite(steps: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(y)
    return steps[ok], y[ok]


def _line(ax, x, y, **kw):
    """A curve; with markers while there are few points, so a network measured once still shows."""
    ax.plot(x, y, marker="o" if len(x) <= 50 else None, markersize=3, **kw)


def plot_ratios(runs: Sequence[RunDiagnostics], path: "str | Path", overlay: bool = False) -> None:
    """SlimCLR's Figure 3: both gradient-norm ratios against step, a panel per run or all on one (``overlay``)."""
    plt = pyplot()
    if overlay:
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        panels = [(ax, runs)]
    else:
        fig, axes = _grid(plt, len(runs), sharey=True)
        panels = [(ax, [run]) for ax, run in zip(axes, runs)]
    for ax, shown in panels:
        for run in shown:
            full, rest = run.ratio_labels()
            prefix = f"{run.label}: " if overlay else ""
            color = None
            for key, name, style in ((FULL_KEY, full, "-"), (REST_KEY, rest, "--")):
                if key in run.values:
                    x, y = _finite(run.steps, run.values[key])
                    _line(ax, x, y, linestyle=style, color=color, label=prefix + name)
                    color = ax.lines[-1].get_color()   # the run's second ratio in its first one's colour
        ax.axhline(1.0, color="gray", linewidth=0.8, linestyle=":")
        _axes(ax, "gradient-norm ratios" if overlay else shown[0].title, "ratio of gradient norms")
        ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_norms(runs: Sequence[RunDiagnostics], path: "str | Path") -> None:
    """Every network's gradient norm (``grad/norm_*``) against step, a panel per run."""
    plt = pyplot()
    fig, axes = _grid(plt, len(runs))
    for ax, run in zip(axes, runs):
        keys = [k for k in run.values if k.startswith("grad/norm_")]
        for key in keys:
            x, y = _finite(run.steps, run.values[key])
            _line(ax, x, y, label=key[len("grad/norm_"):])
        if any(np.nanmin(run.values[k]) > 0 for k in keys):
            ax.set_yscale("log")   # norms span orders of magnitude between the first steps and the rest
        _axes(ax, run.title, r"$\|\nabla\theta\|$ (mean over the network's weight slices)")
        ax.legend(fontsize=7, ncol=2 if len(keys) > 8 else 1)
    _save(plt, fig, path)


def plot_trajectory(runs: Sequence[RunDiagnostics], path: "str | Path") -> List[str]:
    """PC1 and PC2 of each run's head-gradient trajectory against step (``plot_eig.py``); returns the runs skipped."""
    shown = [r for r in runs if r.trajectory is not None]
    skipped = [r.label for r in runs if r.trajectory is None]
    if not shown:
        return skipped
    plt = pyplot()
    fig, axes = _grid(plt, len(shown))
    for ax, run in zip(axes, shown):
        proj, ratio = run.pca()
        for i in range(2):
            _line(ax, run.trajectory_steps, proj[:, i], label=f"PC{i + 1} ({100 * ratio[i]:.1f}% of variance)")
        _axes(ax, run.title, "head gradient projected on the PC")
        ax.legend(fontsize=8)
    _save(plt, fig, path)
    return skipped


def write_csv(runs: Sequence[RunDiagnostics], path: "str | Path") -> None:
    """Every ``grad/`` value and trajectory projection in long format: ``run,step,key,value``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "step", "key", "value"])
    for run in runs:
        for i, step in enumerate(run.steps.tolist()):
            for key, v in run.values.items():
                if math.isfinite(v[i]):
                    w.writerow([run.label, step, key, repr(float(v[i]))])   # repr: the logged value exactly
        if run.trajectory is not None:
            proj, _ = run.pca()
            for step, (pc1, pc2) in zip(run.trajectory_steps.tolist(), proj.tolist()):
                w.writerow([run.label, step, "pc1", repr(pc1)])
                w.writerow([run.label, step, "pc2", repr(pc2)])
    atomic_write_bytes(path, buf.getvalue().encode())


# -- terminal ----------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:>10.3f}" if math.isfinite(v) else f"{'-':>10}"


def summarize(runs: Sequence[RunDiagnostics]) -> str:
    """Per run: diagnostic steps, and both ratios at the first, middle and last step and over the last quarter."""
    lines = []
    for run in runs:
        n = len(run.steps)
        picks = [0, (n - 1) // 2, n - 1]
        tail = max(1, math.ceil(n / 4))
        lines.append(f"{run.title}: {n} diagnostic steps, {run.steps[0]} to {run.steps[-1]}")
        header = "".join(f"{'step ' + str(run.steps[i]):>10}" for i in picks)
        lines.append(f"  {'ratio':<16}{header}{'last 1/4':>10}   (mean over steps {run.steps[-tail]} to "
                     f"{run.steps[-1]})")
        for key, name in ((FULL_KEY, "full/smallest"), (REST_KEY, "rest/smallest")):
            v = run.values.get(key, np.full(n, math.nan))
            last = v[-tail:][np.isfinite(v[-tail:])]
            mean = float(last.mean()) if len(last) else math.nan
            lines.append(f"  {name:<16}" + "".join(_fmt(float(v[i])) for i in picks) + _fmt(mean))
        if run.trajectory is not None:
            _, ratio = run.pca()
            lines.append(f"  head-gradient trajectory: {len(run.trajectory_steps)} steps, PC1 explains "
                         f"{100 * ratio[0]:.1f}%, PC2 {100 * ratio[1]:.1f}% of its variance")
        else:
            lines.append(f"  head-gradient trajectory: none (no {TRAJECTORY_FILE}; not in trajectory.png)")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _labels(run_dirs: Sequence[Path], labels: Optional[Sequence[str]]) -> List[str]:
    """Each run's label: the given ones, else the folder names (the paths as given where two names clash)."""
    if labels is not None:
        if len(labels) != len(run_dirs):
            raise SlimBenchError(f"--labels: {len(labels)} labels for {len(run_dirs)} run folders")
        out = list(labels)
    else:
        names = [_name(p) for p in run_dirs]
        out = [name if names.count(name) == 1 else str(p) for name, p in zip(names, run_dirs)]
    if len(set(out)) != len(out):
        raise SlimBenchError(f"labels must differ (the CSV tells runs apart by them), got {out}")
    return out


def load_runs(run_dirs: Sequence["str | Path"], labels: Optional[Sequence[str]] = None) -> List[RunDiagnostics]:
    """``load_diagnostics`` of every run folder, labelled (``labels``, else the folder names)."""
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise SlimBenchError("no run folders given")
    return [load_diagnostics(p, label) for p, label in zip(run_dirs, _labels(run_dirs, labels))]


def write_outputs(runs: Sequence[RunDiagnostics], out: "str | Path | None" = None,
                  overlay: bool = False) -> Dict[str, Path]:
    """Write ratios.png, norms.png, trajectory.png (if any run has one) and diagnostics.csv into ``out``."""
    out = Path(out) if out is not None else DEFAULT_OUT
    if out.exists() and not out.is_dir():
        raise SlimBenchError(f"{out}: exists and is not a folder (expected the output folder)")
    written = {"ratios": out / "ratios.png", "norms": out / "norms.png"}
    plot_ratios(runs, written["ratios"], overlay=overlay)
    plot_norms(runs, written["norms"])
    if any(r.trajectory is not None for r in runs):
        written["trajectory"] = out / "trajectory.png"
        plot_trajectory(runs, written["trajectory"])
    written["csv"] = out / "diagnostics.csv"
    write_csv(runs, written["csv"])
    return written


def diagnose(run_dirs: Sequence["str | Path"], out: "str | Path | None" = None, overlay: bool = False,
             labels: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """Check every run folder, then write the plots and CSV into ``out`` (default runs/diagnose)."""
    return write_outputs(load_runs(run_dirs, labels), out, overlay)
