"""Round trips for every layout: a file written the way its framework writes it, imported, extracted,
and the extracted network's features equal the source model's exactly (fp32); then each refusal.

Each writer below rebuilds its framework's layout from that framework's own code (cited per writer);
the source model is a seeded torchvision ResNet (width 1.0) or a plain torchvision-named ResNet of
width 0.5 (``PlainResNet``), its fc removed as the SSL frameworks do.
"""
import pickle

import pytest
import torch
import torchvision
from mmengine.logging import HistoryBuffer
from omegaconf import OmegaConf
from safetensors.torch import save_file

from benchmarks.cli import main
from pretrain.checkpoints.format import CheckpointError, load_checkpoint
from pretrain.checkpoints.importers import ImportOptions, import_file
from pretrain.models.plain_resnet import PlainResNet
from pretrain.models.resnet import plan_resnet
from pretrain.checkpoints.extract import extract
from tests.conftest import randomize_bn


def source_model(width: float, depth: int = 18) -> torch.nn.Module:
    """A seeded torchvision ResNet at width 1.0, a plain torchvision-named one at narrower widths; no fc."""
    torch.manual_seed(0)
    if width == 1.0:
        model = getattr(torchvision.models, f"resnet{depth}")()
        model.fc = torch.nn.Identity()
    else:
        model = PlainResNet(plan_resnet(depth, width))
    return randomize_bn(model).eval()


