"""The switchable probe's loss and training, kNN voting and top-k counting on known data."""
import functools

import pytest
import torch
import torch.nn.functional as F

from pretrain.models.spec import SubnetSpec
from transfer.classify.knn import knn_predict
from transfer.classify.metrics import topk_correct
from transfer.classify.probe import SwitchableProbe, soft_cross_entropy, switchable_loss, teacher_index
from transfer.protocols.linear import ProbeParams, evaluate_on_features, train_probe_on_features


def test_switchable_loss_matches_slimclr_reference():
    torch.manual_seed(0)
    logits = [torch.randn(8, 5, requires_grad=True) for _ in range(3)]
    y = torch.randint(0, 5, (8,))
    loss = switchable_loss(logits, y, teacher=0)
    p = F.softmax(logits[0], 1).detach()
    ref = F.cross_entropy(logits[0], y)
    for l in logits[1:]:
        ref = ref + (F.cross_entropy(l, y) - (p * F.log_softmax(l, 1)).sum(1).mean()) / 2
    assert torch.allclose(loss, ref)
    loss.backward()  # the teacher's prediction is detached: its gradient comes from its own CE only
    g = torch.autograd.grad(F.cross_entropy(logits[0], y), logits[0])[0]
    assert torch.allclose(logits[0].grad, g)
    assert torch.allclose(switchable_loss(logits, y, None), sum(F.cross_entropy(l, y) for l in logits))


def test_soft_cross_entropy_of_one_hot_is_cross_entropy():
    logits, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    assert torch.allclose(soft_cross_entropy(logits, F.one_hot(y, 3).float()), F.cross_entropy(logits, y))


def test_teacher_is_widest_full_depth():
    specs = [SubnetSpec.parse(s) for s in ("w0.5", "w1.0-d1.1.1.1", "w0.75")]
    assert teacher_index(specs) == 2
    assert teacher_index(specs[:1]) is None


@pytest.mark.parametrize("feature_norm", [False, True])
def test_probe_learns_separable_features(feature_norm):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 3
    y = torch.arange(400) % 4
    feats = [centers[y] + torch.randn(400, 16, generator=g), (centers[y] + torch.randn(400, 16, generator=g))[:, :8]]
    if feature_norm:  # a narrow width with 1000x smaller features learns at the same learning rate
        feats[1] = feats[1] * 1e-3
    params = ProbeParams(epochs=15, batch_size=32, lr=0.5, milestones=[10], feature_norm=feature_norm)
    probe = train_probe_on_features(feats, y, 4, params, functools.partial(switchable_loss, teacher=0),
                                    device=torch.device("cpu"))
    assert isinstance(probe, SwitchableProbe) and len(probe.heads) == 2
    accs = evaluate_on_features(probe, feats, y, torch.device("cpu"))
    assert accs[0]["top1"] > 95 and accs[1]["top1"] > 90
    assert all(a["top5"] == 100.0 for a in accs)  # 4 classes: top-5 is clipped to 4 and always right


def test_knn_on_duplicated_points_is_exact():
    g = torch.Generator().manual_seed(1)
    train = torch.randn(50, 32, generator=g)
    labels = torch.randint(0, 5, (50,), generator=g)
    scores = knn_predict(train, labels, train.clone(), 5, k=1)
    assert torch.equal(scores.argmax(1), labels)
    # k=20 with a sharp temperature: the duplicate's weight exp(1/T) dominates every other neighbour
    scores = knn_predict(train, labels, train.clone(), 5, k=20, temperature=0.01, batch_size=7)
    assert torch.equal(scores.argmax(1), labels)


def test_knn_weights_votes_by_similarity():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    scores = knn_predict(train, labels, torch.tensor([[0.2, 1.0]]), 2, k=3, temperature=0.1)
    assert scores.argmax(1).item() == 1  # one close neighbour outweighs two far ones
    sims = F.normalize(train, dim=1) @ F.normalize(torch.tensor([0.2, 1.0]), dim=0)
    assert scores[0, 1].item() == pytest.approx(float((sims[2] / 0.1).exp()), rel=1e-5)


def test_topk_correct_counts():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.3, 0.3, 0.4]])
    assert topk_correct(logits, torch.tensor([1, 1, 0]), ks=(1, 2, 5)) == {1: 1, 2: 3, 5: 3}
