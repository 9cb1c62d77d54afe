"""Extracted w1.0 vs torchvision ResNet-50 inference, and slimmable vs extracted per width."""
from __future__ import annotations

import torch
import torchvision

from pretrain.models.resnet import SlimResNet
from pretrain.checkpoints.extract import extract

from benchmarks.perf.timing import median_time


def run(batch: int = 8, resolution: int = 224, repeats: int = 10) -> dict:
    """Print and return the ratios."""
    torch.manual_seed(0)
    model = SlimResNet(50, num_classes=1000).eval()
    x = torch.randn(batch, 3, resolution, resolution)
    tv = torchvision.models.resnet50().eval()
    plain = extract(model, "w1.0")
    tv.load_state_dict(plain.state_dict())
    results = {}
    with torch.inference_mode():
        t_tv = median_time(lambda: tv(x), repeats)
        t_plain = median_time(lambda: plain(x), repeats)
        results["extracted_w1.0/torchvision"] = t_plain / t_tv
        print(f"extracted w1.0 / torchvision resnet50 inference: {t_plain / t_tv:.3f} "
              f"(batch {batch}, {resolution}px, {torch.get_num_threads()} threads)")
        for w in model.widths:
            spec = f"w{w}"
            sub = extract(model, spec)
            model.set_subnet(spec)
            t_slim = median_time(lambda: model(x), repeats)
            t_sub = median_time(lambda: sub(x), repeats)
            results[f"slim/extracted {spec}"] = t_slim / t_sub
            print(f"slimmable / extracted at {spec}: {t_slim / t_sub:.3f}")
    return results
