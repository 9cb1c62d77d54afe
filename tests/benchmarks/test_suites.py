"""Suite files: every shipped suite loads; bad files fail before any work, naming file, key and expectation."""
import pytest
import torch

from benchmarks.suites import load_suite, resolve_subnets, suite_paths
from pretrain.checkpoints.format import Checkpoint, load_checkpoint, save_checkpoint
from pretrain.errors import ConfigError, DataError
from pretrain.models.resnet import SlimResNet
from pretrain.models.spec import SubnetError, SubnetSpec
from tests.transfer.conftest import make_checkpoint

SHIPPED = {"imagenet-linear", "imagenet-linear-fast", "imagenet-linear-slimclr-mocov2",
           "imagenet-linear-slimclr-mocov3", "imagenet-linear-slimclr-simclr", "imagenet-semi-1pct", "imagenet-semi-10pct", "imagenet-knn",
           "complexity", "latency", "fmnist-linear", "fmnist-linear-fast", "fmnist-knn", "fmnist-semi-10pct"}


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_every_shipped_suite_loads():
    assert SHIPPED <= {p.stem for p in suite_paths()}
    for name in SHIPPED:  # detection and segmentation suites are tested with their protocols
        suite = load_suite(name)
        assert suite.name == name and suite.description
    assert load_suite("imagenet-semi-1pct").params.subset == "simclr-1pct"
    assert load_suite("fmnist-semi-10pct").params.subset == "balanced"


def test_imagenet_suites_name_whose_protocol_they_are():
    for name in sorted(n for n in SHIPPED if n.startswith("imagenet-")):
        description = load_suite(name).description
        assert "\n" not in description
        assert any(who in description for who in ("MoCo's", "SlimCLR's", "DINO's", "SimCLR's")), name