def encoder(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


def mlp(prefix: str, dim: int) -> dict:
    return {f"{prefix}0.weight": torch.randn(dim, dim), f"{prefix}0.bias": torch.zeros(dim),
            f"{prefix}2.weight": torch.randn(128, dim), f"{prefix}2.bias": torch.zeros(128)}


def prefixed(prefix: str, sd: dict) -> dict:
    return {prefix + k: v for k, v in sd.items()}


# -- writers: each framework's own layout --------------------------------------------------------------

def write_moco(model, path):
    """facebookresearch/moco main_moco.py save_checkpoint: DDP-wrapped MoCo (moco/builder.py: encoder_q with
    an MLP fc, encoder_k, queue, queue_ptr); the 2020 releases are in torch's legacy format."""
    dim = model.state_dict()["layer4.1.bn2.weight"].shape[0]
    sd = {**prefixed("module.encoder_q.", encoder(model)), **mlp("module.encoder_q.fc.", dim),
          **prefixed("module.encoder_k.", encoder(model)), **mlp("module.encoder_k.fc.", dim),
          "module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}},
               path, _use_new_zipfile_serialization=False)


def write_mocov3(model, path):
    """facebookresearch/moco-v3 main_moco.py: module.base_encoder (fc = projection MLP, builder.py 100-106),
    module.momentum_encoder, module.predictor."""
    dim = model.state_dict()["layer4.1.bn2.weight"].shape[0]
    sd = {**prefixed("module.base_encoder.", encoder(model)), **mlp("module.base_encoder.fc.", dim),
          **prefixed("module.momentum_encoder.", encoder(model)), **mlp("module.predictor.", 128)}
    torch.save({"epoch": 300, "arch": "resnet18", "state_dict": sd, "optimizer": {}, "scaler": {}}, path)


def write_solo_learn(model, path):
    """solo-learn: Lightning .ckpt of BaseMethod (solo/methods/base.py 193-210: backbone with fc=Identity,
    classifier) + momentum_backbone, projector; the OmegaConf cfg Lightning keeps beside them."""
    dim = model.state_dict()["layer4.1.bn2.weight"].shape[0]
    sd = {**prefixed("backbone.", encoder(model)), **mlp("projector.", dim),
          **prefixed("momentum_backbone.", encoder(model)),
          "classifier.weight": torch.randn(10, dim), "classifier.bias": torch.zeros(10)}
    torch.save({"epoch": 399, "global_step": 1000, "pytorch-lightning_version": "2.0.2", "state_dict": sd,
                "loops": {}, "callbacks": {}, "optimizer_states": [{}], "lr_schedulers": [{}],
                "hyper_parameters": OmegaConf.create({"method": "byol", "backbone": {"name": "resnet18"}})}, path)


def write_mmselfsup(model, path):
    """MMSelfSup 1.x MoCo v2 (mmselfsup/models/algorithms/moco.py 65-72: backbone, neck, encoder_k, queue) saved
    by MMEngine with meta and message_hub, then publish_model.py: optimizer removed, legacy format."""
    sd = {**prefixed("backbone.", encoder(model)), **mlp("neck.mlp.", 512),
          **prefixed("encoder_k.module.0.", encoder(model)), "queue": torch.randn(128, 64),
          "queue_ptr": torch.zeros(1, dtype=torch.long)}
    torch.save({"meta": {"epoch": 200, "mmengine_version": "0.10.7"}, "state_dict": sd,
                "message_hub": {"log_scalars": {"train/loss": HistoryBuffer([1.0, 0.5], [1, 1])}}},
               path, _use_new_zipfile_serialization=False)


def write_vissl(model, path):
    """VISSL: classy_state_dict -> base_model -> model -> trunk with _feature_blocks.* names
    (extra_scripts/convert_vissl_to_detectron2.py 26-31, 111-112), heads beside the trunk."""
    trunk = prefixed("_feature_blocks.", encoder(model))
    heads = {"0.clf.0.weight": torch.randn(128, 512), "0.clf.0.bias": torch.zeros(128)}
    torch.save({"phase_idx": 10, "iteration": 5000, "type": "checkpoint",
                "classy_state_dict": {"base_model": {"model": {"trunk": trunk, "heads": heads}, "meta": {}},
                                      "optimizer": {}, "loss": {}}}, path)


def write_lightly(model, path):
    """lightly benchmarks/imagenet/resnet50/mocov2.py 30-45: backbone (fc=Identity), projection_head,
    key_backbone, key_projection_head, online_classifier.classification_head; Lightning's save_hyperparameters."""
    dim = model.state_dict()["layer4.1.bn2.weight"].shape[0]
    sd = {**prefixed("backbone.", encoder(model)), **mlp("projection_head.layers.", dim),
          **prefixed("key_backbone.", encoder(model)), **mlp("key_projection_head.layers.", dim),
          "online_classifier.classification_head.weight": torch.randn(1000, dim),
          "online_classifier.classification_head.bias": torch.zeros(1000)}
    torch.save({"epoch": 99, "global_step": 500400, "pytorch-lightning_version": "2.1.0", "state_dict": sd,
                "hyper_parameters": {"batch_size_per_device": 128, "num_classes": 1000}}, path)


def write_timm(model, path):
    """timm ResNet names are torchvision's (timm/models/resnet.py ResNet.__init__: conv1, bn1, layer1-4, fc);
    hub weights are model.safetensors."""
    save_file(encoder(model), str(path))


def write_torchvision(model, path):
    torch.save(encoder(model), path)


LAYOUTS = {"moco": (write_moco, "moco.pth.tar"), "mocov3": (write_mocov3, "r18-mocov3.pth.tar"),
           "solo-learn": (write_solo_learn, "byol-ep=399.ckpt"), "mmselfsup": (write_mmselfsup, "mmselfsup.pth"),
           "vissl": (write_vissl, "model_final_checkpoint_phase199.torch"),
           "lightly": (write_lightly, "epoch=99-step=500400.ckpt"), "timm": (write_timm, "model.safetensors"),
           "torchvision": (write_torchvision, "r18.pth")}


def features(net, x):
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize("width", [1.0, 0.5])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_round_trip_features_equal_the_source_model(layout, width, tmp_path):
    model = source_model(width)
    write, name = LAYOUTS[layout]
    write(model, tmp_path / name)
    ckpt, importer, claim = import_file(tmp_path / name, "auto")
    assert importer.name == layout and claim is not None and ckpt.method == f"import:{layout}"
    assert ckpt.widths == [width] and ckpt.arch["depth"] == 18
    spec = f"w{width}"
    x = torch.randn(2, 3, 64, 64)
    assert (features(extract(ckpt, spec).eval(), x) - features(model, x)).abs().max().item() == 0.0
    explicit, _, _ = import_file(tmp_path / name, layout)   # --from LAYOUT reads it the same way
    assert all(torch.equal(explicit.state_dict[k], v) for k, v in ckpt.state_dict.items())


def test_dropped_parts_and_placeholders_are_listed(tmp_path):
    model = source_model(1.0)
    write_moco(model, tmp_path / "moco.pth.tar")
    ckpt, _, _ = import_file(tmp_path / "moco.pth.tar")
    dropped = ckpt.extra["dropped_keys"]
    assert "module.queue" in dropped and "module.encoder_q.fc.0.weight" in dropped
    assert any(k.startswith("module.encoder_k.") for k in dropped)
    assert ckpt.extra["dropped_entries"] == ["arch", "epoch", "optimizer"]
    write_solo_learn(model, tmp_path / "solo.ckpt")
    ckpt, _, _ = import_file(tmp_path / "solo.ckpt")
    assert "omegaconf.dictconfig.DictConfig" in ckpt.extra["not_unpickled"]
    assert "classifier.weight" in ckpt.extra["dropped_keys"]
    write_mmselfsup(model, tmp_path / "mm.pth")
    ckpt, _, _ = import_file(tmp_path / "mm.pth")
    assert "mmengine.logging.history_buffer.HistoryBuffer" in ckpt.extra["not_unpickled"]


def test_a_foreign_object_in_the_file_is_never_constructed(tmp_path):
    """The placeholder stands in for the class the file names: its code does not run."""
    class Bomb:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    sd = {"conv1.weight": torch.zeros(1)}
    torch.save({"state_dict": sd, "bomb": Bomb()}, tmp_path / "bomb.pth")
    from pretrain.checkpoints.importers import read_weights

    wf = read_weights(tmp_path / "bomb.pth")
    assert wf.placeholders == ["builtins.exec"] and repr(wf.obj["bomb"]) == "<not unpickled: builtins.exec>"


def test_mmselfsup_extracted_backbone_and_depth_variant(tmp_path):
    torch.manual_seed(0)
    plain = randomize_bn(PlainResNet(plan_resnet(50, 0.25, blocks=(2, 2, 2, 2)))).eval()
    torch.save({"state_dict": plain.state_dict(), "author": "MMSelfSup"}, tmp_path / "backbone.pth")
    ckpt, importer, _ = import_file(tmp_path / "backbone.pth")
    assert importer.name == "mmselfsup" and ckpt.widths == [0.25] and ckpt.desired == ["w0.25-d2.2.2.2"]
    x = torch.randn(2, 3, 64, 64)
    assert (features(extract(ckpt, "w0.25-d2.2.2.2").eval(), x) - features(plain, x)).abs().max().item() == 0.0


def test_bench_import_auto_says_what_it_chose(tmp_path, capsys):
    write_moco(source_model(1.0), tmp_path / "moco.pth.tar")
    assert main(["import", "--from", "auto", str(tmp_path / "moco.pth.tar"), "--out", str(tmp_path / "c.pt")]) == 0
    out = capsys.readouterr().out
    assert "layout: moco (torchvision ResNet names under module.encoder_q. (MoCo's query encoder))" in out
    assert "main_lincls.py lines 252-260" in out and "module.queue" in out
    assert load_checkpoint(tmp_path / "c.pt").method == "import:moco"


# -- refusals ------------------------------------------------------------------------------------------

def refusal(tmp_path, obj, layout="auto", **kw):
    torch.save(obj, tmp_path / "f.pth")
    with pytest.raises(CheckpointError) as e:
        import_file(tmp_path / "f.pth", layout, ImportOptions(**kw))
    return str(e.value)


def test_ambiguous_backbone_file_names_the_candidates(tmp_path):
    msg = refusal(tmp_path, {"state_dict": prefixed("backbone.", encoder(source_model(1.0)))})
    assert "ambiguous layout, 3 importers recognise it" in msg
    assert "solo-learn (" in msg and "mmselfsup (" in msg and "lightly (" in msg and "--from" in msg


def test_mmpretrain_resnetv1c_deep_stem_is_refused_with_the_reason(tmp_path):
    sd = prefixed("backbone.", encoder(source_model(1.0)))
    del sd["backbone.conv1.weight"]
    for i in range(3):
        sd[f"backbone.stem.{i}.conv.weight"] = torch.zeros(32, 3, 3, 3)
        sd[f"backbone.stem.{i}.bn.weight"] = torch.zeros(32)
    msg = refusal(tmp_path, {"meta": {}, "state_dict": sd})
    assert "deep stem (stem.*" in msg and "ResNetV1c" in msg and "cannot be held" in msg


def test_timm_deep_stem_and_avg_down_are_refused(tmp_path):
    sd = encoder(source_model(1.0))
    deep = {k: v for k, v in sd.items() if k != "conv1.weight"}
    deep.update({"conv1.0.weight": torch.zeros(32, 3, 3, 3), "conv1.3.weight": torch.zeros(32, 32, 3, 3)})
    save_file(deep, str(tmp_path / "resnet18d.safetensors"))
    with pytest.raises(CheckpointError, match=r"deep stem \(conv1\.0/conv1\.3/conv1\.6: timm's stem_type='deep'"):
        import_file(tmp_path / "resnet18d.safetensors")
    avg = dict(sd)
    avg["layer2.0.downsample.1.weight"] = torch.zeros(128, 64, 1, 1)
    avg["layer2.0.downsample.2.weight"] = torch.zeros(128)
    assert "average-pool shortcut (avg_down" in refusal(tmp_path, avg, "timm")


def test_solo_learn_cifar_stem_is_refused(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 2, bias=False)   # solo/methods/base.py lines 199-201
    sd = {**prefixed("backbone.", encoder(model)), "classifier.weight": torch.zeros(10, 512)}
    msg = refusal(tmp_path, {"pytorch-lightning_version": "2.0", "state_dict": sd})
    assert "solo-learn's CIFAR stem (3x3 convolution with padding 2" in msg and "pads by 1" in msg


def test_mocov3_vit_is_refused(tmp_path):
    msg = refusal(tmp_path, {"state_dict": {"module.base_encoder.patch_embed.proj.weight": torch.zeros(1)}})
    assert "MoCo v3 ViT" in msg and "ResNets only" in msg


def test_unknown_file_wrong_layout_and_width_on_a_release(tmp_path):
    msg = refusal(tmp_path, {"state_dict": {"encoder.0.weight": torch.zeros(1)}})
    assert "no importer recognises its keys" in msg and "encoder.0.weight" in msg
    write_lightly(source_model(1.0), tmp_path / "l.ckpt")
    with pytest.raises(CheckpointError, match="no ResNet under module.encoder_q.: not a MoCo v1/v2 checkpoint"):
        import_file(tmp_path / "l.ckpt", "moco")
    with pytest.raises(CheckpointError, match="--width and --blocks describe a plain network"):
        import_file(tmp_path / "l.ckpt", "lightly", ImportOptions(width=0.5))
    with pytest.raises(CheckpointError, match="unknown layout 'swav'"):
        import_file(tmp_path / "l.ckpt", "swav")


def test_damaged_and_foreign_files(tmp_path):
    (tmp_path / "t.pth").write_bytes(b"\x80\x02\x8a\x0a" + b"\x00" * 20)
    with pytest.raises(CheckpointError, match="t.pth: cannot be read"):
        import_file(tmp_path / "t.pth")
    (tmp_path / "x.safetensors").write_bytes((8).to_bytes(8, "little") + b'{"a": 1}')
    with pytest.raises(CheckpointError, match="x.safetensors: damaged safetensors file"):
        import_file(tmp_path / "x.safetensors")
    (tmp_path / "n.bin").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError, match="not a PyTorch or safetensors file"):
        import_file(tmp_path / "n.bin")


def test_channels_that_fit_no_width_are_refused(tmp_path):
    sd = encoder(source_model(1.0))
    sd["layer4.0.conv2.weight"] = torch.zeros(256, 512, 3, 3)   # the last stage at width 0.5, the rest at 1.0
    msg = refusal(tmp_path, sd)
    assert "its channels fit no width of a ResNet-18 (stem 64 channels, last stage 256)" in msg
