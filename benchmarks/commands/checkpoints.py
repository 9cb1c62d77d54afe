"""`bench init`, `bench import`, `bench export`, `bench list subnets`: checkpoints and sub-networks."""
from __future__ import annotations

import argparse
from pathlib import Path

# the layouts of pretrain.checkpoints.importers (listed here so `bench --help` does not import torch)
LAYOUTS = ("moco", "mocov3", "solo-learn", "mmselfsup", "vissl", "lightly", "timm", "torchvision", "slimclr",
           "slimclr-linear")


def register(sub, list_sub) -> None:
    """Add the checkpoint commands to the `bench` parser."""
    p = sub.add_parser("init", help="write a random-initialised slimmable checkpoint (the baseline row)")
    p.add_argument("--arch", default="slim_resnet50", help="slim_resnet{18,34,50,101}")
    p.add_argument("--widths", default="1.0,0.75,0.5,0.25", help="descending width list")
    p.add_argument("--stem", default="imagenet", choices=["imagenet", "small"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("import", help="convert a foreign checkpoint (MoCo, solo-learn, MMSelfSup, VISSL, lightly, "
                                      "timm, torchvision, SlimCLR); --from auto reads its keys")
    p.add_argument("--from", dest="source_format", required=True, metavar="LAYOUT",
                   help="auto, or one of: " + ", ".join(LAYOUTS))
    p.add_argument("src", type=Path, help=".pth / .pth.tar / .ckpt (zip or legacy torch format) or .safetensors")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--width", type=float, default=None,
                   help="torchvision/timm: the width of a plain narrow network (default: read from its channels)")
    p.add_argument("--blocks", help="torchvision/timm: blocks per stage of a shallower network, e.g. 2.2.2.2 "
                                    "(default: read from its keys)")
    p.add_argument("--encoder", choices=("online", "momentum", "ema"), default="online",
                   help="which copy of the encoder to import: the online one (default), the momentum / target / "
                        "teacher copy (MoCo's encoder_k, BYOL's target, ...) or timm's model EMA (state_dict_ema)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="extract one sub-network for torchvision, Detectron2 or MMSeg")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--subnet", required=True, help="e.g. w0.5 or w1.0-d2.2.2.2")
    p.add_argument("--to", required=True, help="torchvision | detectron2 | mmseg")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--calib-data", type=Path, help="ImageFolder for BN calibration of unlisted widths and shallower networks")
    p.add_argument("--calib-batches", type=int, default=50)
    p.add_argument("--resolution", type=int, default=224)
    p.set_defaults(func=cmd_export)

    p = list_sub.add_parser("subnets", help="every sub-network of a checkpoint with params and MACs")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--resolution", type=int, help="input size for MACs (default: 224 for the ImageNet stem, "
                                                    "32 for the small stem, as the complexity suite)")
    p.add_argument("--depths", default="", help="extra depth variants to list, e.g. 2.2.2.2;1.1.1.1")
    p.set_defaults(func=cmd_list_subnets)


def cmd_init(args: argparse.Namespace) -> int:
    import torch

    from pretrain.checkpoints.format import Checkpoint, save_checkpoint
    from pretrain.models.resnet import SlimResNet, parse_arch

    torch.manual_seed(args.seed)
    widths = [float(w) for w in args.widths.split(",")]
    model = SlimResNet(parse_arch(args.arch), widths=widths, stem=args.stem)
    ckpt = Checkpoint.from_model(model, method="random", config={"seed": args.seed})
    save_checkpoint(ckpt, args.out)
    print(f"wrote {args.out}: random-init {args.arch} widths {widths}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from pretrain.checkpoints.format import save_checkpoint
    from pretrain.checkpoints.importers import ImportOptions, import_file

    blocks = tuple(int(b) for b in args.blocks.split(".")) if args.blocks else None
    ckpt, importer, claim = import_file(args.src, args.source_format, ImportOptions(args.width, blocks, args.encoder))
    if claim is not None:
        print(f"layout: {importer.name} ({claim.reason})")
    print(f"read as {importer.name}: layout defined by {importer.defined_by}")
    if "encoder" in ckpt.config:
        print(f"encoder: {ckpt.config['encoder']}" + (f" ({ckpt.config['prefix']}*)" if ckpt.config.get("prefix") else ""))
    print(describe_dropped(ckpt.extra, ckpt.config.get("prefix", "")))
    save_checkpoint(ckpt, args.out)
    probe = f", with its stored probe for {', '.join(ckpt.probe['subnets'])}" if ckpt.probe else ""
    print(f"wrote {args.out}: {ckpt.arch['arch']} widths {ckpt.widths} ({ckpt.method}){probe}")
    return 0


def describe_dropped(extra: dict, prefix: str = "") -> str:
    """One line: what an import left out (keys grouped by module, top-level entries, objects not unpickled)."""
    keys = extra.get("dropped_keys", []) + extra.get("dropped_outside_encoder", [])
    groups: dict = {}
    for k in keys:
        # a head inside the encoder's prefix (MoCo's encoder_q.fc) is named by its own module
        depth = len(prefix.split(".")) if prefix and k.startswith(prefix) else (2 if k.startswith("module.") else 1)
        parts = k.split(".")
        head = ".".join(parts[:depth]) + ".*" if len(parts) > depth else k
        groups[head] = groups.get(head, 0) + 1
    shown = ", ".join(f"{g} ({n})" if n > 1 else g for g, n in groups.items())
    parts = [f"dropped {len(keys)} keys" + (f": {shown}" if keys else "")]
    if extra.get("dropped_entries"):
        parts.append(f"entries {', '.join(extra['dropped_entries'])}")
    if extra.get("not_unpickled"):
        parts.append(f"read as inert placeholders (never unpickled): {', '.join(extra['not_unpickled'])}")
    return "; ".join(parts)


def cmd_export(args: argparse.Namespace) -> int:
    from pretrain.checkpoints.format import load_checkpoint
    from pretrain.checkpoints.extract import extract
    from transfer.exporters import get_exporter

    exporter = get_exporter(args.to)
    ckpt = load_checkpoint(args.checkpoint)
    loader = None
    if args.calib_data is not None:
        from transfer.data import calibration_loader
        loader = calibration_loader(args.calib_data, args.resolution)
    plain = extract(ckpt, args.subnet, calib_loader=loader, calib_batches=args.calib_batches)
    out = exporter(plain, args.out)
    print(f"wrote {out}: {args.subnet} of {args.checkpoint} for {args.to}")
    return 0


def cmd_list_subnets(args: argparse.Namespace) -> int:
    from pretrain.checkpoints.format import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.build_model()
    depths = [tuple(int(b) for b in d.split(".")) for d in args.depths.split(";") if d.strip()]
    desired = [model.check_subnet(d) for d in ckpt.desired]
    subnets = list(dict.fromkeys(desired + model.subnets(depths)))
    from pretrain.models.complexity import default_resolution

    resolution = args.resolution or default_resolution(model.stem)
    print(format_subnet_table(model, ckpt, subnets, set(desired), resolution))
    return 0


def format_subnet_table(model, ckpt, subnets, desired, resolution: int) -> str:
    """The table `bench list subnets` prints: desired networks first, marked with *."""
    from pretrain.models.complexity import complexity_table
    from pretrain.cost import describe_cost

    individual = ckpt.extra.get("individual")
    lines = [f"{ckpt.path}: {model.arch}, method {ckpt.method}, widths {model.widths} (stored order), "
             f"stem {model.stem}; MACs at {resolution}x{resolution}",
             describe_cost(ckpt.extra.get("cost"))]
    if individual:
        lines.append(f"individual baseline {individual['subnet']} of recipe {individual['of_recipe_digest'][:12]}")
    lines.append(f"{'subnet':<22}{'params (M)':>12}{'MACs (G)':>12}  stage channels")
    for spec, c in complexity_table(model, subnets, resolution):
        mark = "*" if spec in desired else " "
        chans = "/".join(str(x) for x in model.plan(spec).stage_channels)
        lines.append(f"{mark}{str(spec):<21}{c.params / 1e6:>12.2f}{c.macs / 1e9:>12.3f}  {chans}")
    if desired:
        lines.append("* desired network (recorded in the checkpoint)")
    return "\n".join(lines)
