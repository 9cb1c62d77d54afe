"""`bench demo`: the embedded default job of `make demo`."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub, list_sub) -> None:
    """Add `bench demo` to the parser."""
    p = sub.add_parser("demo", help="run the demo end to end on the embedded default")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from benchmarks.commands.checkpoints import format_subnet_table
    from pretrain.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from pretrain.resnet import SlimResNet

    path = args.out / "random-init.pt"
    if not path.exists():
        torch.manual_seed(0)
        model = SlimResNet(18, widths=[1.0, 0.75, 0.5, 0.25], stem="small")
        save_checkpoint(Checkpoint.from_model(model, method="random", config={"seed": 0}), path)
    ckpt = load_checkpoint(path)
    model = ckpt.build_model()
    print(format_subnet_table(model, ckpt, model.subnets(), set(), 28))
    return 0
