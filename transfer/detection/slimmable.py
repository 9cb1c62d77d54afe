"""SlimCLR's detection protocol: one slimmable Mask R-CNN trained at every width, evaluated per width.

mzhaoshuai/SlimCLR ``benchmark/`` (an MMDetection 1.x) fine-tunes the whole slimmable network rather
than one detector per extracted width: every iteration runs the same batch at each width of
``flags.py`` ``train_width_mult_list`` (0.25, 0.5, 0.75, 1.0), each backward adds to the gradients,
then one clipped step (``apis/train.py`` ``Runner.train``). The backbone's BatchNorms are the
switchable ones of the slimmable ResNet; a narrow width's feature maps are zero-padded to the full
width's channels (``models/backbones/resnet.py:339-343``), so the FPN and heads are shared. Testing sets
one width at a time (``tools/test.py``). Here the backbone is SlimBench's own ``SlimResNet`` holding the
checkpoint's every width, under Detectron2's FPN and heads; ``SlimmableTrainer`` is Detectron2's
``DefaultTrainer`` with that step.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Sequence

from transfer.detection.compat import import_detectron2

import_detectron2()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from detectron2.config import CfgNode  # noqa: E402
from detectron2.engine import SimpleTrainer, hooks  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import BACKBONE_REGISTRY, Backbone  # noqa: E402
from detectron2.modeling.backbone import FPN  # noqa: E402
from detectron2.modeling.backbone.fpn import LastLevelMaxPool  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from pretrain.checkpoints.format import atomic_torch_save  # noqa: E402
from pretrain.errors import ConfigError  # noqa: E402
from pretrain.models.resnet import SlimResNet, plan_resnet  # noqa: E402
from pretrain.models.spec import SubnetSpec, format_width  # noqa: E402
from transfer.detection.backbone import fpn_level_name  # noqa: E402
from transfer.detection.metrics import SLIMMABLE_FPN_BACKBONE  # noqa: E402


class SlimmableResNetFeatures(Backbone):
    """``res2``-``res5`` of a ``SlimResNet`` at its active width, zero-padded to the full width's channels."""

    def __init__(self, encoder: SlimResNet, out_features: Sequence[str]):
        super().__init__()
        self.encoder = encoder
        full = plan_resnet(encoder.depth, encoder.widths[0], stem=encoder.stem)
        self._shapes = {f"res{s + 2}": ShapeSpec(channels=c, stride=st)
                        for s, (c, st) in enumerate(zip(full.stage_channels, full.stage_strides))}
        unknown = [f for f in out_features if f not in self._shapes]
        if unknown:
            raise ConfigError(f"MODEL.RESNETS.OUT_FEATURES: {unknown} are not stages of the slimmable ResNet; "
                              f"expected some of {sorted(self._shapes)}")
        self._out_features = list(out_features)

    def set_width(self, width: float) -> None:
        """Run every later forward at ``width`` (one of the encoder's widths)."""
        self.encoder.set_subnet(SubnetSpec(width))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        e = self.encoder
        x = e.maxpool(e.relu(e.bn1(e.conv1(x))))
        out = {}
        for s, layer in enumerate(e.stages()):
            x = layer(x)
            name = f"res{s + 2}"
            if name in self._out_features:
                missing = self._shapes[name].channels - x.shape[1]
                out[name] = F.pad(x, (0, 0, 0, 0, 0, missing)) if missing else x
        return out

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {name: self._shapes[name] for name in self._out_features}


@BACKBONE_REGISTRY.register()
def build_slimmable_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """Detectron2's FPN over the slimmable ResNet of ``MODEL.SLIMBENCH`` (``DEPTH``, ``STEM``, ``WIDTHS``)."""
    s = cfg.MODEL.SLIMBENCH
    if not s.WIDTHS:
        raise ConfigError(f"{SLIMMABLE_FPN_BACKBONE} needs MODEL.SLIMBENCH.WIDTHS: the widths the detector trains")
    bottom_up = SlimmableResNetFeatures(SlimResNet(s.DEPTH, widths=list(s.WIDTHS), stem=s.STEM),
                                        cfg.MODEL.RESNETS.OUT_FEATURES)
    top = LastLevelMaxPool()
    top.in_feature = fpn_level_name(bottom_up.output_shape()[cfg.MODEL.FPN.IN_FEATURES[-1]].stride)
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=top, fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


