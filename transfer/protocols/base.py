"""The protocol contract: what a suite's ``protocol:`` names and the driver runs.

A protocol is one module with one class registered by name. It declares two dataclass schemas,
``Params`` (hyper-parameters, the suite's ``params:`` block) and ``Dataset`` (the suite's
``dataset:`` block, whose ``check(data_root)`` raises ``DataError`` naming the folder layout it
expects), and ``run(ctx)`` yields ``Result`` rows for every sub-network in ``ctx.subnets``.
``describe(ctx)`` returns, without training and without needing the dataset, what the engine would
receive for each sub-network (``bench run --dry-run`` prints it).
It runs all sub-networks in one call because some protocols train them jointly (the switchable
linear probe). The driver validates, stores rows and handles failures; protocols never touch
the results store.

Protocol modules are listed in ``PROTOCOL_MODULES`` and imported only when their name is used,
so a classification suite never imports Detectron2 or MMSeg.
"""
from __future__ import annotations

import abc
import copy
import dataclasses
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Type

import torch

from pretrain.checkpoints.format import Checkpoint
from pretrain.config import to_dict
from pretrain.errors import ConfigError
from pretrain.models.spec import SubnetSpec

log = logging.getLogger(__name__)

# protocol name -> module that registers it
PROTOCOL_MODULES: Dict[str, str] = {
    "linear": "transfer.protocols.linear",
    "linear-fast": "transfer.protocols.linear",
    "semi": "transfer.protocols.semi",
    "knn": "transfer.protocols.knn",
    "complexity": "transfer.protocols.complexity",
    "latency": "transfer.protocols.latency",
    "stored-probe": "transfer.protocols.stored_probe",
    "detectron2": "transfer.detection.protocol",
    "mmseg": "transfer.segmentation.protocol",
}
PROTOCOLS: Dict[str, Type["Protocol"]] = {}


@dataclass(frozen=True)
class Result:
    """One measured value of one sub-network."""

    subnet: str
    metric: str
    value: float


def bn_batch_info(here: int, published: Optional[int], what: str) -> Dict[str, Any]:
    """How many images each BatchNorm normalizes together in this run, beside the published run's.

    Accumulating gradients reaches a published global batch on fewer processes, but BatchNorm's
    statistics still see only the images of one forward pass (times the processes SyncBN spans).
    Returns the run-info keys ``bn_batch``, ``bn_batch_published`` and ``bn_batch_note`` (None when equal).
    """
    note = None
    if published is not None and here != published:
        note = f"BatchNorm normalizes {here} images together here; {what} normalized {published}"
    return {"bn_batch": here, "bn_batch_published": published, "bn_batch_note": note}


def warn_bn_batch(ctx: "RunContext", info: Dict[str, Any]) -> None:
    """Log ``info``'s BN-batch note once for this run, naming the suite and the checkpoint."""
    if info.get("bn_batch_note"):
        log.warning("%s on %s: %s (results are not the published protocol's; the leaderboard marks the column)",
                    ctx.suite_name, ctx.checkpoint_digest[:12] or "this checkpoint", info["bn_batch_note"])


@dataclass
class RunContext:
    """Everything a protocol needs for one (suite, checkpoint) run."""

    suite_name: str
    checkpoint: Checkpoint
    subnets: List[SubnetSpec]
    params: Any                      # the protocol's Params dataclass, validated
    dataset: Any                     # the protocol's Dataset dataclass, validated and checked
    data_root: Path
    out_dir: Path                    # this run's folder: logs, caches, configs written for engines
    device: torch.device = field(default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    seed: int = 0
    launch: Dict[str, Any] = field(default_factory=dict)  # num_gpus, num_machines, dist_url, ...
    checkpoint_digest: str = ""      # sha256 of the checkpoint file; keys caches shared across runs
    cache_dir: Optional[Path] = None  # where protocols may cache work across runs (extracted features)
    info: Dict[str, Any] = field(default_factory=dict)  # notes a protocol stores with the run (subset digest, threads)
    work_root: Optional[Path] = None  # engines' work folders, kept across reruns (default: out_dir)
    # set by a dry run whose dataset check failed (the message): describe() must then not read the data
    data_error: Optional[str] = None

    def model(self):
        """A fresh SlimResNet with the checkpoint's weights."""
        return self.checkpoint.build_model()

    def work_dir(self, spec) -> Path:
        """The engine work folder of one sub-network at this run's seed.

        `bench run` roots it at (checkpoint digest, config digest), so a rerun of a killed run finds
        the engine's own checkpoints there and resumes from them.
        """
        return Path(self.work_root if self.work_root is not None else self.out_dir) / str(spec) / f"seed{self.seed}"


class Protocol(abc.ABC):
    """Base class of protocols; subclasses set ``name``, ``Params``, ``Dataset`` and ``run``."""

    name: ClassVar[str]
    Params: ClassVar[type]
    Dataset: ClassVar[type]
    description: ClassVar[str] = ""
    # set by a protocol whose engine starts its own processes: why `bench run` refuses torchrun for it
    spawns_own_processes: ClassVar[str] = ""
    # set by a protocol that drives a training engine (Detectron2, MMEngine) whose global state
    # outlives a run: callers running many suites give each such run a fresh process
    uses_engine: ClassVar[bool] = False

    def records_run(self, params: Any) -> bool:
        """Whether this process records the run in the results store (False on a follower machine)."""
        return True

    @abc.abstractmethod
    def run(self, ctx: RunContext) -> Iterator[Result]:
        """Measure every sub-network in ``ctx.subnets`` and yield its rows."""

    def describe(self, ctx: RunContext) -> Dict[str, Any]:
        """What the engine would receive for each sub-network, as plain YAML-dumpable data keyed by its
        string, built without training and without reading the dataset when ``ctx.data_error`` is set.

        This default gives the resolved ``params`` and ``dataset`` blocks, which is all a protocol without
        an engine configuration of its own (complexity, latency) hands on.
        """
        blocks = {"params": to_dict(ctx.params), "dataset": to_dict(ctx.dataset)}
        return {str(spec): copy.deepcopy(blocks) for spec in ctx.subnets}


def describe_optimizer(opt: torch.optim.Optimizer) -> Dict[str, Any]:
    """A torch optimizer as plain data: its class and each parameter group's settings (not its tensors)."""
    groups = []
    for group in opt.param_groups:
        settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()
                    if k != "params" and isinstance(v, (bool, int, float, str, tuple, type(None)))}
        groups.append({**settings, "tensors": len(group["params"])})
    return {"type": type(opt).__name__, "param_groups": groups}


def register_protocol(cls: Type[Protocol]) -> Type[Protocol]:
    """Class decorator: register a protocol under its ``name``."""
    for attr in ("name", "Params", "Dataset"):
        if not hasattr(cls, attr):
            raise TypeError(f"protocol {cls.__name__} must define {attr}")
    if not (dataclasses.is_dataclass(cls.Params) and dataclasses.is_dataclass(cls.Dataset)):
        raise TypeError(f"protocol {cls.__name__}: Params and Dataset must be dataclasses")
    PROTOCOLS[cls.name] = cls
    return cls


def get_protocol(name: str, source: str = "suite") -> Type[Protocol]:
    """The protocol class registered as ``name`` (importing its module on first use)."""
    if name not in PROTOCOLS and name in PROTOCOL_MODULES:
        importlib.import_module(PROTOCOL_MODULES[name])
    if name not in PROTOCOLS:
        raise ConfigError(f"{source}: unknown protocol {name!r}; expected one of {', '.join(sorted(PROTOCOL_MODULES))}")
    return PROTOCOLS[name]
