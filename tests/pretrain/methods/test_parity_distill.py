"""SlimCLR's distillations, SimCLR's loss and full distillation, against upstream's formulas written out here.

Sources (mzhaoshuai/SlimCLR): ``models/distiller/factory.py`` ``choose_kd_loss`` (which loss, at which
fixed parameters: DKD alpha 1, beta 0.5, T 1; ATKD version 2, multiplier 2, T 4), ``KD.py``
``kd_distill_loss_v2``, ``DKD.py`` ``dkd_distill_loss``, ``ATKD.py`` ``atkd_distill_loss``;
``models/s_simclr.py`` ``contrastive_loss`` (the 2N x (2N - 1) similarities, labels ``N + i - 1`` / ``i``);
``models/s_moco.py`` ``ssl_loss`` (teachers: the full width, and with ``full_distill`` every wider
sub-network; the distillation averaged over them). Each reference below is computed with Python floats
from those formulas, never by calling SlimBench's losses.
"""
import math

import pytest
import torch

from pretrain.methods.losses import distill_loss
from tests.pretrain.methods.test_methods import CTX, make, views


def softmax(row, t=1.0):
    top = max(v / t for v in row)
    e = [math.exp(v / t - top) for v in row]
    return [x / sum(e) for x in e]


def ref_kd(student, teacher, ts, tt):
    """kd_distill_loss_v2: -sum softmax(t / T_t) log softmax(s / T_s), batch mean, times T_s^2."""
    rows = [-sum(p * math.log(q) for p, q in zip(softmax(t, tt), softmax(s, ts))) for s, t in zip(student, teacher)]
    return sum(rows) / len(rows) * ts ** 2


def ref_mse(student, teacher):
    diffs = [(a - b) ** 2 for s, t in zip(student, teacher) for a, b in zip(s, t)]
    return sum(diffs) / len(diffs)


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def ref_dkd(student, teacher, labels, alpha=1.0, beta=0.5):
    """dkd_distill_loss at T 1: alpha KL of (target, rest) + beta KL over the non-target classes, batch mean."""
    tckd = nckd = 0.0
    for s, t, y in zip(student, teacher, labels):
        ps, pt = softmax(s), softmax(t)
        tckd += kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        others = [i for i in range(len(s)) if i != y]
        nckd += kl(softmax([t[i] for i in others]), softmax([s[i] for i in others]))
    return (alpha * tckd + beta * nckd) / len(student)


def ref_atkd(student, teacher, multiplier=2.0, temperature=4.0, eps=1e-5):
    """atkd_distill_loss version 2: KL of the layer-normed logits times 2 at T 4, batch mean, times T^2."""
    def standardize(row):
        mu = sum(row) / len(row)
        var = sum((v - mu) ** 2 for v in row) / len(row)
        return [(v - mu) / math.sqrt(var + eps) * multiplier for v in row]
    rows = [kl(softmax(standardize(t), temperature), softmax(standardize(s), temperature))
            for s, t in zip(student, teacher)]
    return sum(rows) / len(rows) * temperature ** 2


def logits_batch(seed=0, n=5, c=9):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 2, torch.randn(n, c, generator=g) * 2, torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("kind", ["kd", "mse", "dkd", "atkd"])
def test_each_distillation_is_upstreams_formula(kind):
    student, teacher, labels = logits_batch()
    s, t, y = student.tolist(), teacher.tolist(), labels.tolist()
    want = {"kd": lambda: ref_kd(s, t, 5.0, 2.0), "mse": lambda: ref_mse(s, t),
            "dkd": lambda: ref_dkd(s, t, y), "atkd": lambda: ref_atkd(s, t)}[kind]()
    student.requires_grad_()
    got = distill_loss(kind, student, teacher, labels, student_temp=5.0, teacher_temp=2.0)
    assert got.item() == pytest.approx(want, rel=1e-5)
    got.backward()
    assert student.grad.abs().sum() > 0   # a loss the student learns from


