"""SimCLR's 1% / 10% lists ship with the package and drive the semi suites; bad subsets fail before training."""
import hashlib
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.optim.optimizer import register_optimizer_step_pre_hook

from benchmarks.suites import load_suite
from pretrain.checkpoints.format import load_checkpoint
from pretrain.config import from_dict
from pretrain.errors import ConfigError, DataError
from pretrain.models.spec import SubnetSpec
from transfer.classify.data import ClassificationData
from transfer.protocols.base import RunContext, get_protocol
from transfer.protocols.semi import SIMCLR_SUBSETS, label_subset

from .conftest import make_checkpoint

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "transfer" / "protocols" / "imagenet_subsets"
COUNTS = {"simclr-1pct": ("1percent.txt", 12811), "simclr-10pct": ("10percent.txt", 128116)}


def listed(name):
    return (PACKAGE_DIR / COUNTS[name][0]).read_text().split()


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_shipped_lists_are_simclrs(name):
    file_name, count = COUNTS[name]
    names = listed(name)
    assert len(names) == count and len(set(names)) == count
    assert all(re.fullmatch(r"n\d{8}_\d+\.JPEG", n) for n in names)
    assert len({n.split("_")[0] for n in names}) == 1000
    # found beside the module, as an installed package finds it
    assert SIMCLR_SUBSETS[name] == PACKAGE_DIR / file_name
    assert (resources.files("transfer.protocols") / "imagenet_subsets" / file_name).is_file()
    assert "Apache License 2.0" in (PACKAGE_DIR / "SOURCE.md").read_text()


@pytest.mark.parametrize("suite, name", [("imagenet-semi-1pct", "simclr-1pct"),
                                         ("imagenet-semi-10pct", "simclr-10pct")])
def test_semi_suites_resolve_to_the_shipped_lists_from_any_directory(suite, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is read relative to the working directory
    params = load_suite(suite).params
    assert params.subset == name and params.label_fraction is None
    path = params.subset_path(tmp_path / "imagenet")
    assert path == PACKAGE_DIR / COUNTS[name][0] and path.is_file()


def test_the_1pct_list_selects_exactly_its_images_in_an_imagenet_folder(tmp_path):
    names = listed("simclr-1pct")
    for n in names + ["n01440764_99999999.JPEG"]:  # plus one image the list does not name
        folder = tmp_path / "train" / n.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / n).touch()  # the subset is chosen by name; no image is opened
    train = ClassificationData().split(tmp_path, "train", None)
    indices, digest = label_subset(train, None, 0, SIMCLR_SUBSETS["simclr-1pct"])
    assert len(indices) == 12811 and len(train) == 12812
    assert digest == hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()


def jpeg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(path, format="JPEG")


def test_a_folder_lacking_listed_images_fails_before_training(tmp_path):
    names = listed("simclr-1pct")
    present = names[:3]
    for split in ("train", "val"):
        for n in present:
            jpeg(tmp_path / "data" / split / n.split("_")[0] / n)
    cls = get_protocol("semi")
    ctx = RunContext(suite_name="imagenet-semi-1pct", checkpoint=load_checkpoint(make_checkpoint(tmp_path / "c.pt")),
                     subnets=[SubnetSpec(1.0)], params=from_dict(cls.Params, {"workers": 0, "epochs": 1}, "test"),
                     dataset=from_dict(cls.Dataset, {"resolution": 16}, "test"), data_root=tmp_path / "data",
                     out_dir=tmp_path / "out", device=torch.device("cpu"))
    assert ctx.params.subset == "simclr-1pct"  # the protocol's default is SimCLR's 1% list
    steps = []
    handle = register_optimizer_step_pre_hook(lambda *a: steps.append(1))
    try:
        with pytest.raises(DataError) as e:
            list(cls().run(ctx))
    finally:
        handle.remove()
    msg = str(e.value)
    first_missing = sorted(set(names) - set(present))[:5]
    assert "1percent.txt" in msg and "12808 of 12811 listed images are not in" in msg
    assert str(tmp_path / "data" / "train") in msg and ", ".join(first_missing) in msg
    assert steps == [] and "subset_digest" not in ctx.info


def test_a_users_own_list_is_read_from_the_data_root(tmp_path):
    for n in ("a_1.JPEG", "a_2.JPEG", "b_1.JPEG"):
        jpeg(tmp_path / "train" / n[0] / n)
    (tmp_path / "mine.txt").write_text("a_2.JPEG\nb/b_1.JPEG\n")
    params = load_suite("imagenet-semi-1pct", ["params.subset=file", "params.subset_file=mine.txt"]).params
    train = ClassificationData().split(tmp_path, "train", None)
    indices, _ = label_subset(train, params.label_fraction, params.seed, params.subset_path(tmp_path))
    assert [Path(train.samples[i][0]).name for i in indices] == ["a_2.JPEG", "b_1.JPEG"]


def write(tmp_path, params):
    path = tmp_path / "s.yaml"
    path.write_text(f"protocol: semi\nparams: {params}\n")
    return str(path)


def test_subset_values_and_their_keys_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"s\.yaml: key 'params\.subset': expected one of 'simclr-1pct', "
                                          r"'simclr-10pct', 'balanced', 'file', got 'simclr-5pct'$"):
        load_suite(write(tmp_path, "{subset: simclr-5pct}"))
    with pytest.raises(ConfigError, match=r"params\.subset: balanced needs label_fraction"):
        load_suite(write(tmp_path, "{subset: balanced}"))
    with pytest.raises(ConfigError, match=r"params\.label_fraction is used only with subset: balanced"):
        load_suite(write(tmp_path, "{subset: simclr-10pct, label_fraction: 0.1}"))
    with pytest.raises(ConfigError, match=r"params\.subset: file needs subset_file"):
        load_suite(write(tmp_path, "{subset: file}"))
    with pytest.raises(ConfigError, match=r"params\.subset_file is read only with subset: file"):
        load_suite(write(tmp_path, "{subset_file: mine.txt}"))
    fmnist = load_suite("fmnist-semi-10pct").params  # Fashion-MNIST asks for a class-balanced draw by name
    assert (fmnist.subset, fmnist.label_fraction, fmnist.seed, fmnist.subset_path(tmp_path)) == \
        ("balanced", 0.1, 0, None)
