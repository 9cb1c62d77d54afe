"""`bench init / import / export / list subnets` through the real CLI entry point."""
import pytest
import torch
import torchvision

from benchmarks.cli import main
from pretrain.checkpoints.format import load_checkpoint


def test_init_list_export(tmp_path, capsys):
    ckpt = tmp_path / "r18.pt"
    assert main(["init", "--arch", "slim_resnet18", "--widths", "1.0,0.5", "--seed", "1", "--out", str(ckpt)]) == 0
    assert load_checkpoint(ckpt).config == {"seed": 1}
    assert main(["list", "subnets", str(ckpt), "--resolution", "64", "--depths", "1.1.1.1"]) == 0
    table = capsys.readouterr().out
    assert "w0.5-d1.1.1.1" in table and "w1.0" in table and "256/" not in table.split("w0.5 ")[0][-5:]
    out = tmp_path / "w1.pth"
    assert main(["export", "--checkpoint", str(ckpt), "--subnet", "w1.0", "--to", "torchvision", "--out", str(out)]) == 0
    torchvision.models.resnet18().load_state_dict(
        {**torch.load(out, weights_only=True), **{k: v for k, v in torchvision.models.resnet18().state_dict().items()
                                                  if k.startswith("fc.")}}, strict=True)


def test_user_errors_are_one_line(tmp_path, capsys):
    ckpt = tmp_path / "r18.pt"
    main(["init", "--arch", "slim_resnet18", "--widths", "1.0,0.5", "--out", str(ckpt)])
    assert main(["export", "--checkpoint", str(ckpt), "--subnet", "w0.3", "--to", "torchvision",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error:") and "1.0, 0.5" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.pt").write_bytes(b"")
    assert main(["list", "subnets", str(tmp_path / "bad.pt")]) == 2
    assert "empty" in capsys.readouterr().err


def test_import_torchvision_cli(tmp_path):
    src = tmp_path / "tv.pth"
    torch.save(torchvision.models.resnet18().state_dict(), src)
    assert main(["import", "--from", "torchvision", str(src), "--out", str(tmp_path / "c.pt")]) == 0
    assert load_checkpoint(tmp_path / "c.pt").method == "import:torchvision"


def test_init_unknown_arch(tmp_path):
    with pytest.raises(ValueError, match="slim_resnet50"):
        main(["init", "--arch", "resnet50", "--out", str(tmp_path / "x.pt")])