def ref_nt_xent(z1, z2, temperature):
    """SimCLR's eq. 1: l(i, j) = -log exp(s_ij / T) / sum_{k != i} exp(s_ik / T), mean over the 2N views."""
    z = z1 + z2
    n, total = len(z1), 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = {k: sum(a * b for a, b in zip(z[i], z[k])) / temperature for k in range(2 * n) if k != i}
        total += -(sims[j] - math.log(sum(math.exp(v) for v in sims.values())))
    return total / (2 * n)


def test_simclr_loss_of_every_width_is_nt_xent_of_its_embeddings():
    method = make("slimclr-simclr", widths=(1.0, 0.75, 0.5), temperature=0.1, distill="none")
    method.recorded = {}
    loss, terms = method(*views(n=6), CTX)
    expected_total = 0.0
    for w, weight in (("1.0", 1 + 0.75 + 0.5), ("0.75", 1.0), ("0.5", 1.0)):
        z1, z2 = method.recorded[f"z1/w{w}"].tolist(), method.recorded[f"z2/w{w}"].tolist()
        want = ref_nt_xent(z1, z2, 0.1)
        assert terms[f"w{w}/infonce"].item() == pytest.approx(want, rel=1e-5)
        expected_total += weight * want
    assert loss.item() == pytest.approx(expected_total, rel=1e-5)


def simclr_logits(recorded, width):
    """s_simclr.py contrastive_loss: the cosines of all 2N views but each with itself, row by row."""
    z = recorded[f"z1/w{width}"].tolist() + recorded[f"z2/w{width}"].tolist()
    return [[sum(a * b for a, b in zip(z[i], z[k])) for k in range(len(z)) if k != i] for i in range(len(z))]


@pytest.mark.parametrize("full", [False, True])
def test_full_distillation_averages_every_wider_teacher(full):
    method = make("slimclr-simclr", widths=(1.0, 0.75, 0.5), distill="kd", full_distill=full,
                  teacher_temp=5.0, student_temp=5.0)
    method.recorded = {}
    _, terms = method(*views(n=6), CTX)
    logits = {w: simclr_logits(method.recorded, w) for w in ("1.0", "0.75", "0.5")}
    assert terms["w0.75/kd"].item() == pytest.approx(ref_kd(logits["0.75"], logits["1.0"], 5.0, 5.0), rel=1e-5)
    teachers = ["1.0", "0.75"] if full else ["1.0"]
    want = sum(ref_kd(logits["0.5"], logits[t], 5.0, 5.0) for t in teachers) / len(teachers)
    assert terms["w0.5/kd"].item() == pytest.approx(want, rel=1e-5)


def test_feature_distillation_compares_the_normalized_embeddings():
    """s_moco.py with mse_loss=1: F.mse_loss(q_w, q_full) on the normalized queries, not the logits."""
    method = make("slimclr-mocov2", widths=(1.0, 0.5), distill="mse", distill_on="features")
    method.recorded = {}
    _, terms = method(*views(), CTX)
    q_full, q_sub = method.recorded["q/w1.0"].tolist(), method.recorded["q/w0.5"].tolist()
    assert terms["w0.5/mse"].item() == pytest.approx(ref_mse(q_sub, q_full), rel=1e-5)


@pytest.mark.parametrize("distill,on", [("kd", "logits"), ("kd", "features"), ("mse", "logits"),
                                        ("mse", "features"), ("dkd", "logits"), ("atkd", "logits")])
def test_slimclr_simclr_learns_a_fixed_batch_with_every_distillation(distill, on):
    method = make("slimclr-simclr", widths=(1.0, 0.5), distill=distill, distill_on=on)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    batch, losses = views(n=8, size=12), []
    for step in range(8):
        loss, terms = method(*batch, CTX)
        assert torch.isfinite(loss) and all(torch.isfinite(v) for v in terms.values())
        assert f"w0.5/{distill}" in terms
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
