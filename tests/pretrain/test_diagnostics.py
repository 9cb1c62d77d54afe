"""Interference diagnostics (run.diagnose_every): gradient norms per width against upstream's formula, the
paper's ratios, the head gradient's trajectory file, and what a run logs."""
import json
import math

import pytest
import torch

from pretrain.diagnostics import (TRAJECTORY_FILE, GradientDiagnostics, TrajectoryFile, read_trajectory,
                                  slice_cosine, trace_slices)
from pretrain.methods import build_method
from pretrain.recipe import parse_recipe
from pretrain.models.spec import SubnetSpec
from pretrain.trainer import LOG_FILE, build_encoder, train
from tests.pretrain.test_trainer import tiny_recipe_dict


def tiny_method(name="slimclr-mocov2", widths=(1.0, 0.5, 0.25)):
    data = tiny_recipe_dict(name)
    data["model"]["widths"] = list(widths)
    recipe = parse_recipe(data, "tiny")
    torch.manual_seed(0)
    return build_method(recipe, build_encoder(recipe)).train()


def hand_built_gradients(method):
    """A distinct, reproducible gradient in every trainable parameter."""
    g = torch.Generator().manual_seed(1)
    for p in method.parameters():
        p.grad = torch.randn(p.shape, generator=g) if p.requires_grad else None


def upstream_mean_norm(method, width):
    """``get_grad_norm`` (SlimCLR ``models/utils.py``) for one width, written out from its formula.

    Every trainable non-BatchNorm weight of the online encoder and head: rows ``int(w * out)``, columns
    ``int(w * in)``, the first conv's 3 input channels whole; upstream keeps whole rows for every ``fc``
    layer, but SlimBench's hidden head layer slims its output with the width (``SlimMLP``), so only the
    head's last layer (the fixed embedding) keeps whole rows here.
    """
    norms = []
    head_layers = [n for n, p in method.named_parameters() if n.startswith("head.") and n.endswith("weight")
                   and p.dim() == 2]
    for n, p in method.named_parameters():
        if not p.requires_grad or "weight" not in n or ".bn." in n or p.dim() < 2:
            continue
        dim1, dim2 = int(width * p.shape[0]), int(width * p.shape[1])
        if n == head_layers[-1]:
            dim1 = p.shape[0]
        if p.shape[1] == 3:
            dim2 = p.shape[1]
        norms.append(p.grad[:dim1, :dim2].norm(2).item())
    return sum(norms) / len(norms)


def test_norms_and_ratios_follow_upstream_formula_on_a_hand_built_gradient(tmp_path):
    method = tiny_method()
    hand_built_gradients(method)
    diag = GradientDiagnostics(method, image_size=8, out=tmp_path, write=False)
    record = diag.measure(10, terms=[])
    expected = {w: upstream_mean_norm(method, w) for w in (1.0, 0.5, 0.25)}
    for w, n in expected.items():
        assert record[f"grad/norm_w{w}"] == pytest.approx(n, rel=1e-6)
    full, small = expected[1.0], expected[0.25]
    assert record["grad/ratio_full_smallest"] == pytest.approx(full / small, rel=1e-6)
    assert record["grad/ratio_rest_smallest"] == pytest.approx(math.sqrt(full ** 2 - small ** 2) / small, rel=1e-6)
    s = torch.linalg.svdvals(method.head.layers[-1].weight.grad)
    assert record["grad/head_sv1"] == pytest.approx(float(s[0])) and record["grad/head_sv2"] == pytest.approx(float(s[1]))


def test_traced_slices_are_what_each_width_computes_with():
    method = tiny_method("dspnet-byol", widths=(1.0, 0.5))
    slices = trace_slices(method, SubnetSpec(0.5), image_size=8)
    weights = dict(method.named_parameters())
    assert slices["encoder.conv1.weight"][1:] == (32, 3)            # stem: 64 filters x 0.5 over RGB
    assert slices["encoder.layer2.0.conv1.weight"][1:] == (64, 32)
    assert slices["projector.layers.0.weight"][1:] == (8, 256)      # hidden 16 x 0.5 over 512 x 0.5 features
    assert slices["predictor.layers.3.weight"][1:] == (8, 8)        # the last layer keeps its output
    assert all(weights[n] is w for n, (w, _, _) in slices.items())
    shallow = trace_slices(method, SubnetSpec.parse("w0.5-d1.1.1.1"), image_size=8)
    assert "encoder.layer1.1.conv1.weight" in slices and "encoder.layer1.1.conv1.weight" not in shallow
    assert not any(n.startswith("target_") for n in slices)         # the EMA copy gets no gradient


def test_slice_cosine_against_a_hand_computation():
    a = {"x": torch.tensor([[1.0, 2.0, 9.0], [3.0, 4.0, 9.0], [9.0, 9.0, 9.0]])}
    b = {"x": torch.tensor([[2.0, 0.0, 5.0], [1.0, -1.0, 5.0], [5.0, 5.0, 5.0]])}
    w = torch.zeros(3, 3)
    got = slice_cosine(a, b, {"x": (w, 2, 2)})
    u, v = torch.tensor([1.0, 2, 3, 4]), torch.tensor([2.0, 0, 1, -1])
    assert got == pytest.approx(float(u @ v / (u.norm() * v.norm())))


def test_trajectory_file_appends_ignores_a_torn_record_and_drops_steps_past_a_resume(tmp_path):
    path = tmp_path / TRAJECTORY_FILE
    traj = TrajectoryFile(path, (2, 3))
    grads = [torch.full((2, 3), float(i)) for i in range(3)]
    for step, g in zip((5, 10, 15), grads):
        traj.append(step, g)
    with open(path, "ab") as f:
        f.write(b"\x01\x02\x03")   # a write killed half-way
    steps, rows = read_trajectory(path)
    assert steps.tolist() == [5, 10, 15] and rows.shape == (3, 6) and rows[2].tolist() == [2.0] * 6
    TrajectoryFile(path, (2, 3), resume_step=10).append(15, grads[0])
    steps, rows = read_trajectory(path)
    assert steps.tolist() == [5, 10, 15] and rows[2].tolist() == [0.0] * 6


@pytest.mark.parametrize("name", ["slimclr-mocov2", "dspnet-byol"])
def test_a_run_logs_diagnostics_on_its_diagnostic_steps_only(tmp_path, name):
    recipe = parse_recipe(tiny_recipe_dict(name, max_steps=4, diagnose_every=2, diagnose_cosine=True,
                                           log_every=3), "tiny")
    train(recipe, tmp_path, progress=False)
    lines = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    diagnosed = [line["step"] for line in lines if "grad/norm_w1.0" in line]
    assert diagnosed == [2, 4] and [line["step"] for line in lines if "loss" in line] == [3, 4]
    last = lines[-1]
    assert {"grad/norm_w0.5", "grad/ratio_full_smallest", "grad/head_sv1"} <= last.keys()
    assert -1.0 <= last["grad/cos_w0.5" if name == "slimclr-mocov2" else
                        next(k for k in last if k.startswith("grad/cos_"))] <= 1.0
    steps, rows = read_trajectory(tmp_path / TRAJECTORY_FILE)
    assert steps.tolist() == [2, 4] and rows.shape[1] == 8 * 16
