"""Each loss against a plain reference computation written out here."""
import math

import pytest
import torch

from pretrain.methods.losses import byol_loss, info_nce, soft_cross_entropy, uniformity_loss, width_loss_weights


def test_info_nce_matches_log_softmax_at_the_positive():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=g) * 3
    labels = torch.tensor([0, 3, 6, 1, 0])
    expected = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        expected += -(row[y] - math.log(sum(math.exp(v) for v in row)))
    assert info_nce(logits, labels).item() == pytest.approx(expected / 5, rel=1e-5)


def test_soft_cross_entropy_matches_reference_and_scales_by_student_temperature():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(4, 6, generator=g, requires_grad=True)
    teacher = torch.randn(4, 6, generator=g, requires_grad=True)
    ts, tt = 5.0, 2.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        zt = sum(math.exp(v / tt) for v in t_row)
        zs = sum(math.exp(v / ts) for v in s_row)
        expected += -sum(math.exp(t / tt) / zt * (s / ts - math.log(zs)) for s, t in zip(s_row, t_row))
    expected = expected / 4 * ts ** 2
    loss = soft_cross_entropy(student, teacher, ts, tt)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None  # the teacher is detached


def test_byol_loss_is_normalized_mse():
    g = torch.Generator().manual_seed(2)
    p, z = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g) * 4
    ref = ((p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(dim=1).mean()
    assert byol_loss(p, z).item() == pytest.approx(ref.item(), rel=1e-5)
    assert byol_loss(p, 3 * p).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(p, -p).item() == pytest.approx(4.0, rel=1e-6)


def _uniformity_loop(rows, columns, offset):
    """log of the mean of exp(-2 |a - b|^2) over every (row, column) pair but each row with itself."""
    a = rows / rows.norm(dim=1, keepdim=True)
    b = columns / columns.norm(dim=1, keepdim=True)
    pairs = [torch.exp(-2 * ((a[i] - b[j]) ** 2).sum())
             for i in range(len(a)) for j in range(len(b)) if j != offset + i]
    return torch.log(torch.stack(pairs).mean())


def test_uniformity_loss_matches_a_pairwise_loop_in_value_and_gradient():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 5, generator=g).requires_grad_()
    got, want = uniformity_loss(x), _uniformity_loop(x, x, 0)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    (grad_got,), (grad_want,) = torch.autograd.grad(got, x), torch.autograd.grad(want, x)
    assert torch.allclose(grad_got, grad_want, atol=1e-6)
    # rank 1 of 2: its 6 rows against the gathered batch of 12, where they sit at offset 6
    batch = torch.cat([torch.randn(6, 5, generator=g), x.detach()])
    assert uniformity_loss(x, batch, self_offset=6).item() == pytest.approx(
        _uniformity_loop(x, batch, 6).item(), rel=1e-5)
    # a collapsed batch is the least uniform (every distance 0: log 1); scale does not matter
    assert uniformity_loss(torch.ones(6, 5)).item() == pytest.approx(0.0, abs=1e-6)
    assert got.item() < -1.0 and uniformity_loss(7 * x).item() == pytest.approx(got.item(), rel=1e-5)


def test_slimclr_reweighting_values():
    w = width_loss_weights([1.0, 0.75, 0.5, 0.25])
    assert w == {1.0: 2.5, 0.75: 1.0, 0.5: 1.0, 0.25: 1.0}
    assert width_loss_weights([1.0, 0.5])[1.0] == 1.5
    assert width_loss_weights([1.0, 0.5, 0.25], "proportional") == {1.0: 1.0, 0.5: 0.5, 0.25: 0.25}
    assert width_loss_weights([1.0, 0.5], "uniform") == {1.0: 1.0, 0.5: 1.0}
    with pytest.raises(ValueError, match="proportional"):
        width_loss_weights([1.0], "size")


def upstream_loss_weights(mode, widths):
    """SlimCLR models/utils.py loss_weights_generate, written out from its formulas (a list, in order)."""
    top = max(widths)
    if mode == 1:
        return [round(w / sum(widths), 3) for w in widths]
    if mode == 2:
        return [float(w) for w in widths]
    if mode == 3:
        return [round(w / sum(widths) * len(widths), 3) for w in widths]
    if mode == 5:
        return [1.0 + sum(widths) - top if w == top else 1.0 for w in widths]
    if mode == 6:
        raw = [sum(widths) - sum(widths[:i + 1]) + 1.0 for i in range(len(widths))]
        return [round(r / sum(raw) * len(widths), 3) for r in raw]
    if mode == 7:
        rest = list(widths)
        rest.remove(top)
        return [1.0 + max(rest) if w == top else 1.0 for w in widths]
    return [1.0 for _ in widths]


@pytest.mark.parametrize("name, mode", [("uniform", 0), ("share", 1), ("proportional", 2), ("normalized-share", 3),
                                        ("slimclr", 5), ("narrower-sum", 6), ("full-plus-largest-sub", 7)])
@pytest.mark.parametrize("widths", [[1.0, 0.75, 0.5, 0.25], [1.0, 0.5, 0.25], [1.0, 0.5]])
def test_every_weighting_mode_is_upstreams(name, mode, widths):
    got = width_loss_weights(widths, name)
    assert [got[w] for w in widths] == pytest.approx(upstream_loss_weights(mode, widths), abs=1e-12)
