"""Pretraining recipes: typed dataclasses read from YAML with ``pretrain.config``.

A recipe has five sections (``method``, ``model``, ``data``, ``optim``, ``run``). The ``method``
section's schema is chosen by ``method.name``, so each method has its own keys and defaults
(temperature 0.2 for SlimCLR-MoCo v2, 1.0 for MoCo v3, ...) and a key of another method is
rejected by name. ``load_recipe`` returns the fully resolved recipe; ``to_dict`` of it is what
``--dry-run`` prints and what the checkpoint records.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Literal, Mapping, Optional, Sequence, Tuple

from pretrain.config import apply_overrides, from_dict, load_yaml, to_dict
from pretrain.errors import ConfigError
from pretrain.methods.losses import LOSS_WEIGHTINGS
from pretrain.models.resnet import ARCHS, parse_arch
from pretrain.models.spec import SubnetError, SubnetSpec, check_contained


@dataclass
class SlimCLRRecipe:
    """Keys shared by every SlimCLR variant: slow start, online distillation, loss re-weighting."""

    name: str = "slimclr-mocov2"
    temperature: float = 0.2
    slim_start_epoch: float = 0.0           # before it only the full width trains
    slim_start_lr: Optional[float] = None   # base lr of the global schedule from the switch on; null keeps optim.lr
    # params.py seed_loss (kd), mse_loss, dkd_loss, atkd_loss; none: no distillation (true/false read as kd/none)
    distill: Literal["none", "kd", "mse", "dkd", "atkd"] = "kd"
    distill_on: Literal["logits", "features"] = "logits"   # features: the normalized embeddings (params.py
                                            # inplace_distill for kd, mse_loss=1 for mse); logits: the similarities
    full_distill: bool = False              # params.py full_distill: every wider sub-network teaches too
    distill_alpha: float = 0.5              # sub-network loss = (1-a) contrastive + a distillation (aux_loss_w)
    teacher_temp: float = 5.0               # kd's temperatures (dkd and atkd have their own, fixed upstream)
    student_temp: float = 5.0
    loss_weights: str = "slimclr"           # losses.LOSS_WEIGHTINGS: slimclr (upstream 5), uniform (0), ...
    head_init_std: Optional[float] = 0.01   # N(0, std) weights, zero biases for the encoder's head; null: torch's

    def validate(self) -> None:
        if self.head_init_std is not None and self.head_init_std <= 0:
            raise ValueError(f"head_init_std: expected a positive std or null, got {self.head_init_std}")
        if self.loss_weights not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weights: expected one of {', '.join(LOSS_WEIGHTINGS)}, got {self.loss_weights!r}")
        if self.distill_on == "features" and self.distill not in ("kd", "mse"):
            raise ValueError(f"distill_on: features works with distill kd or mse (upstream's inplace_distill and "
                             f"mse_loss=1), got distill: {self.distill}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"distill_alpha: expected a value in [0, 1], got {self.distill_alpha}")
        for key in ("temperature", "teacher_temp", "student_temp"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: expected a positive value, got {getattr(self, key)}")
        if self.slim_start_epoch < 0:
            raise ValueError(f"slim_start_epoch: expected >= 0, got {self.slim_start_epoch}")


@dataclass
class MoCoRecipe(SlimCLRRecipe):
    """SlimCLR on MoCo: a full-width momentum (key) encoder."""

    momentum: float = 0.999                 # key encoder EMA momentum (start value when cosine)
    momentum_schedule: Literal["constant", "cosine"] = "constant"

    def validate(self) -> None:
        super().validate()
        _check_momentum(self.momentum)


@dataclass
class MoCoV2Recipe(MoCoRecipe):
    """SlimCLR-MoCo v2: queue of full-width keys, slimmable 2-layer MLP head."""

    modules: ClassVar[Tuple[str, ...]] = ("encoder", "head")   # trainable modules (optim.lr_scale keys)
    name: str = "slimclr-mocov2"
    queue_size: int = 65536
    proj_dims: List[int] = field(default_factory=lambda: [2048, 128])  # hidden (x width), output
    shuffle_bn: bool = True                 # keys from a shuffled batch, so BN cannot leak the positive
    bn_groups: int = 1                      # BN batches per rank, as if on this many GPUs (needed on one)

    def validate(self) -> None:
        super().validate()
        if self.queue_size < 1:
            raise ValueError(f"queue_size: expected a positive number of keys, got {self.queue_size}")
        if self.bn_groups < 1:
            raise ValueError(f"bn_groups: expected >= 1, got {self.bn_groups}")
        _check_dims("proj_dims", self.proj_dims)


@dataclass
class MoCoV3Recipe(MoCoRecipe):
    """SlimCLR-MoCo v3: no queue, slimmable projector and predictor, symmetric loss."""

    modules: ClassVar[Tuple[str, ...]] = ("encoder", "projector", "predictor")   # optim.lr_scale keys
    name: str = "slimclr-mocov3"
    temperature: float = 1.0
    momentum: float = 0.99
    momentum_schedule: Literal["constant", "cosine"] = "cosine"
    teacher_temp: float = 1.0
    student_temp: float = 1.0
    proj_dims: List[int] = field(default_factory=lambda: [4096, 256])   # MoCo_ResNet: 2 layers (ViT's has 3)
    pred_dims: List[int] = field(default_factory=lambda: [4096, 256])
    head_bn: bool = True                    # BatchNorm in projector and predictor

    def validate(self) -> None:
        super().validate()
        _check_dims("proj_dims", self.proj_dims)
        _check_dims("pred_dims", self.pred_dims)
        if self.pred_dims[-1] != self.proj_dims[-1]:
            raise ValueError(f"pred_dims: the predictor must end at the projection size {self.proj_dims[-1]}, "
                             f"got {self.pred_dims[-1]}")


@dataclass
class SimCLRRecipe(SlimCLRRecipe):
    """SlimCLR-SimCLR: no momentum encoder; NT-Xent over both views of the (gathered) batch."""

    modules: ClassVar[Tuple[str, ...]] = ("encoder", "head")   # optim.lr_scale keys
    name: str = "slimclr-simclr"
    temperature: float = 0.1                # s_simclr.py T
    proj_dims: List[int] = field(default_factory=lambda: [2048, 128])  # params.py simclr_mlp_dim (x width), dim

    def validate(self) -> None:
        super().validate()
        _check_dims("proj_dims", self.proj_dims)
        if len(self.proj_dims) != 2:
            raise ValueError(f"proj_dims: SimCLR's head has two layers, [hidden, output]; got {self.proj_dims}")


@dataclass
class BYOLRecipe:
    """SlimBench's reconstruction of DSPNet (BYOL): EMA target of the full network, sampled sub-networks."""

    modules: ClassVar[Tuple[str, ...]] = ("encoder", "projector", "predictor")   # optim.lr_scale keys
    name: str = "dspnet-byol"
    momentum: float = 0.996
    momentum_schedule: Literal["constant", "cosine"] = "cosine"
    proj_dims: List[int] = field(default_factory=lambda: [4096, 256])
    pred_dims: List[int] = field(default_factory=lambda: [4096, 256])
    desired: List[str] = field(default_factory=list)        # e.g. [w1.0, w0.5, w1.0-d2.2.2.2]
    depths: List[List[int]] = field(default_factory=list)   # depth grid besides the full depth
    num_random: int = 2                                     # random grid members per step
    proj_last_bn: bool = False                              # BN (affine=False) on the projection, as SimSiam
    uniformity_weight: float = 0.0                          # + w * Wang & Isola's uniformity of each prediction
    # sandwich-desired: largest, smallest, every desired network and num_random more (SlimBench's DSPNet);
    # sandwich: US-Nets' rule, largest, smallest and num_random more; desired: only the desired networks
    sample: Literal["sandwich-desired", "sandwich", "desired"] = "sandwich-desired"

    def validate(self) -> None:
        _check_momentum(self.momentum)
        _check_dims("proj_dims", self.proj_dims)
        _check_dims("pred_dims", self.pred_dims)
        if self.pred_dims[-1] != self.proj_dims[-1]:
            raise ValueError(f"pred_dims: the predictor must end at the projection size {self.proj_dims[-1]}, "
                             f"got {self.pred_dims[-1]}")
        if self.num_random < 0:
            raise ValueError(f"num_random: expected >= 0, got {self.num_random}")
        if self.uniformity_weight < 0:
            raise ValueError(f"uniformity_weight: expected >= 0, got {self.uniformity_weight}")
        for i, d in enumerate(self.desired):
            try:
                SubnetSpec.parse(d)
            except SubnetError as e:
                raise ValueError(f"desired[{i}]: {e}") from None


