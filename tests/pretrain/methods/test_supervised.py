"""The supervised slimmable baseline (SlimCLR main_slim.py): its loss against upstream's formula, the stored
probe, the 'slim' augmentation's lighting, the R50 recipe as slimmable.sh runs it, and a short run."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.cli import main
from pretrain.data.augment import PILLighting, two_view_transforms
from pretrain.checkpoints.format import load_checkpoint
from pretrain.errors import ConfigError
from pretrain.methods import StepContext, build_method
from pretrain.recipe import SupervisedRecipe, load_recipe, parse_recipe
from pretrain.models.spec import SubnetSpec
from pretrain.trainer import build_encoder, train
from tests.pretrain.test_trainer import tiny_recipe_dict

ROOT = Path(__file__).resolve().parents[3]


def supervised_dict(**method):
    data = tiny_recipe_dict(max_steps=3)
    data["method"] = {"name": "supervised", "num_classes": 10, **method}
    data["data"].update(augment="slim", crop_scale=[0.08, 1.0])
    return data


def method_of(**cfg):
    recipe = parse_recipe(supervised_dict(**cfg), "tiny")
    torch.manual_seed(0)
    return build_method(recipe, build_encoder(recipe)).train()


@pytest.mark.parametrize("inplace_distill", [False, True])
@pytest.mark.parametrize("slim_loss", ["sum", "mean"])
def test_loss_is_main_slim_train_epoch_of_the_same_logits(inplace_distill, slim_loss):
    m = method_of(inplace_distill=inplace_distill, slim_loss=slim_loss)
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 3, 9, 3])
    torch.manual_seed(1)
    loss, terms = m(images, labels, StepContext(0, 10, 0.0))
    # upstream, written out: logits of each width from the same network state (BN in train mode again)
    torch.manual_seed(1)
    w = m.classifier.weight
    outs = {}
    for width in (1.0, 0.5):
        m.encoder.set_subnet(SubnetSpec(width))
        f = m.encoder(images)
        outs[width] = f @ w[:, : f.shape[1]].T + m.classifier.bias
    soft_target = F.softmax(outs[1.0], dim=1).detach()
    losses = [F.cross_entropy(outs[1.0], labels)]
    if inplace_distill:   # CrossEntropyLossSoft: -sum(target * log_softmax(output), 1).mean()
        losses.append(-(F.log_softmax(outs[0.5], dim=1) * soft_target).sum(1).mean())
    else:
        losses.append(F.cross_entropy(outs[0.5], labels))
    expected = sum(losses) if slim_loss == "sum" else sum(losses) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["w0.5/ce"].item() == pytest.approx(losses[1].item(), rel=1e-5)


def test_slimmable_classifier_is_one_weight_and_the_stored_probe_its_slices():
    m = method_of()
    probe = m.stored_probe()
    w = m.classifier.weight.detach()
    assert probe["subnets"] == ["w1.0", "w0.5"] and probe["num_classes"] == 10
    assert torch.equal(probe["state_dict"]["heads.1.weight"], w[:, :256])
    assert torch.equal(probe["state_dict"]["heads.0.weight"], w)
    # s_resnet.py reset_parameters: N(0, 0.01) linear weights, zero biases
    assert abs(float(w.std()) - 0.01) < 0.002 and not m.classifier.bias.any()
    switch = method_of(classifier="switchable")
    assert switch.stored_probe()["state_dict"]["heads.1.weight"].shape == (10, 256)


def test_lighting_is_upstreams_formula_on_the_0_255_image():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8))
    torch.manual_seed(3)
    got = np.asarray(PILLighting(0.1)(image))
    torch.manual_seed(3)
    rnd = (torch.randn(3) * 0.1).numpy().astype("float32")   # the same draw, in upstream's arithmetic
    eigval = np.asarray([0.2175, 0.0188, 0.0045])
    eigvec = np.asarray([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
    inc = np.dot(eigvec, (rnd * eigval).reshape((3, 1))).reshape((3,))
    expected = np.clip(np.add(np.asarray(image), inc), 0, 255).astype(np.uint8)
    assert np.array_equal(got, expected)


def test_slim_augmentation_is_upstreams_list():
    view, _ = two_view_transforms("slim", 224, (0.08, 1.0))
    names = [type(t).__name__ for t in view.transforms]
    assert names == ["RandomResizedCrop", "ColorJitter", "PILLighting", "RandomHorizontalFlip", "ToTensor",
                     "Normalize"]
    crop, jitter = view.transforms[0], view.transforms[1]
    assert crop.scale == (0.08, 1.0) and jitter.brightness == (0.6, 1.4) and jitter.saturation == (0.6, 1.4)
    assert jitter.hue is None and view.transforms[2].alphastd == 0.1


def test_r50_recipe_is_slimmable_sh_case_01():
    r = load_recipe(ROOT / "configs/pretrain/supervised-slimmable-r50-100ep.yaml")
    assert isinstance(r.method, SupervisedRecipe)
    assert (r.method.classifier, r.method.slim_loss, r.method.inplace_distill) == ("slimmable", "sum", False)
    assert (r.optim.name, r.optim.lr, r.optim.weight_decay, r.optim.warmup_fraction) == ("sgd", 0.2, 1e-4, 0.05)
    assert (r.run.epochs, r.data.batch_size, r.data.augment, r.data.crop_scale) == (100, 512, "slim", [0.08, 1.0])
    assert r.model.widths == [1.0, 0.75, 0.5, 0.25] and r.model.arch == "slim_resnet50"


def test_dry_run_names_the_classifier_and_the_networks(capsys):
    assert main(["pretrain", "--config", str(ROOT / "configs/pretrain/supervised-slimmable-r50-100ep.yaml"),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Linear(2048->1000, slimmable)" in out and "every width (4 networks" in out


def test_a_short_run_stores_its_classifier_as_the_probe(tmp_path):
    result = train(parse_recipe(supervised_dict(), "tiny"), tmp_path, progress=False)
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.method == "supervised" and ckpt.probe["subnets"] == ["w1.0", "w0.5"]


def test_more_classes_than_the_classifier_and_dali_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="num_classes is 5"):
        train(parse_recipe(supervised_dict(num_classes=5), "tiny"), tmp_path, progress=False)
    data = supervised_dict()
    data["data"].update(backend="dali", dataset="imagefolder", root=str(tmp_path), augment="mocov2")
    with pytest.raises(ConfigError, match="data.backend"):
        parse_recipe(data, "tiny")