def test_linear_suites_follow_moco_and_slimclr():
    p = load_suite("imagenet-linear").params  # MoCo's main_lincls.py: no distillation
    assert (p.lr, p.batch_size, p.epochs, p.schedule, p.milestones, p.weight_decay, p.distill) == \
        (30.0, 256, 100, "step", [60, 80], 0.0, False)
    p = load_suite("imagenet-linear-slimclr-mocov2").params  # SlimCLR scripts/mocov2.sh
    assert (p.lr, p.batch_size, p.epochs, p.schedule, p.milestones, p.weight_decay, p.momentum, p.distill) == \
        (60.0, 1024, 100, "step", [60, 80], 0.0, 0.9, True)
    p = load_suite("imagenet-linear-slimclr-mocov3").params  # SlimCLR scripts/mocov3.sh
    assert (p.lr, p.batch_size, p.epochs, p.schedule, p.weight_decay, p.momentum, p.distill) == \
        (0.4, 1024, 90, "cosine", 0.0, 0.9, True)
    with pytest.raises(ConfigError, match=r"key 'params\.schedule': expected one of 'step', 'cosine', got 'poly'"):
        load_suite("imagenet-linear", ["params.schedule=poly"])


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"s\.yaml: unknown key 'protcol'"):
        load_suite(write(tmp_path, "protcol: knn\n"))
    with pytest.raises(ConfigError, match=r"s\.yaml: unknown key 'params\.kk'; expected one of params\.k, "):
        load_suite(write(tmp_path, "protocol: knn\nparams: {kk: 3}\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'dataset\.folder'"):
        load_suite(write(tmp_path, "protocol: knn\ndataset: {folder: x}\n"))


def test_wrong_types_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'params\.epochs': expected int, got 'ten'"):
        load_suite(write(tmp_path, "protocol: linear\nparams: {epochs: ten}\n"))
    with pytest.raises(ConfigError, match=r"key 'params\.milestones\[1\]': expected int"):
        load_suite(write(tmp_path, "protocol: linear\nparams: {milestones: [1, x]}\n"))
    with pytest.raises(ConfigError, match=r"s\.yaml: key 'protocol': unknown protocol 'linaer'"):
        load_suite(write(tmp_path, "protocol: linaer\n"))
    with pytest.raises(ConfigError, match=r"key 'subnets': expected str or a list of str, got \['w0', 5\]"):
        load_suite(write(tmp_path, "protocol: knn\nsubnets: [w0, 5]\n"))
    with pytest.raises(ConfigError, match=r"key 'subnets': expected 'all', 'widths', 'desired' or a list.*'half'"):
        load_suite(write(tmp_path, "protocol: knn\nsubnets: [w1.0, half]\n"))
    with pytest.raises(ConfigError, match=r"s\.yaml: params\.label_fraction must be in \(0, 1\]"):
        load_suite(write(tmp_path, "protocol: semi\nparams: {label_fraction: 10}\n"))


def test_missing_dataset_folder_names_the_layout(tmp_path):
    suite = load_suite("imagenet-knn")
    with pytest.raises(DataError) as e:
        suite.check_data(tmp_path / "imagenet")
    msg = str(e.value)
    assert "imagenet-knn.yaml" in msg and str(tmp_path / "imagenet" / "train") in msg
    assert "train/CLASS/IMAGE" in msg and "val/CLASS/IMAGE" in msg


def test_overrides_and_digest(tmp_path):
    base = load_suite("fmnist-knn")
    changed = load_suite("fmnist-knn", ["params.k=200", "params.temperature=0.1"])
    assert (changed.params.k, changed.params.temperature) == (200, 0.1)
    specs = [SubnetSpec(1.0)]
    assert base.digest(specs) == load_suite("fmnist-knn").digest(specs)
    assert base.digest(specs) != changed.digest(specs)
    assert base.digest(specs) != base.digest([SubnetSpec(1.0), SubnetSpec(0.5)])
    with pytest.raises(ConfigError, match=r"fmnist-knn\.yaml \(with overrides params\.k=many\): key 'params\.k': expected int"):
        load_suite("fmnist-knn", ["params.k=many"])


def test_the_seed_is_part_of_the_run_digest_and_not_of_the_config_digest():
    suite, specs = load_suite("fmnist-knn"), [SubnetSpec(1.0)]
    assert suite.digest(specs, seed=0) != suite.digest(specs, seed=1)
    assert suite.digest(specs, seed=1) == load_suite("fmnist-knn").digest(specs, seed=1)
    # the config digest keys leaderboard columns and work folders: seeds and sub-network lists share it
    assert suite.config_digest() == load_suite("fmnist-knn", ["subnets=w1.0"]).config_digest()
    assert suite.config_digest() != load_suite("fmnist-knn", ["params.k=200"]).config_digest()


def test_variant_is_what_the_overrides_change_from_the_file():
    assert load_suite("fmnist-knn").variant == {}
    assert load_suite("fmnist-knn", ["params.k=200", "params.temperature=0.1"]).variant == \
        {"params.k": 200, "params.temperature": 0.1}
    # an override that restates the file's value, or a sub-network list, changes nothing comparable
    assert load_suite("fmnist-knn", ["params.k=20", "subnets=w1.0"]).variant == {}
    assert load_suite("demo-seg", ["params.model_overrides.decode_head.channels=32"]).variant == \
        {"params.model_overrides.decode_head.channels": 32}


def dspnet_checkpoint(path, sample="sandwich"):
    """A random-init checkpoint whose stored recipe is a DSPNet one (desired networks and sampled depths)."""
    torch.manual_seed(0)
    desired = ["w0.5", "w1.0-d1.1.1.1"]
    method = {"name": "dspnet-byol", "desired": desired, "depths": [[1, 1, 1, 1], [2, 1, 1, 1]], "sample": sample}
    model = SlimResNet(18, widths=[1.0, 0.75, 0.5], stem="small")
    save_checkpoint(Checkpoint.from_model(model, method="dspnet-byol", config={"method": method}, desired=desired),
                    path)
    return load_checkpoint(path)


def test_all_means_every_width_the_desired_networks_and_the_sampled_depths(tmp_path):
    ckpt = dspnet_checkpoint(tmp_path / "dspnet.pt")
    assert [str(s) for s in resolve_subnets("all", ckpt)] == [
        "w1.0", "w0.75", "w0.5", "w1.0-d1.1.1.1",   # widths at full depth, then the desired networks
        "w0.75-d1.1.1.1", "w0.5-d1.1.1.1", "w1.0-d2.1.1.1", "w0.75-d2.1.1.1", "w0.5-d2.1.1.1"]
    assert [str(s) for s in resolve_subnets("widths", ckpt)] == ["w1.0", "w0.75", "w0.5"]
    assert [str(s) for s in resolve_subnets("desired", ckpt)] == ["w0.5", "w1.0-d1.1.1.1"]
    # a recipe that trained only its desired networks sampled no other depth
    only = dspnet_checkpoint(tmp_path / "individual.pt", sample="desired")
    assert [str(s) for s in resolve_subnets("all", only)] == ["w1.0", "w0.75", "w0.5", "w1.0-d1.1.1.1"]


def test_resolve_subnets(tmp_path):
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "c.pt", desired=["w0.5"]))
    assert [str(s) for s in resolve_subnets("all", ckpt)] == ["w1.0", "w0.5"]
    assert [str(s) for s in resolve_subnets("widths", ckpt)] == ["w1.0", "w0.5"]
    assert [str(s) for s in resolve_subnets("desired", ckpt)] == ["w0.5"]
    assert [str(s) for s in resolve_subnets("w0.5,w1.0-d1.1.1.1", ckpt)] == ["w0.5", "w1.0-d1.1.1.1"]
    assert [str(s) for s in resolve_subnets(["w0.25"], ckpt)] == ["w0.25"]  # BN calibrated by the protocol
    with pytest.raises(SubnetError, match="at most d2.2.2.2"):
        resolve_subnets(["w1.0-d3.3.3.3"], ckpt)
    plain = load_checkpoint(make_checkpoint(tmp_path / "d.pt"))
    with pytest.raises(ConfigError, match="no desired networks"):
        resolve_subnets("desired", plain)
