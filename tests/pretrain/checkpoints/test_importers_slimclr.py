"""SlimCLR's releases from files: the pretraining layout and the "-Linear" layout with its switchable probe,
which the ``stored-probe`` suite evaluates on a validation ImageFolder without training.

The "-Linear" writer rebuilds mzhaoshuai/SlimCLR's layout: ``s_resnet.Model`` with ``--slim_fc
supervised_switch`` (``models/backbones/s_resnet.py`` lines 114-134, 188-190: ``conv1``, ``bn1.bn.{i}``,
``features.{k}``, ``fc.linears.{i}``), DDP-wrapped (``module.``), saved by ``main_ssl_lincls.py`` lines
272-279 as ``{'epoch', 'global_step', 'arch', 'state_dict', 'best_acc1', 'optimizer'}``.
"""
import pytest
import torch

from benchmarks.cli import main
from benchmarks.results.store import ResultsStore
from pretrain.checkpoints.format import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from pretrain.checkpoints.importers import import_file
from pretrain.models.resnet import SlimResNet
from pretrain.checkpoints.extract import extract
from tests.conftest import randomize_bn
from tests.pretrain.checkpoints.test_importers import upstream_slimclr_state_dict
from tests.transfer.conftest import make_image_folder
from transfer.data import IMAGENET_MEAN, IMAGENET_STD

WIDTHS = [1.0, 0.5]


def slim_source(classes: int = 3, depth: int = 18):
    """A seeded SlimCLR-style ResNet of two widths with one linear layer per width (SwitchableLinear);
    the releases are R50s, the layout is the same at every depth and R18 keeps the tests fast."""
    torch.manual_seed(0)
    model = randomize_bn(SlimResNet(depth, widths=WIDTHS)).eval()
    linears = [torch.nn.Linear(int((2048 if depth >= 50 else 512) * w), classes) for w in WIDTHS]
    return model, linears


def write_slimclr_linear(model, linears, path, legacy=False):
    sd = upstream_slimclr_state_dict(model, "module.")
    del sd["module.fc.0.weight"]   # the pretraining MLP; a -Linear file has the probe instead
    for i, lin in enumerate(linears):
        sd[f"module.fc.linears.{i}.weight"] = lin.weight.detach().clone()
        sd[f"module.fc.linears.{i}.bias"] = lin.bias.detach().clone()
    torch.save({"epoch": 100, "global_step": 125100, "arch": "s_resnet", "state_dict": sd, "best_acc1": 67.25,
                "optimizer": {"state": {}, "param_groups": []}}, path, _use_new_zipfile_serialization=not legacy)


