"""Importers: the field's checkpoint layouts into SlimBench checkpoints, one module per layout.

Each module registers one ``Importer`` by name (``bench import --from NAME``) and cites the framework
file that defines its layout; ``--from auto`` asks every importer whether the keys are its own
(``base.detect``); ``--encoder momentum|ema`` takes a file's momentum (target) or EMA copy of the
encoder instead of the online one. Files are read by ``formats.read_weights`` (zip, legacy torch
format, safetensors, Lightning / MMEngine checkpoints) without unpickling arbitrary objects.

| name | layout |
|---|---|
| ``moco`` | MoCo v1/v2: ``module.encoder_q.*`` |
| ``mocov3`` | MoCo v3: ``module.base_encoder.*`` |
| ``solo-learn`` | Lightning ``.ckpt``: ``backbone.*`` + ``classifier.*`` |
| ``mmselfsup`` | MMSelfSup / MMPretrain: ``backbone.*`` + ``meta``, or ``extract_backbone_weights`` output |
| ``vissl`` | ``classy_state_dict.base_model.model.trunk._feature_blocks.*`` (linear evaluation: ``base_model._feature_blocks.*``) |
| ``lightly`` | benchmark modules (``backbone.*`` + ``online_classifier.*``); examples and tutorials (``backbone.0.*``, ``backbone.4.*``) |
| ``timm`` | timm ResNet (torchvision names), e.g. a hub ``.safetensors``, or train.py's checkpoint (``state_dict_ema``) |
| ``torchvision`` | torchvision ResNet state dict, any width and depth |
| ``slimclr`` | SlimCLR pretraining release, every width |
| ``slimclr-linear`` | SlimCLR "-Linear" release: every width and its switchable probe |
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from pretrain.checkpoints.format import Checkpoint
from pretrain.checkpoints.importers import lightly, mmselfsup, moco, mocov3, slimclr, slimclr_linear, solo_learn, timm, torchvision, vissl  # noqa: F401 (register)
from pretrain.checkpoints.importers.base import COPY_NAMES, IMPORTERS, Claim, ImportOptions, Importer, detect, get_importer, register_importer
from pretrain.checkpoints.importers.formats import WeightsFile, read_weights
from pretrain.checkpoints.importers.slimclr import import_slimclr
from pretrain.checkpoints.importers.torchvision import import_torchvision

__all__ = ["IMPORTERS", "Claim", "ImportOptions", "Importer", "WeightsFile", "detect", "get_importer",
           "import_file", "import_slimclr", "import_torchvision", "read_weights", "register_importer"]


def import_file(path: "str | Path", layout: str = "auto", options: ImportOptions = ImportOptions()
                ) -> Tuple[Checkpoint, Importer, Optional[Claim]]:
    """Read ``path`` and convert it with the importer ``layout`` (``auto``: the one that claims its keys).

    Returns the checkpoint, the importer used and, for ``auto``, its claim (why it was chosen).
    """
    wf = read_weights(path, "checkpoint to import")
    if layout == "auto":
        importer, claim = detect(wf)
    else:
        importer, claim = get_importer(layout), None
    from pretrain.checkpoints.format import CheckpointError

    if (options.width is not None or options.blocks is not None) and not importer.takes_width:
        raise CheckpointError(f"--width and --blocks describe a plain network (torchvision, timm); a "
                              f"{importer.name} file's widths and depth are read from its tensors")
    if importer.encoders == ("online",) and options.encoder != "online":   # else convert says what the file holds
        with_copy = [imp.name for imp in IMPORTERS.values() if options.encoder in imp.encoders]
        raise CheckpointError(f"{path}: --encoder {options.encoder}, but a {importer.name} file holds only its online "
                              f"encoder; layouts with {COPY_NAMES[options.encoder]}: {', '.join(with_copy)}")
    ckpt = importer.convert(wf, options)
    ckpt.config.setdefault("source", str(path))
    return ckpt, importer, claim
