"""lightly's examples and tutorials, VISSL's linear-evaluation trunk, an encoder's momentum / EMA copy
(``--encoder``), and the refusals that say why (SE blocks, pickled modules, blocked globals).

Each file is written the way its framework writes it (cited per writer) from seeded torchvision resnet18s:
``online`` and a different ``momentum`` network, so a wrong pick shows. Round trips run the real CLI,
``bench import --from auto`` then ``bench export --to torchvision``; every encoder tensor must come back
bit-identical.
"""
import argparse
import os

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from benchmarks.cli import main
from pretrain.checkpoints.extract import extract
from pretrain.checkpoints.format import CheckpointError
from pretrain.checkpoints.importers import ImportOptions, import_file
from tests.conftest import randomize_bn
from tests.pretrain.checkpoints.test_importers_layouts import encoder, mlp, prefixed


def resnet18(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize_bn(torchvision.models.resnet18(), seed).eval()


@pytest.fixture(scope="module")
def online():
    return resnet18(0)


@pytest.fixture(scope="module")
def momentum():
    return resnet18(1)


def children(model) -> dict:
    """lightly's examples: ``nn.Sequential(*list(resnet.children())[:-1])`` (examples/pytorch_lightning/moco.py 25-26)."""
    return torch.nn.Sequential(*list(model.children())[:-1]).state_dict()


def lightning(sd: dict, **extra) -> dict:
    """What Lightning's ModelCheckpoint saves: the LightningModule's state dict under ``state_dict``."""
    return {"epoch": 9, "global_step": 1950, "pytorch-lightning_version": "2.2.1", "state_dict": sd, "loops": {},
            "callbacks": {}, "optimizer_states": [{}], "lr_schedulers": [], **extra}


# -- writers ---------------------------------------------------------------------------------------------

def lightly_moco_example(online, momentum) -> dict:
    """examples/pytorch_lightning/moco.py 25-30: backbone, projection_head (MoCoProjectionHead: layers.0/.2),
    backbone_momentum, projection_head_momentum (NTXentLoss's memory bank buffers are not persistent)."""
    return {**prefixed("backbone.", children(online)), **mlp("projection_head.layers.", 512),
            **prefixed("backbone_momentum.", children(momentum)), **mlp("projection_head_momentum.layers.", 512)}


def write_lightly(kind: str, online, momentum, path) -> str:
    """A lightly example / tutorial file; returns the prefix of its momentum copy ('' when it has none)."""
    if kind == "example":
        torch.save(lightning(lightly_moco_example(online, momentum)), path)
        return "backbone_momentum."
    if kind == "tutorial":   # tutorial_simclr_clothing.py 287-291: the backbone alone
        torch.save({"resnet18_parameters": children(online)}, path)
        return ""
    if kind == "wrapped":    # a LightningModule holding the SSL module as self.model, with its own fc
        sd = {**prefixed("model.", lightly_moco_example(online, momentum)),
              "fc.weight": torch.randn(10, 512), "fc.bias": torch.zeros(10)}
        torch.save(lightning(sd), path)
        return "model.backbone_momentum."
    # examples/pytorch_lightning/dino.py 25-40: student_backbone / teacher_backbone (its EMA), DINO heads
    sd = {**prefixed("student_backbone.", children(online)), **mlp("student_head.layers.", 512),
          **prefixed("teacher_backbone.", children(momentum)), **mlp("teacher_head.layers.", 512)}
    torch.save(lightning(sd), path)
    return "teacher_backbone."


def write_vissl_linear_eval(model, path):
    """VISSL linear evaluation: the trunk is a FeatureExtractorModel (feature_extractor.py line 30: base_model),
    saved by get_classy_state_dict (base_ssl_model.py 411-416) with its eval_mlp heads (channel_bn, clf.clf.0)."""
    trunk = prefixed("base_model._feature_blocks.", encoder(model))
    bn = torch.nn.BatchNorm2d(512).state_dict()
    heads = {**prefixed("0.channel_bn.", bn), "0.clf.clf.0.weight": torch.randn(1000, 512), "0.clf.clf.0.bias": torch.zeros(1000)}
    torch.save({"phase_idx": 27, "iteration": 140000, "type": "consolidated",
                "classy_state_dict": {"train": True, "base_model": {"model": {"trunk": trunk, "heads": heads},
                                                                    "meta": {"trunk": {}, "heads": []}},
                                      "optimizer": {}, "loss": {}}}, path)


def with_copy(layout: str, online, momentum, path) -> str:
    """A file holding an online and a momentum / EMA encoder as ``layout`` writes it; returns the copy's kind."""
    if layout == "moco":         # moco/builder.py: encoder_q / encoder_k, each with an MLP fc
        sd = {**prefixed("module.encoder_q.", encoder(online)), **mlp("module.encoder_q.fc.", 512),
              **prefixed("module.encoder_k.", encoder(momentum)), **mlp("module.encoder_k.fc.", 512),
              "module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
        torch.save({"epoch": 200, "state_dict": sd}, path, _use_new_zipfile_serialization=False)
    elif layout == "mocov3":     # moco-v3 builder.py 100-109: base_encoder / momentum_encoder
        sd = {**prefixed("module.base_encoder.", encoder(online)), **mlp("module.base_encoder.fc.", 512),
              **prefixed("module.momentum_encoder.", encoder(momentum)), **mlp("module.momentum_encoder.fc.", 512)}
        torch.save({"epoch": 300, "state_dict": sd}, path)
    elif layout == "solo-learn":  # solo/methods/base.py 640-660: momentum_backbone beside backbone
        sd = {**prefixed("backbone.", encoder(online)), **prefixed("momentum_backbone.", encoder(momentum)),
              "classifier.weight": torch.randn(10, 512), "classifier.bias": torch.zeros(10)}
        torch.save(lightning(sd), path)
    elif layout == "mmselfsup":  # MMSelfSup 1.x byol.py 55-56: target_net = CosineEMA(Sequential(backbone, neck))
        sd = {**prefixed("backbone.", encoder(online)), **mlp("neck.mlp.", 512),
              **prefixed("target_net.module.0.", encoder(momentum)), **mlp("target_net.module.1.mlp.", 512),
              "target_net.steps": torch.tensor(5)}
        torch.save({"meta": {"epoch": 200}, "state_dict": sd}, path)
    elif layout == "timm":       # timm/utils/checkpoint_saver.py _save: state_dict, state_dict_ema, args, ...
        torch.save({"epoch": 299, "arch": "resnet18", "state_dict": online.state_dict(), "optimizer": {},
                    "version": 2, "args": argparse.Namespace(model="resnet18", model_ema=True),
                    "state_dict_ema": momentum.state_dict(), "metric": 71.5}, path)
        return "ema"
    else:
        write_lightly(layout.split("-")[1], online, momentum, path)
    return "momentum"


def exported(tmp_path, src, *flags) -> dict:
    """``bench import --from auto src [flags]`` then ``bench export --to torchvision``: the exported state dict."""
    ckpt, out = tmp_path / "imported.pt", tmp_path / "tv.pth"
    assert main(["import", "--from", "auto", str(src), "--out", str(ckpt), *flags]) == 0
    assert main(["export", "--checkpoint", str(ckpt), "--subnet", "w1.0", "--to", "torchvision", "--out", str(out)]) == 0
    return torch.load(out, weights_only=True)


def differing(got: dict, model) -> list:
    """The encoder tensors of ``model`` that ``got`` lacks or holds with other bits (fc is no encoder tensor)."""
    want, got = encoder(model), {k: v for k, v in got.items() if not k.startswith("fc.")}
    return [k for k in want if k not in got or not torch.equal(got[k], want[k])] + [k for k in got if k not in want]


def refusal(path, **options) -> str:
    with pytest.raises(CheckpointError) as e:
        import_file(path, "auto", ImportOptions(**options))
    return str(e.value)


# -- lightly's examples and VISSL's linear evaluation: round trips -----------------------------------------

@pytest.mark.parametrize("kind", ["example", "tutorial", "wrapped", "dino"])
def test_lightly_examples_round_trip_bit_identical(kind, online, momentum, tmp_path, capsys):
    momentum_prefix = write_lightly(kind, online, momentum, tmp_path / "epoch=9-step=1950.ckpt")
    got = exported(tmp_path, tmp_path / "epoch=9-step=1950.ckpt")
    assert differing(got, online) == []
    out = capsys.readouterr().out
    assert "layout: lightly (" in out and "nn.Sequential (lightly's examples)" in out
    if momentum_prefix:   # the momentum copy is dropped and listed, every one of its tensors
        n = len(children(momentum))
        ckpt, _, _ = import_file(tmp_path / "epoch=9-step=1950.ckpt")
        assert sum(k.startswith(momentum_prefix) for k in ckpt.extra["dropped_keys"]) == n
        if kind == "example":
            assert f"backbone_momentum.* ({n})" in out


def test_vissl_linear_eval_round_trip_bit_identical(online, tmp_path, capsys):
    write_vissl_linear_eval(online, tmp_path / "model_final_checkpoint_phase27.torch")
    assert differing(exported(tmp_path, tmp_path / "model_final_checkpoint_phase27.torch"), online) == []
    out = capsys.readouterr().out
    assert "layout: vissl (a linear-evaluation trunk (FeatureExtractorModel)" in out
    assert "encoder: online (base_model._feature_blocks.*)" in out and "heads.* (7)" in out


# -- --encoder: the momentum / EMA copy ---------------------------------------------------------------------

COPY_LAYOUTS = ["moco", "mocov3", "solo-learn", "mmselfsup", "timm", "lightly-example", "lightly-dino"]


@pytest.mark.parametrize("layout", COPY_LAYOUTS)
def test_encoder_option_takes_the_copy_asked_for(layout, online, momentum, tmp_path):
    path = tmp_path / "ckpt.pth"
    kind = with_copy(layout, online, momentum, path)
    for copy, model, other in (("online", online, momentum), (kind, momentum, online)):
        ckpt, importer, _ = import_file(path, "auto", ImportOptions(encoder=copy))
        assert importer.name == ("lightly" if layout.startswith("lightly") else layout)
        assert ckpt.config["encoder"] == copy
        plain = extract(ckpt, "w1.0").state_dict()
        assert differing(plain, model) == [] and differing(plain, other) != []
        if layout == "timm":   # the other copy is a top-level entry
            assert ("state_dict_ema" if copy == "online" else "state_dict") in ckpt.extra["dropped_entries"]
        else:
            assert len(ckpt.extra["dropped_keys"]) >= len(encoder(other))


def test_bench_import_encoder_momentum_exports_the_momentum_copy(online, momentum, tmp_path, capsys):
    with_copy("lightly-example", online, momentum, tmp_path / "moco.ckpt")
    assert differing(exported(tmp_path, tmp_path / "moco.ckpt", "--encoder", "momentum"), momentum) == []
    out = capsys.readouterr().out
    assert "encoder: momentum (backbone_momentum.*)" in out and "dropped 128 keys: backbone.* (120)" in out


ONLY_A_COPY = {
    "solo-learn": (lambda m: lightning({**prefixed("momentum_backbone.", encoder(m)), **mlp("momentum_projector.", 512)}),
                   "momentum", "momentum_backbone.*"),
    "moco": (lambda m: {"state_dict": {**prefixed("module.encoder_k.", encoder(m)), **mlp("module.encoder_k.fc.", 512)}},
             "momentum", "module.encoder_k.*"),
    "timm": (lambda m: {"state_dict_ema": m.state_dict()}, "ema", "state_dict_ema"),
    "lightly": (lambda m: lightning(prefixed("backbone_momentum.", children(m))), "momentum", "backbone_momentum.*"),
}


@pytest.mark.parametrize("layout", sorted(ONLY_A_COPY))
def test_a_file_with_only_a_momentum_or_ema_copy_says_so(layout, momentum, tmp_path):
    build, kind, where = ONLY_A_COPY[layout]
    torch.save(build(momentum), tmp_path / "only.pth")
    msg = refusal(tmp_path / "only.pth")
    assert str(tmp_path / "only.pth") in msg and "holds only" in msg and where in msg
    assert "no online encoder" in msg and f"--encoder {kind}" in msg and "no importer recognises" not in msg
    ckpt, importer, _ = import_file(tmp_path / "only.pth", "auto", ImportOptions(encoder=kind))
    assert importer.name == layout and differing(extract(ckpt, "w1.0").state_dict(), momentum) == []


def test_a_copy_the_file_lacks_is_refused_naming_what_it_holds(online, momentum, tmp_path):
    with_copy("moco", online, momentum, tmp_path / "moco.pth.tar")
    msg = refusal(tmp_path / "moco.pth.tar", encoder="ema")
    assert msg == (f"{tmp_path / 'moco.pth.tar'}: --encoder ema, but the file holds no ema copy: it holds the online "
                   f"encoder (module.encoder_q.*) and a momentum (target) encoder (module.encoder_k.*); "
                   f"expected --encoder online|momentum")
    write_vissl_linear_eval(online, tmp_path / "vissl.torch")
    msg = refusal(tmp_path / "vissl.torch", encoder="momentum")
    assert "vissl.torch: --encoder momentum, but a vissl file holds only its online encoder" in msg
    assert "layouts with a momentum (target) encoder:" in msg
    assert all(name in msg.split("encoder:")[1] for name in ("moco", "mocov3", "solo-learn", "mmselfsup", "lightly"))


# -- refusals that say why ------------------------------------------------------------------------------------

def seresnet18_state_dict(model) -> dict:
    """timm's seresnet18 (resnet.py: BasicBlock ``self.se = create_attn('se', outplanes)``): each block's SEModule
    (squeeze_excite.py 48-52) has 1x1 convolutions fc1 / fc2 with make_divisible(C / 16, 8) reduced channels."""
    sd = encoder(model)
    for stage, c in zip(range(1, 5), (64, 128, 256, 512)):
        rd = max(8, int(c / 16 + 4) // 8 * 8)
        for block in range(2):
            p = f"layer{stage}.{block}.se."
            sd.update({p + "fc1.weight": torch.randn(rd, c, 1, 1), p + "fc1.bias": torch.zeros(rd),
                       p + "fc2.weight": torch.randn(c, rd, 1, 1), p + "fc2.bias": torch.zeros(c)})
    return sd


def test_seresnet_is_refused_as_not_a_resnet_slimbench_can_slim(online, tmp_path):
    sd = seresnet18_state_dict(online)
    save_file(sd, str(tmp_path / "model.safetensors"))   # the hub's timm/seresnet18 file
    torch.save(sd, tmp_path / "seresnet18.pth")
    for path in (tmp_path / "model.safetensors", tmp_path / "seresnet18.pth"):
        msg = refusal(path)
        assert "squeeze-and-excitation blocks (layer1.0.se.* and 7 more" in msg and "seresnet" in msg
        assert "not part of the ResNet SlimBench can slim" in msg and "unexpected" not in msg


@pytest.mark.parametrize("zipped", [True, False])
def test_a_pickled_module_is_refused_with_how_to_save_its_state_dict(zipped, online, tmp_path):
    torch.save(online, tmp_path / "model.pth", _use_new_zipfile_serialization=zipped)
    msg = refusal(tmp_path / "model.pth")
    assert f"{tmp_path / 'model.pth'}: a whole pickled module (torchvision.models.resnet.ResNet" in msg
    assert "torch.save(model.state_dict(), 'weights.pth')" in msg
    assert "Placeholder" not in msg and "weights_only" not in msg


class _RunsACommand:
    """What a hostile file pickles: unpickling it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zipped", [True, False])
def test_a_blocked_global_is_named_and_unsafe_loading_never_suggested(zipped, tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": _RunsACommand(marker)}, tmp_path / "f.pth",
               _use_new_zipfile_serialization=zipped)
    msg = refusal(tmp_path / "f.pth")
    assert f"its pickle calls {os.system.__module__}.system" in msg and "blocks outright" in msg
    assert "weights_only" not in msg and not marker.exists()
    # SlimBench's own reader (bench export): a numpy array names numpy's _reconstruct, reported by that name
    torch.save({"format": "slimbench", "x": __import__("numpy").zeros(3)}, tmp_path / "np.pt")
    assert main(["export", "--checkpoint", str(tmp_path / "np.pt"), "--subnet", "w1.0", "--to", "torchvision",
                 "--out", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err
    assert "its pickle names numpy" in err and "multiarray._reconstruct" in err and "weights_only" not in err