def test_slimclr_pretraining_release_from_a_legacy_file(tmp_path):
    model, _ = slim_source(depth=50)
    sd = upstream_slimclr_state_dict(model, "module.encoder_q.")
    sd.update({"module.queue": torch.randn(128, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    torch.save({"epoch": 200, "state_dict": sd}, tmp_path / "slimclr.pth.tar", _use_new_zipfile_serialization=False)
    ckpt, importer, claim = import_file(tmp_path / "slimclr.pth.tar")
    assert importer.name == "slimclr" and ckpt.widths == WIDTHS and ckpt.method == "import:slimclr-mocov2"
    assert ckpt.extra["dropped_outside_encoder"] == ["module.queue", "module.queue_ptr"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for spec in ("w1.0", "w0.5"):
            assert (extract(ckpt, spec)(x) - extract(model, spec)(x)).abs().max().item() == 0.0


@pytest.mark.parametrize("legacy", [False, True])
def test_slimclr_linear_keeps_the_probe_and_its_logits(tmp_path, legacy):
    model, linears = slim_source()
    write_slimclr_linear(model, linears, tmp_path / "lincls.pth.tar", legacy)
    ckpt, importer, claim = import_file(tmp_path / "lincls.pth.tar")
    assert importer.name == "slimclr-linear" and "fc.linears" in claim.reason
    assert ckpt.probe["subnets"] == ["w1.0", "w0.5"] and ckpt.probe["num_classes"] == 3
    assert ckpt.extra["file_best_acc1"] == 67.25 and "optimizer" in ckpt.extra["dropped_entries"]
    save_checkpoint(ckpt, tmp_path / "c.pt")
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw["format_version"] == 2
    loaded = load_checkpoint(tmp_path / "c.pt")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for i, spec in enumerate(("w1.0", "w0.5")):
            net = extract(loaded, spec).eval()
            feats = torch.flatten(net.avgpool(net.forward_features(x)), 1)
            head = loaded.probe["state_dict"]
            got = feats @ head[f"heads.{i}.weight"].T + head[f"heads.{i}.bias"]
            ref_net = extract(model, spec).eval()
            ref = linears[i](torch.flatten(ref_net.avgpool(ref_net.forward_features(x)), 1))
            assert (got - ref).abs().max().item() == 0.0


def test_a_version_1_file_still_reads_and_a_bad_probe_is_refused(tmp_path):
    model, _ = slim_source()
    ckpt = Checkpoint.from_model(model)
    save_checkpoint(ckpt, tmp_path / "v1.pt")
    assert torch.load(tmp_path / "v1.pt", weights_only=True)["format_version"] == 1
    assert load_checkpoint(tmp_path / "v1.pt").probe is None
    d = ckpt.to_dict()
    d.update(format_version=2, probe={"subnets": ["w1.0"], "num_classes": 3, "state_dict": {}})
    torch.save(d, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"probe head 0 \(w1.0\) needs heads.0.weight of shape \[3, features\]"):
        load_checkpoint(tmp_path / "bad.pt")


def reference_top1(model, linears, root, size):
    """Top-1 computed here, independently of the protocol: SlimCLR's val transform (Resize, CenterCrop,
    ToTensor, Normalize; dataset/dataloader.py lines 213-218) at this size, each width's own layer."""
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    classes = sorted(p.name for p in (root / "val").iterdir())
    images = [(tf(Image.open(f).convert("RGB")), c) for c, name in enumerate(classes)
              for f in sorted((root / "val" / name).iterdir())]
    x = torch.stack([im for im, _ in images])
    y = torch.tensor([c for _, c in images])
    out = {}
    with torch.no_grad():
        for i, w in enumerate(WIDTHS):
            net = extract(model, f"w{w}").eval()
            logits = linears[i](torch.flatten(net.avgpool(net.forward_features(x)), 1))
            out[f"w{w}"] = 100.0 * (logits.argmax(1) == y).float().mean().item()
    return out


def test_stored_probe_suite_evaluates_an_imported_release(tmp_path, capsys):
    model, linears = slim_source()
    data = make_image_folder(tmp_path / "data", per_class=4, size=40, classes=3, splits=("val",))
    with torch.no_grad():   # a probe that is right on some images and wrong on others at each width
        for lin in linears:
            lin.weight.normal_(0, 0.05)
    write_slimclr_linear(model, linears, tmp_path / "lincls.pth.tar")
    assert main(["import", "--from", "auto", str(tmp_path / "lincls.pth.tar"), "--out", str(tmp_path / "c.pt")]) == 0
    db = tmp_path / "results.db"
    assert main(["run", "--suite", "imagenet-stored-probe", "--checkpoint", str(tmp_path / "c.pt"),
                 "--data-root", str(data), "--db", str(db), "--out", str(tmp_path / "runs"), "--device", "cpu",
                 "dataset.resolution=32", "dataset.resize=32", "params.workers=0"]) == 0
    rows = {(r["subnet"], r["metric"]): r["value"] for r in ResultsStore(db).rows() if r["status"] == "finished"}
    expected = reference_top1(model, linears, data, 32)
    assert {s: rows[(s, "top1")] for s in expected} == pytest.approx(expected)
    assert rows[("w0.5", "top5")] == 100.0   # 3 classes


def test_stored_probe_refuses_a_checkpoint_without_one_or_a_width_it_lacks(tmp_path, capsys):
    model, linears = slim_source()
    save_checkpoint(Checkpoint.from_model(model), tmp_path / "c.pt")
    write_slimclr_linear(model, linears, tmp_path / "lincls.pth")
    save_checkpoint(import_file(tmp_path / "lincls.pth")[0], tmp_path / "p.pt")
    data = make_image_folder(tmp_path / "data", per_class=1, size=8, classes=3, splits=("val",))
    run = ["run", "--suite", "imagenet-stored-probe", "--data-root", str(data), "--db", str(tmp_path / "r.db"),
           "--out", str(tmp_path / "runs"), "--device", "cpu", "params.workers=0"]
    assert main([*run, "--checkpoint", str(tmp_path / "c.pt")]) != 0
    assert "c.pt: stores no linear probe; suite imagenet-stored-probe" in capsys.readouterr().err
    assert main([*run, "--checkpoint", str(tmp_path / "p.pt"), "--subnets", "w0.75"]) != 0
    assert "its stored probe has layers for w1.0, w0.5, not for w0.75" in capsys.readouterr().err
