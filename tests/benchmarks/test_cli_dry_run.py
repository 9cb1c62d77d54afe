"""`bench run --dry-run`: what the engine would receive, printed as YAML, with no training and no store."""
import pytest
import yaml

from benchmarks.cli import main
from tests.transfer.conftest import make_checkpoint, make_image_folder


@pytest.fixture
def ckpt(tmp_path):
    return make_checkpoint(tmp_path / "c.pt")


def dry_run(tmp_path, capsys, *args):
    code = main(["run", "--db", str(tmp_path / "r.db"), "--dry-run", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_semi_dry_run_prints_the_optimizer_per_subnet_without_the_dataset(tmp_path, capsys, ckpt):
    code, out, err = dry_run(tmp_path, capsys, "--suite", "imagenet-semi-1pct", "--checkpoint", str(ckpt),
                             "--data-root", str(tmp_path), "params.batch_size=256")
    assert code == 0
    plan = yaml.safe_load(out)
    assert plan["suite"] == "imagenet-semi-1pct" and plan["protocol"] == "semi"
    assert set(plan["subnets"]) == {"w1.0", "w0.5"}
    for d in plan["subnets"].values():
        assert [g["lr"] for g in d["optimizer"]["param_groups"]] == [pytest.approx(0.05)]   # 0.05 x 256 / 256
        assert d["batch"]["global"] == 256 and d["schedule"]["steps"] == 12811 * 60 // 256 + 1
    assert "warning" in err and "dataset" in err and str(tmp_path / "train") in err
    assert not (tmp_path / "r.db").exists()                  # nothing is recorded
    assert not (tmp_path / "runs").exists()


def test_dry_run_of_an_engine_free_protocol_prints_its_resolved_blocks(tmp_path, capsys, ckpt):
    code, out, _ = dry_run(tmp_path, capsys, "--suite", "complexity", "--checkpoint", str(ckpt),
                           "--subnets", "w0.5", "params.resolution=64")
    assert code == 0
    plan = yaml.safe_load(out)
    assert plan["subnets"]["w0.5"]["params"] == {"resolution": 64, "num_classes": None}


def test_a_real_run_without_the_dataset_stays_an_error(tmp_path, capsys, ckpt):
    code = main(["run", "--db", str(tmp_path / "r.db"), "--suite", "imagenet-semi-1pct", "--checkpoint", str(ckpt),
                 "--data-root", str(tmp_path)])
    assert code != 0 and "dataset folder" in capsys.readouterr().err


def test_dry_run_with_the_dataset_counts_the_steps_of_a_balanced_subset(tmp_path, capsys, ckpt):
    make_image_folder(tmp_path / "data", per_class=5, size=16, classes=2)
    code, out, err = dry_run(tmp_path, capsys, "--suite", "imagenet-semi-10pct", "--checkpoint", str(ckpt),
                             "--data-root", str(tmp_path / "data"), "params.subset=balanced",
                             "params.label_fraction=0.4", "params.batch_size=2", "params.epochs=2")
    assert code == 0 and "warning" not in err
    for d in yaml.safe_load(out)["subnets"].values():
        assert d["labelled_images"] == 4 and d["schedule"]["steps"] == 4 * 2 // 2 + 1
