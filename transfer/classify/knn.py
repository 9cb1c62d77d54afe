"""Weighted cosine kNN classification (InstDisc): neighbours vote with weight exp(similarity / T)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                num_classes: int, k: int = 20, temperature: float = 0.07, batch_size: int = 1024) -> torch.Tensor:
    """Class scores (N_test x num_classes) of the weighted kNN vote over L2-normalised features."""
    train = F.normalize(train_feats.float(), dim=1)
    k = min(k, len(train))
    scores = []
    for i in range(0, len(test_feats), batch_size):
        test = F.normalize(test_feats[i:i + batch_size].float().to(train.device), dim=1)
        sim, idx = (test @ train.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        votes = torch.zeros(len(test), num_classes, device=train.device)
        votes.scatter_add_(1, train_labels.to(train.device)[idx], weights)
        scores.append(votes)
    return torch.cat(scores) if scores else torch.zeros(0, num_classes)
