"""A quick kNN probe of frozen features, to check that a pretraining run learned something.

This is a sanity check for recipes, not a benchmark protocol (those live in
``transfer/protocols``): cosine kNN (k=20, T=0.07, weighted votes) on Fashion-MNIST, every width
of one or more checkpoints, evaluated in eval mode on un-augmented images.

    python -m pretrain.probe runs/pretrain/demo-slimclr-mocov2/checkpoint.pt random.pt
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import transforms as T

from pretrain.data.augment import IMAGENET_MEAN, IMAGENET_STD
from pretrain.checkpoints.format import load_checkpoint
from pretrain.data.datasets import FashionMNIST
from pretrain.models.resnet import SlimResNet
from pretrain.models.spec import SubnetSpec


@torch.no_grad()
def features(model: SlimResNet, loader: DataLoader) -> tuple:
    """L2-normalised pooled features and labels of every image in ``loader``."""
    feats, labels = [], []
    for images, targets in loader:
        feats.append(F.normalize(model(images), dim=1))
        labels.append(targets)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, num_classes: int = 10) -> float:
    """Top-1 accuracy of weighted cosine kNN (InstDisc's vote: ``exp(sim / T)``)."""
    sim = test_f @ train_f.T
    top, idx = sim.topk(k, dim=1)
    votes = torch.zeros(test_f.shape[0], num_classes).scatter_add_(1, train_y[idx], (top / temperature).exp())
    return (votes.argmax(dim=1) == test_y).float().mean().item()


def probe(path: "str | Path", image_size: int = 28, train_images: int = 5000, test_images: int = 1000,
          data_root: Optional[Path] = None) -> Dict[str, float]:
    """kNN accuracy of every stored width of the checkpoint at ``path``."""
    model = load_checkpoint(path).build_model().eval()
    tf = T.Compose([T.Resize(image_size, antialias=True), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    train = DataLoader(FashionMNIST(data_root, "train", tf, limit=train_images), batch_size=250)
    test = DataLoader(FashionMNIST(data_root, "test", tf, limit=test_images), batch_size=250)
    out = {}
    for w in model.widths:
        with model.subnet(SubnetSpec(w)):
            out[f"w{w}"] = knn_accuracy(*features(model, train), *features(model, test))
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pretrain.probe", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--data-root", type=Path)
    args = parser.parse_args(argv)
    for path in args.checkpoints:
        acc = probe(path, args.image_size, args.train_images, args.test_images, args.data_root)
        print(f"{path}: kNN top-1 " + "  ".join(f"{k} {v:.4f}" for k, v in acc.items()), flush=True)


if __name__ == "__main__":
    main()
