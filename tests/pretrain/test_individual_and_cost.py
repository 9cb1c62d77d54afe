"""Individual baselines (one network trained alone) and the training cost every checkpoint records."""
import pytest
import torch
import yaml

from benchmarks.cli import main
from pretrain.checkpoints.format import CheckpointError, load_checkpoint
from pretrain.errors import ConfigError
from pretrain.checkpoints.importers import import_torchvision
from pretrain.individual import baseline_subnets, individual_recipe
from pretrain.models.plain_resnet import PlainResNet
from pretrain.recipe import parse_recipe, recipe_digest
from pretrain.models.resnet import plan_resnet
from pretrain.checkpoints.extract import extract
from pretrain.models.slim_ops import _SwitchableBatchNorm
from pretrain.trainer import LOG_FILE, train
from tests.pretrain.test_trainer import tiny_recipe_dict

# tiny_recipe_dict's MoCo v2: 8 px images, batch 4, slim_resnet18 (small stem), head [16, 8], queue 24
N, D, K = 4, 8, 24


def hand_counted_mocov2_step_flops():
    """FLOPs of one MoCo v2 step of a width-0.5 ResNet-18 on 8 px images, counted layer by layer.

    Channels at w0.5: stem 32, stages 32/64/128/256; feature maps 8, 8, 4, 2, 1 px. A 3x3 conv
    costs 9 cin cout h w multiply-adds per image, a 1x1 shortcut cin cout h w.
    """
    stem = 9 * 3 * 32 * 8 * 8
    stage1 = 4 * 9 * 32 * 32 * 8 * 8
    def stage(cin, cout, px):   # a first block with stride 2 and a shortcut, then a second block
        return 9 * cin * cout * px * px + 9 * cout * cout * px * px + cin * cout * px * px + 2 * 9 * cout * cout * px * px
    encoder = stem + stage1 + stage(32, 64, 4) + stage(64, 128, 2) + stage(128, 256, 1)
    head = 256 * 8 + 8 * 8                      # Linear(256 -> int(16 * 0.5)) ReLU Linear(8 -> 8)
    forward = 2 * N * (encoder + head)          # 2 FLOPs per multiply-add
    keys = forward                              # the momentum encoder and head: forward only
    queries = forward + 2 * forward - 2 * N * stem   # backward: input and weight gradients, the stem weight only
    logits = 2 * (2 * N * D * K)                # q @ queue and its gradient for q (q . k is no matmul)
    return keys + queries + logits


def narrow(name="slimclr-mocov2", subnet="w0.5", **run):
    recipe = parse_recipe(tiny_recipe_dict(name, **run), "tiny.yaml")
    return recipe, *individual_recipe(recipe, subnet, "tiny.yaml")


def test_cost_is_the_hand_counted_flops_times_the_steps(tmp_path):
    recipe, alone, record = narrow()
    result = train(alone, tmp_path / "run", progress=False, individual=record)
    cost = load_checkpoint(result.checkpoint).extra["cost"]
    assert cost["flops_per_step"] == {"full width": hand_counted_mocov2_step_flops()}
    assert cost["steps"] == 8 and cost["train_flops"] == 8 * hand_counted_mocov2_step_flops()
    assert cost["images_seen"] == 8 * 4 and cost["devices"] == [1] and cost["device"] == ["cpu"]
    assert cost["wall_time_s"] > 0 and cost["device_seconds"] == pytest.approx(cost["wall_time_s"])


def test_slow_start_steps_cost_less_than_steps_of_every_width(tmp_path):
    recipe = parse_recipe(tiny_recipe_dict("slimclr-mocov2"), "tiny.yaml")   # slow start over at step 2
    cost = load_checkpoint(train(recipe, tmp_path / "run", progress=False).checkpoint).extra["cost"]
    full, every = cost["flops_per_step"]["full width"], cost["flops_per_step"]["all widths"]
    assert every > full
    assert cost["train_flops"] == 2 * full + 6 * every


def test_resume_adds_the_costs_of_its_segments(tmp_path):
    _, alone, record = narrow(max_steps=3)
    out = tmp_path / "run"
    first = load_checkpoint(train(alone, out, progress=False, individual=record).checkpoint).extra["cost"]
    _, alone, record = narrow()
    second = load_checkpoint(train(alone, out, resume=True, progress=False, individual=record).checkpoint)
    cost = second.extra["cost"]
    assert [s["steps"] for s in cost["segments"]] == [3, 5]
    assert cost["steps"] == 8 and cost["images_seen"] == 32
    assert cost["train_flops"] == 8 * hand_counted_mocov2_step_flops()
    assert cost["wall_time_s"] == pytest.approx(first["wall_time_s"] + cost["segments"][1]["wall_time_s"])
    assert second.extra["individual"] == record