@dataclass
class SupervisedRecipe:
    """The supervised slimmable network (SlimCLR's ``main_slim.py``): cross-entropy of every width."""

    modules: ClassVar[Tuple[str, ...]] = ("encoder", "classifier")   # optim.lr_scale keys
    name: str = "supervised"
    num_classes: int = 1000                 # params.py num_classes
    classifier: Literal["slimmable", "switchable"] = "slimmable"   # params.py slim_fc: supervised | supervised_switch
    slim_loss: Literal["sum", "mean"] = "sum"                     # params.py slim_loss
    inplace_distill: bool = False           # params.py inplace_distill: sub-networks learn the full width's softmax

    def validate(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes: expected at least 2 classes, got {self.num_classes}")


METHOD_RECIPES = {"slimclr-mocov2": MoCoV2Recipe, "slimclr-mocov3": MoCoV3Recipe, "slimclr-simclr": SimCLRRecipe,
                  "dspnet-byol": BYOLRecipe, "supervised": SupervisedRecipe}


@dataclass
class ModelRecipe:
    """The slimmable encoder."""

    arch: str = "slim_resnet50"
    widths: List[float] = field(default_factory=lambda: [1.0, 0.75, 0.5, 0.25])
    stem: Literal["imagenet", "small"] = "imagenet"
    zero_init_residual: bool = False
    sync_bn: bool = False                   # convert BatchNorm to SyncBatchNorm under DDP

    def validate(self) -> None:
        try:
            parse_arch(self.arch)
        except ValueError as e:
            raise ValueError(f"arch: {e}") from None
        w = [round(float(x), 6) for x in self.widths]
        if not w or any(not 0 < x <= 1 for x in w) or w != sorted(set(w), reverse=True):
            raise ValueError(f"widths: expected distinct values in (0, 1], descending, got {self.widths}")


@dataclass
class DataRecipe:
    """Two-view training data."""

    dataset: Literal["imagefolder", "fashion-mnist"] = "imagefolder"
    root: Optional[str] = None              # ImageFolder train dir, or Fashion-MNIST IDX dir
    image_size: int = 224
    augment: Literal["mocov2", "byol", "simclr", "slim"] = "mocov2"   # byol is also MoCo v3's; slim: the supervised one
    crop_scale: List[float] = field(default_factory=lambda: [0.2, 1.0])
    blur: bool = True                       # the recipe's Gaussian blur; SimCLR drops it for small images
    batch_size: int = 256                   # global batch over all ranks
    workers: int = 4                        # data loader workers per rank
    prefetch: int = 2                       # batches each worker prepares ahead (DataLoader's prefetch_factor)
    backend: Literal["pil", "dali"] = "pil"  # dali: NVIDIA DALI decodes and augments (on the GPU when there is one)
    limit: Optional[int] = None             # use only the first N training images

    def validate(self) -> None:
        if self.dataset == "imagefolder" and not self.root:
            raise ValueError("root: an imagefolder dataset needs root: DIR (the train/ folder of CLASS/*.JPEG)")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale: expected [min, max] with 0 < min <= max <= 1, got {self.crop_scale}")
        for key in ("image_size", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: expected a positive value, got {getattr(self, key)}")
        if self.workers < 0:
            raise ValueError(f"workers: expected >= 0, got {self.workers}")
        if self.prefetch < 1:
            raise ValueError(f"prefetch: expected >= 1, got {self.prefetch}")
        if self.backend == "dali" and self.augment == "slim":
            raise ValueError("augment: slim runs on the PIL path only; use backend: pil")
        if self.backend == "dali" and self.dataset != "imagefolder":
            raise ValueError(f"backend: dali reads JPEG files of an imagefolder dataset, not {self.dataset!r}; "
                             f"use backend: pil")


@dataclass
class OptimRecipe:
    """Optimizer and learning-rate schedule (linear warm-up, then cosine)."""

    name: Literal["sgd", "lars"] = "sgd"
    lr: float = 0.03                        # peak lr for the global batch (no implicit scaling)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    exclude_bn_bias: bool = False           # no weight decay (and no LARS scaling) for BN and biases
    warmup_epochs: float = 0.0
    warmup_fraction: float = 0.0            # warm-up as a fraction of all steps (SlimCLR's warmup_proportion)
    min_lr: float = 0.0                     # warm-up start and lr floor (SlimCLR's lr_scheduler: 1e-8)
    grad_clip: Optional[float] = None       # max global gradient norm
    trust_coefficient: float = 0.001        # LARS eta
    lr_scale: Dict[str, float] = field(default_factory=dict)   # lr multiplier per module, e.g. {predictor: 10}

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr: expected a positive value, got {self.lr}")
        for module, scale in self.lr_scale.items():
            if scale <= 0:
                raise ValueError(f"lr_scale.{module}: expected a positive multiplier, got {scale}")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.min_lr < 0:
            raise ValueError("weight_decay, warmup_epochs and min_lr must be >= 0")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction: expected a fraction of all steps in [0, 1), got {self.warmup_fraction}")
        if self.warmup_fraction and self.warmup_epochs:
            raise ValueError("warmup_fraction: set either warmup_epochs or warmup_fraction, not both")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip: expected a positive norm or null, got {self.grad_clip}")


@dataclass
class MonitorRecipe:
    """``run.monitor``: an online kNN of every sub-network on a labelled train/val pair (pretrain/monitor.py)."""

    every_epochs: int = 1
    dataset: Literal["fashion-mnist", "imagefolder"] = "fashion-mnist"
    root: Optional[str] = None              # fashion-mnist: IDX folder (default: the package's); imagefolder:
                                            # a folder with train/CLASS/IMAGE and val/CLASS/IMAGE
    train_limit: Optional[int] = 5000       # evenly spaced images of each split
    val_limit: Optional[int] = 1000
    image_size: Optional[int] = None        # default: data.image_size
    k: int = 20
    temperature: float = 0.07
    batch_size: int = 256

    def validate(self) -> None:
        if self.dataset == "imagefolder" and not self.root:
            raise ValueError("root: an imagefolder monitor needs root: DIR holding train/ and val/")
        if min(self.every_epochs, self.k, self.batch_size, self.image_size or 1) < 1 or self.temperature <= 0:
            raise ValueError("every_epochs, k, batch_size and image_size must be positive, temperature > 0")
        for key in ("train_limit", "val_limit"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key}: expected a positive number of images or null, got {getattr(self, key)}")


@dataclass
class RunRecipe:
    """Length, seeds, precision, checkpoints and logs."""

    epochs: int = 100
    max_steps: Optional[int] = None         # stop after this many steps (the schedule still spans epochs)
    seed: int = 0
    deterministic: bool = False             # torch.use_deterministic_algorithms (exact resume on CPU)
    amp: bool = True                        # mixed precision, used only when CUDA is available
    cpu_bf16: bool = False                  # bfloat16 autocast on a CPU with AMX tiles (else fp32, logged)
    channels_last: bool = False             # NHWC memory format for model and inputs (faster convs on tensor cores)
    checkpoint_every: int = 1000            # steps
    log_every: int = 10                     # steps
    keep_every: Optional[int] = None        # epochs: also keep checkpoint_epoch<E>.pt every N epochs
    monitor: Optional[MonitorRecipe] = None  # online kNN per sub-network, logged beside the losses
    diagnose_every: Optional[int] = None    # steps: gradient norms per sub-network, their ratios and the head's
                                            # gradient (pretrain/diagnostics.py, SlimCLR's Figure 3); null: off
    diagnose_cosine: bool = False           # on those steps also each sub-network's gradient cosine to the full
                                            # network's (SlimBench's; one extra backward pass per network)

    def validate(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs: expected >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps: expected >= 1 or null, got {self.max_steps}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1")
        if self.diagnose_every is not None and self.diagnose_every < 1:
            raise ValueError(f"diagnose_every: expected a positive number of steps or null, got {self.diagnose_every}")
        if self.diagnose_cosine and self.diagnose_every is None:
            raise ValueError("diagnose_cosine: true needs diagnose_every: N (the steps it measures on)")
        if self.keep_every is not None and self.keep_every < 1:
            raise ValueError(f"keep_every: expected a positive number of epochs or null, got {self.keep_every}")


@dataclass
class Recipe:
    """A whole pretraining recipe."""

    method: Any = None
    model: ModelRecipe = field(default_factory=ModelRecipe)
    data: DataRecipe = field(default_factory=DataRecipe)
    optim: OptimRecipe = field(default_factory=OptimRecipe)
    run: RunRecipe = field(default_factory=RunRecipe)

    @property
    def method_name(self) -> str:
        return self.method.name


def _check_momentum(m: float) -> None:
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum: expected a value in [0, 1], got {m}")


def _check_dims(key: str, dims: Sequence[int]) -> None:
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"{key}: expected a non-empty list of positive sizes, got {list(dims)}")


def _check_subnets(recipe: Recipe, source: str) -> None:
    """Desired networks and depth grid must lie inside the model."""
    if not isinstance(recipe.method, BYOLRecipe):
        return
    stage_blocks = ARCHS[parse_arch(recipe.model.arch)][1]
    for i, d in enumerate(recipe.method.depths):
        if len(d) != len(stage_blocks) or any(not 1 <= b <= n for b, n in zip(d, stage_blocks)):
            raise ConfigError(f"{source}: key 'method.depths[{i}]': expected {len(stage_blocks)} block counts "
                              f"between 1 and {list(stage_blocks)}, got {d}")
    for i, d in enumerate(recipe.method.desired):
        try:
            check_contained(SubnetSpec.parse(d), recipe.model.widths, stage_blocks)
        except SubnetError as e:
            raise ConfigError(f"{source}: key 'method.desired[{i}]': {e}") from None


def parse_recipe(data: Mapping[str, Any], source: str) -> Recipe:
    """Build a Recipe from plain data; errors name ``source`` and the dotted key."""
    data = dict(data)
    method = data.pop("method", None)
    if not isinstance(method, Mapping) or "name" not in method:
        raise ConfigError(f"{source}: missing required key 'method.name' (one of {', '.join(METHOD_RECIPES)})")
    name = method["name"]
    cls = METHOD_RECIPES.get(name) if isinstance(name, str) else None   # a YAML list/map is unhashable
    if cls is None:
        raise ConfigError(f"{source}: key 'method.name': expected one of {', '.join(METHOD_RECIPES)}, "
                          f"got {name!r}")
    recipe = from_dict(Recipe, data, source)
    if isinstance(method.get("distill"), bool):   # version 1 spelling: a switch for the only distillation, kd
        method = {**method, "distill": "kd" if method["distill"] else "none"}
    recipe.method = from_dict(cls, method, source, prefix="method.")
    _check_subnets(recipe, source)
    for module in recipe.optim.lr_scale:
        if module not in recipe.method.modules:
            raise ConfigError(f"{source}: key 'optim.lr_scale.{module}': {recipe.method.name} has no module "
                              f"{module!r}; expected one of {', '.join(recipe.method.modules)}")
    if recipe.method.name == "supervised" and recipe.data.backend == "dali":
        raise ConfigError(f"{source}: key 'data.backend': dali serves two unlabelled views; the supervised method "
                          f"reads labelled images, use backend: pil")
    groups = getattr(recipe.method, "bn_groups", 1)
    if recipe.data.batch_size % groups or recipe.data.batch_size < 2 * groups:
        raise ConfigError(f"{source}: key 'method.bn_groups': expected a divisor of data.batch_size="
                          f"{recipe.data.batch_size} leaving at least 2 images per BN batch, got {groups}")
    return recipe


# Keys that say where the data lives or how often to log, not what a run computes.
DIGEST_IGNORES = ("data.root", "data.workers", "data.prefetch", "run.checkpoint_every", "run.log_every",
                  "run.channels_last", "run.keep_every", "run.monitor", "run.diagnose_every", "run.diagnose_cosine")
# Keys added after recipes were first digested, with the value every earlier run had: left out at that
# value, so earlier digests (individual baselines' pairing) and --resume of earlier runs still match.
LATER_DEFAULTS = {"method.distill_on": "logits", "method.full_distill": False}


def comparable_recipe(plain: Mapping[str, Any]) -> Dict[str, Any]:
    """A resolved recipe (``recipe_dict``, or one a checkpoint stored) in the spelling digests compare.

    ``method.distill`` is spelled as before it had modes (kd: true, none: false) and ``LATER_DEFAULTS``
    keys at their default are dropped, so a recipe digests as it did before those keys existed.
    """
    plain = json.loads(json.dumps(plain))
    method = plain.get("method", {})
    if method.get("distill") in ("kd", "none"):
        method["distill"] = method["distill"] == "kd"
    for key, default in LATER_DEFAULTS.items():
        section, name = key.split(".")
        if name in plain.get(section, {}) and plain[section][name] == default:
            del plain[section][name]
    return plain


def recipe_digest(recipe: Recipe) -> str:
    """sha256 of what ``recipe`` computes (the resolved recipe without ``DIGEST_IGNORES``)."""
    plain = comparable_recipe(recipe_dict(recipe))
    for key in DIGEST_IGNORES:
        section, name = key.split(".")
        plain.get(section, {}).pop(name, None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


def check_world(recipe: Recipe, world_size: int, source: str) -> None:
    """Refuse settings that cannot take effect with ``world_size`` processes (before any work starts)."""
    method = recipe.method
    if getattr(method, "shuffle_bn", False) and world_size * method.bn_groups == 1:
        raise ConfigError(f"{source}: key 'method.shuffle_bn': true, but this run has one process and "
                          f"method.bn_groups=1, so every key is normalized in one BN batch and no shuffle can "
                          f"happen; set method.bn_groups: N (N BN batches per rank, as on N GPUs) or "
                          f"method.shuffle_bn: false")


def load_recipe(path: "str | Path", overrides: Sequence[str] = ()) -> Recipe:
    """Read a YAML recipe, apply ``key=value`` overrides, validate and resolve every default."""
    data = apply_overrides(load_yaml(path), overrides, source=f"{path} (command line override)")
    return parse_recipe(data, str(path))


def recipe_dict(recipe: Recipe) -> Dict[str, Any]:
    """The resolved recipe as plain data (printed by --dry-run, stored in checkpoints)."""
    return to_dict(recipe)