def features_of(model: torch.nn.Module) -> SlimmableResNetFeatures:
    """The slimmable backbone inside a (possibly DDP-wrapped) detector."""
    model = model.module if isinstance(model, DistributedDataParallel) else model
    return model.backbone.bottom_up


def load_encoder(model: torch.nn.Module, path: "str | Path") -> int:
    """Load a slimmable encoder's ``state_dict`` (written by ``save_encoder``) into the detector; tensors loaded."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    features_of(model).encoder.load_state_dict(state, strict=True)
    return len(state)


def save_encoder(encoder: SlimResNet, path: Path) -> Path:
    """The checkpoint's whole slimmable encoder (every width's BatchNorms), as the detector loads it."""
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("fc.")}
    atomic_torch_save(state, path)
    return path


class JointWidthsStep(SimpleTrainer):
    """SlimCLR's step: the same batch at every width (narrowest first), gradients summed, one optimizer step.

    The losses logged are the full width's, as upstream logs ``log_vars`` at the largest width only.
    """

    def __init__(self, model, data_loader, optimizer, widths: Sequence[float]):
        super().__init__(model, data_loader, optimizer)
        self.widths = sorted(widths)   # flags.py train_width_mult_list: [0.25, 0.5, 0.75, 1.0]

    def run_step(self):
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        self.optimizer.zero_grad()
        logged = None
        for width in self.widths:
            features_of(self.model).set_width(width)
            loss_dict = self.model(data)
            sum(loss_dict.values()).backward()
            if width == self.widths[-1]:
                logged = loss_dict
        self._write_metrics(logged, data_time)
        self.optimizer.step()


class SlimmableTrainer:
    """Mixin for ``Detectron2Trainer``: the joint-widths step, DDP that tolerates each width's unused
    BatchNorms, no end-of-training evaluation (``evaluate_widths`` evaluates each width instead)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        model = self._trainer.model
        if isinstance(model, DistributedDataParallel):   # a width leaves the other widths' BNs without grads
            model = DistributedDataParallel(model.module, device_ids=model.device_ids, broadcast_buffers=False,
                                            find_unused_parameters=True)
        self._trainer = JointWidthsStep(model, self._trainer.data_loader, self._trainer.optimizer,
                                        cfg.MODEL.SLIMBENCH.WIDTHS)

    def build_hooks(self):
        return [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]

    def evaluate_widths(self, cfg, widths: Sequence[float]) -> Dict[str, Dict[str, Dict[str, float]]]:
        """Detectron2's evaluation of the trained detector at each width: ``{"w0.5": results}``."""
        out = {}
        for width in widths:
            features_of(self.model).set_width(width)
            out[f"w{format_width(width)}"] = self.test(cfg, self.model)
        return out


def check_slimmable(cfg: CfgNode, subnets: Sequence[SubnetSpec]) -> None:
    """Refuse, before any work, what the slimmable detector cannot run: mixed precision and depth variants."""
    if cfg.SOLVER.AMP.ENABLED:   # JointWidthsStep is SimpleTrainer's fp32 step, as upstream trained
        raise ConfigError("SOLVER.AMP.ENABLED: the slimmable detector trains in fp32 (SlimCLR's benchmark/ has no "
                          "mixed precision); set SOLVER.AMP.ENABLED False")
    deep = [str(s) for s in subnets if s.depth is not None]
    if deep:   # SlimCLR's detector slims widths only
        widths = ", ".join(f"w{format_width(w)}" for w in cfg.MODEL.SLIMBENCH.WIDTHS)
        raise ConfigError(f"the slimmable detector ({SLIMMABLE_FPN_BACKBONE}) trains and tests widths only; "
                          f"sub-networks {', '.join(deep)} are depth variants (expected some of {widths})")