def test_an_individual_run_trains_exactly_one_network(tmp_path):
    recipe, alone, record = narrow()
    assert alone.model.widths == [0.5] and recipe.model.widths == [1.0, 0.5]
    assert record == {"of_recipe_digest": recipe_digest(recipe), "subnet": "w0.5", "method": "slimclr-mocov2"}
    assert recipe_digest(alone) != recipe_digest(recipe)
    result = train(alone, tmp_path / "run", progress=False, individual=record)
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.widths == [0.5] and ckpt.extra["individual"] == record
    model = ckpt.build_model()
    assert all(len(m.bn) == 1 for m in model.modules() if isinstance(m, _SwitchableBatchNorm))
    logged = [__import__("json").loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    per_network = {k for line in logged for k in line if "/" in k}
    # no KD, no other width, from the first step; beside the loss, MoCo v2's similarity diagnostics
    assert per_network == {"w0.5/infonce", "w0.5/pos", "w0.5/neg_queue", "w0.5/neg_batch"}
    assert all(line["slim_active"] for line in logged)


def test_an_individual_dspnet_depth_variant_trains_only_that_network(tmp_path):
    recipe, alone, record = narrow("dspnet-byol", "w0.5-d1.1.1.1")
    assert [str(s) for s in baseline_subnets(recipe)] == ["w1.0", "w0.5", "w0.5-d1.1.1.1"]
    train(alone, tmp_path / "run", progress=False, individual=record)
    logged = (tmp_path / "run" / LOG_FILE).read_text()
    assert "w0.5-d1.1.1.1/byol" in logged and "w0.5/byol" not in logged and "w1.0" not in logged


def test_individual_of_a_width_the_recipe_lacks_is_refused():
    with pytest.raises(ConfigError, match=r"tiny\.yaml: --individual w0\.3: .*widths are 1\.0, 0\.5"):
        narrow(subnet="w0.3")
    with pytest.raises(ConfigError, match="full-depth networks only"):
        narrow(subnet="w0.5-d1.1.1.1")


def test_bench_pretrain_individual_all_writes_one_run_per_width(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict("slimclr-mocov2", max_steps=1)))
    out = tmp_path / "runs" / "tiny"
    assert main(["pretrain", "--config", str(path), "--out", str(out), "--individual", "all", "--no-progress"]) == 0
    for w in ("w1.0", "w0.5"):
        ckpt = load_checkpoint(tmp_path / "runs" / f"tiny-individual-{w}" / "checkpoint.pt")
        assert ckpt.extra["individual"]["subnet"] == w and ckpt.widths == [float(w[1:])]
    assert not out.exists()
    assert main(["list", "subnets", str(tmp_path / "runs" / "tiny-individual-w0.5" / "checkpoint.pt")]) == 0
    listed = capsys.readouterr().out
    assert "training cost: " in listed and "PFLOPs, 1 steps, 4 images" in listed
    assert "individual baseline w0.5 of recipe" in listed


def test_an_imported_checkpoint_has_an_unknown_cost(tmp_path, capsys):
    torch.save(PlainResNet(plan_resnet(18, 0.5, stem="small")).state_dict(), tmp_path / "r18x05.pth")
    assert main(["import", "--from", "torchvision", str(tmp_path / "r18x05.pth"), "--width", "0.5",
                 "--out", str(tmp_path / "c.pt")]) == 0
    assert main(["list", "subnets", str(tmp_path / "c.pt")]) == 0
    listed = capsys.readouterr().out
    assert "training cost: unknown" in listed
    assert "stem small; MACs at 32x32" in listed   # the resolution the small stem is for, as the complexity suite


@pytest.mark.parametrize("blocks", [None, (2, 2, 2, 2)])
def test_a_plain_narrow_resnet_imports_at_its_width(blocks):
    torch.manual_seed(0)
    plain = PlainResNet(plan_resnet(50, 0.5, blocks=blocks)).eval()
    with torch.no_grad():
        for m in plain.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ckpt = import_torchvision("r50x05.pth", state_dict=plain.state_dict(), width=0.5, blocks=blocks)
    spec = "w0.5" if blocks is None else "w0.5-d2.2.2.2"
    assert ckpt.widths == [0.5] and ckpt.arch["depth"] == 50
    assert ckpt.desired == ([] if blocks is None else [spec])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(extract(ckpt, spec).eval()(x), plain(x), atol=1e-5)


def test_a_narrow_resnet_of_another_width_names_what_does_not_fit():
    sd = PlainResNet(plan_resnet(50, 0.5)).state_dict()
    with pytest.raises(CheckpointError, match=r"r50x05\.pth: does not fit width 0\.25 of slim_resnet50 .*"
                                              r"conv1\.weight: \[32, 3, 7, 7\], expected \[16, 3, 7, 7\].*"
                                              r"stem has 32 channels, as width 0\.5 would"):
        import_torchvision("r50x05.pth", state_dict=sd, width=0.25)
    with pytest.raises(CheckpointError, match=r"--blocks 2\.2\.2\.2 but the file has 3\.4\.6\.3"):
        import_torchvision("r50x05.pth", state_dict=sd, width=0.5, blocks=(2, 2, 2, 2))
