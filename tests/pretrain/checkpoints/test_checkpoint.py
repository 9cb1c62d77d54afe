import os
import stat

import pytest
import torch

from pretrain.checkpoints.format import (Checkpoint, CheckpointError, atomic_torch_save, atomic_write_bytes, file_digest,
                                 load_checkpoint, save_checkpoint)
from pretrain.models.resnet import SlimResNet


@pytest.fixture
def ckpt_path(tmp_path, slim_r18):
    return save_checkpoint(Checkpoint.from_model(slim_r18, method="random", config={"seed": 3},
                                                 desired=["w0.5"]), tmp_path / "c.pt")


def test_round_trip(ckpt_path, slim_r18):
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt.widths == [1.0, 0.75, 0.5, 0.25]
    assert ckpt.method == "random" and ckpt.config == {"seed": 3} and ckpt.desired == ["w0.5"]
    model = ckpt.build_model()
    for k, v in slim_r18.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    raw = torch.load(ckpt_path, weights_only=True)
    assert raw["format_version"] == 1 and raw["code_version"]


def test_truncated_file(ckpt_path):
    data = ckpt_path.read_bytes()
    ckpt_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(ckpt_path)):
        load_checkpoint(ckpt_path)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(p)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_garbage_file(tmp_path):
    p = tmp_path / "g.pt"
    p.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="not a PyTorch file"):
        load_checkpoint(p)


def test_corrupt_bytes_inside_archive(ckpt_path):
    data = bytearray(ckpt_path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = os.urandom(4096)
    ckpt_path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(ckpt_path)):
        load_checkpoint(ckpt_path).build_model()


def test_foreign_state_dict_is_named(tmp_path):
    p = tmp_path / "tv.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, p)
    with pytest.raises(CheckpointError, match="not a SlimBench checkpoint.*bench import"):
        load_checkpoint(p)


def test_future_version_rejected(tmp_path, slim_r18):
    d = Checkpoint.from_model(slim_r18).to_dict()
    d["format_version"] = 99
    torch.save(d, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "v.pt")


def test_wrong_architecture_weights(tmp_path, slim_r18):
    ckpt = Checkpoint.from_model(slim_r18)
    ckpt.arch = SlimResNet(34, widths=[1.0, 0.75, 0.5, 0.25], stem="small").arch_config()
    save_checkpoint(ckpt, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="do not match its architecture slim_resnet34"):
        load_checkpoint(tmp_path / "w.pt").build_model()


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    p = tmp_path / "x.pt"
    atomic_torch_save({"a": torch.ones(1)}, p)
    digest = file_digest(p)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"a": Unpicklable()}, p)
    assert file_digest(p) == digest
    assert [f.name for f in tmp_path.iterdir()] == ["x.pt"]  # no temporary file left behind


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=lambda u: f"umask{u:03o}")
def test_atomic_writes_get_the_mode_the_umask_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with open(tmp_path / "plain.bin", "wb") as f:   # what open() and torch.save give
            f.write(b"x")
        atomic_write_bytes(tmp_path / "page.html", b"<html></html>")
        atomic_torch_save({"a": torch.ones(1)}, tmp_path / "sub" / "t.pt")
        save_checkpoint(Checkpoint.from_model(SlimResNet(18, widths=[1.0, 0.5], stem="small")), tmp_path / "c.pt")
        atomic_write_bytes(tmp_path / "page.html", b"<html>again</html>")   # replacing keeps the umask's mode
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()}
    assert modes == {"plain.bin": expected, "page.html": expected, "t.pt": expected, "c.pt": expected}
    assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) == 0o777 & ~umask
