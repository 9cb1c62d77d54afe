"""Interference diagnostics of a slimmable pretraining: the evidence SlimCLR's paper is about.

Sub-networks that share weights interfere, "as evidenced by gradient magnitude imbalance and gradient
direction divergence" (SlimCLR, IJCV 2024, section 3 and Figure 3). On every ``run.diagnose_every``-th
step, after the backward pass and before clipping and the optimizer step, this measures:

* **magnitude** (upstream ``models/utils.py`` ``get_grad_norm``): for each network, the mean over the
  online encoder's and heads' non-BatchNorm weights of the L2 norm of the gradient slice that network
  computes with. Upstream slices ``grad[:int(w*out), :int(w*in)]`` (full output for ``fc``, full input
  for the first conv); here the slice is traced from SlimBench's own channel plan (the leading
  ``active_out`` filters over the channels its producer really gives), so it is the slice a width really
  uses. The gradient is the step's, of the summed loss, as upstream's; every listed width is measured on
  every diagnostic step, also during the slow start (then the small widths' slices hold only the full
  width's gradient, as in upstream's log). Logged as ``grad/norm_<subnet>``, with the paper's two ratios
  (``visualize/plot_grad.py`` ``plot_lines_ratio``): ``grad/ratio_full_smallest`` = n_full / n_smallest and
  ``grad/ratio_rest_smallest`` = sqrt(n_full^2 - n_smallest^2) / n_smallest, full and smallest being the
  largest and the smallest listed width at full depth. DSPNet adds every network its step sampled.
* **direction** (upstream ``save_last_fc_grad``): the two largest singular values of the gradient of the
  projection head's last layer (``grad/head_sv1``, ``grad/head_sv2``), and that gradient itself appended
  to the run's ``head_grad.bin`` (one file; ``read_trajectory``) for ``bench diagnose``'s PCA trajectory.
* **SlimBench's addition** (``run.diagnose_cosine``, not the paper's; one extra backward pass per network on
  diagnostic steps): the cosine between each sub-network's own loss gradient and the full network's, over
  the weight slices the sub-network uses (``grad/cos_<subnet>``). Per rank (before DDP's averaging).
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from pretrain.models.slim_ops import SlimConv2d, SlimLinear, SlimMLP
from pretrain.models.spec import SubnetError, SubnetSpec

TRAJECTORY_FILE = "head_grad.bin"
_MAGIC = b"SLIMBENCH-GRAD1\n"
_HEADER = 256   # bytes: magic, then a JSON line padded with spaces

Slices = Dict[str, Tuple[torch.Tensor, int, int]]   # weight name -> (weight, rows, columns) a network uses


def _slim_layers(method: nn.Module) -> Dict[nn.Module, str]:
    """The method's trainable slimmable convolutions and linear layers, by module, with their weight's name."""
    return {m: f"{name}.weight" for name, m in method.named_modules()
            if isinstance(m, (SlimConv2d, SlimLinear)) and m.weight.requires_grad}


def trainable_heads(method: nn.Module) -> List[nn.Module]:
    """The method's trained slimmable heads in the order they run (projector, predictor; a classifier)."""
    return [m for _, m in method.named_children()
            if isinstance(m, (SlimMLP, SlimLinear)) and any(p.requires_grad for p in m.parameters())]


def _head_linears(head: nn.Module) -> List[SlimLinear]:
    return [head] if isinstance(head, SlimLinear) else [m for m in head.layers if isinstance(m, SlimLinear)]


@torch.no_grad()
def trace_slices(method: nn.Module, spec: SubnetSpec, image_size: int) -> Slices:
    """The weight slice every trainable slimmable layer uses in the network ``spec``.

    The encoder is traced by running it once at ``spec`` on a small blank batch in eval mode (no state
    changes: eval BatchNorm updates nothing), recording each layer's ``active_out`` and input channels;
    the heads follow their own channel rule from the encoder's feature count, as ``head_summary`` does.
    """
    encoder = method.encoder
    layers = _slim_layers(method)
    found: Slices = {}

    def record(module, inputs):
        if module in layers:
            rows = module.active_out or module.weight.shape[0]
            found[layers[module]] = (module.weight, rows, inputs[0].shape[1])
    hooks = [m.register_forward_pre_hook(record) for m in encoder.modules() if m in layers]
    training = encoder.training
    param = next(encoder.parameters())
    try:
        encoder.eval()
        with encoder.subnet(spec):
            encoder.forward_features(torch.zeros(1, 3, image_size, image_size, device=param.device,
                                                 dtype=param.dtype))
    finally:
        for h in hooks:
            h.remove()
        encoder.train(training)
    index = encoder.width_index(spec.width)
    features = encoder.num_features(spec)
    for head in trainable_heads(method):
        for linear_i, m in enumerate(_head_linears(head)):
            # a bare SlimLinear (a classifier) writes every output; a SlimMLP follows its channel rule
            rows = m.weight.shape[0] if head is m else head._out_size(linear_i, head.widths[index])
            if m in layers:
                found[layers[m]] = (m.weight, rows, features)
            features = rows
    return found


def mean_slice_norm(slices: Slices) -> float:
    """Upstream's ``get_grad_norm`` for one network: the mean L2 norm of its weights' gradient slices."""
    norms = [w.grad[:rows, :cols].float().norm() for w, rows, cols in slices.values() if w.grad is not None]
    # a weight without gradient this step counts as 0; one read from the device per network
    return float(torch.stack(norms).double().sum()) / max(len(slices), 1) if norms else 0.0


def gradient_ratios(full: float, smallest: float) -> Dict[str, float]:
    """SlimCLR's Figure 3 ratios: ||g_full|| / ||g_small|| and ||g_full \\ small|| / ||g_small||."""
    if not smallest > 0:
        return {}
    rest = math.sqrt(max(full * full - smallest * smallest, 0.0))
    return {"grad/ratio_full_smallest": full / smallest, "grad/ratio_rest_smallest": rest / smallest}


def slice_cosine(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], slices: Slices) -> float:
    """Cosine between two gradients (weight name -> gradient) over the slices of one network."""
    dot = na = nb = 0.0
    for name, (_, rows, cols) in slices.items():
        if name not in a or name not in b:
            continue
        x, y = a[name][:rows, :cols].double(), b[name][:rows, :cols].double()
        dot += float((x * y).sum())
        na += float((x * x).sum())
        nb += float((y * y).sum())
    return dot / math.sqrt(na * nb) if na > 0 and nb > 0 else float("nan")


def networks_of(terms: Iterable[str]) -> List[SubnetSpec]:
    """The networks a step's terms name (``w0.5-d1.1.1.1/byol`` -> w0.5-d1.1.1.1), in order."""
    out: List[SubnetSpec] = []
    for key in terms:
        head, _, rest = key.partition("/")
        try:
            spec = SubnetSpec.parse(head)
        except SubnetError:
            continue
        if rest and spec not in out:
            out.append(spec)
    return out


class GradientDiagnostics:
    """Measures one diagnostic step (see the module docstring) and keeps the head-gradient trajectory."""

    def __init__(self, method: nn.Module, image_size: int, out: Path, write: bool,
                 resume_step: Optional[int] = None, cosine: bool = False):
        self.method, self.image_size, self.cosine = method, image_size, cosine
        encoder = method.encoder
        self.widths = [SubnetSpec(w) for w in encoder.widths]
        self.full, self.smallest = self.widths[0], min(self.widths, key=lambda s: s.width)
        self._slices: Dict[SubnetSpec, Slices] = {}
        heads = trainable_heads(method)
        last = _head_linears(heads[0])[-1] if heads else None
        self.head_weight = last.weight if last is not None else None
        self.trajectory = TrajectoryFile(out / TRAJECTORY_FILE, self.head_weight.shape, resume_step) \
            if write and self.head_weight is not None else None

    def slices(self, spec: SubnetSpec) -> Slices:
        if spec not in self._slices:
            self._slices[spec] = trace_slices(self.method, spec, self.image_size)
        return self._slices[spec]

    def network_gradients(self, losses: Dict[str, torch.Tensor]) -> Dict[str, Dict[str, torch.Tensor]]:
        """Each network's own loss gradient on the weights (``run.diagnose_cosine``), before the step's backward."""
        named = {name: m.weight for m, name in _slim_layers(self.method).items()}
        names, weights = list(named), list(named.values())
        out = {}
        for net, loss in losses.items():
            grads = torch.autograd.grad(loss, weights, retain_graph=True, allow_unused=True)
            out[net] = {n: g.detach() for n, g in zip(names, grads) if g is not None}
        return out

    def measure(self, step: int, terms: Iterable[str],
                own: Optional[Dict[str, Dict[str, torch.Tensor]]] = None) -> Dict[str, float]:
        """The diagnostic record of this step (norms, ratios, singular values, cosines); appends the trajectory."""
        record: Dict[str, float] = {}
        networks = list(dict.fromkeys(self.widths + networks_of(terms)))
        norms = {spec: mean_slice_norm(self.slices(spec)) for spec in networks}
        for spec, n in norms.items():
            record[f"grad/norm_{spec}"] = n
        if self.full != self.smallest:   # a single-width network has no ratio
            record.update(gradient_ratios(norms[self.full], norms[self.smallest]))
        if self.head_weight is not None and self.head_weight.grad is not None:
            g = self.head_weight.grad.detach().float()
            s = torch.linalg.svdvals(g)
            record["grad/head_sv1"] = float(s[0])
            if len(s) > 1:
                record["grad/head_sv2"] = float(s[1])
            if self.trajectory is not None:
                self.trajectory.append(step, g)
        if own:
            full = own.get(str(self.full))
            for net, grads in own.items():
                if full is not None and net != str(self.full):
                    record[f"grad/cos_{net}"] = slice_cosine(grads, full, self.slices(SubnetSpec.parse(net)))
        return record


class TrajectoryFile:
    """The head's gradient at each diagnostic step, appended to one file of fixed-size records.

    A 256-byte header (magic and a JSON line: shape, dtype) is followed by records of an int64 step and
    the gradient in float16. Each record is appended with one write and fsynced; a reader ignores a torn
    last record, and a resumed run drops the records past its step, as ``log.jsonl`` drops its lines.
    """

    def __init__(self, path: Path, shape, resume_step: Optional[int] = None):
        self.path, self.shape = Path(path), tuple(int(s) for s in shape)
        self.record = 8 + 2 * int(np.prod(self.shape))
        if self.path.exists() and resume_step is not None:
            steps, _ = read_trajectory(self.path)
            keep = int((steps <= resume_step).sum())
            with open(self.path, "r+b") as f:
                f.truncate(_HEADER + keep * self.record)
        else:
            header = _MAGIC + json.dumps({"shape": list(self.shape), "dtype": "float16"}).encode()
            with open(self.path, "wb") as f:
                f.write(header.ljust(_HEADER - 1) + b"\n")

    def append(self, step: int, grad: torch.Tensor) -> None:
        data = struct.pack("<q", int(step)) + grad.detach().cpu().to(torch.float16).numpy().tobytes()
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def read_trajectory(path: "str | Path") -> Tuple[np.ndarray, np.ndarray]:
    """``(steps, gradients)`` of a ``head_grad.bin``: gradients as float32, one flattened row per step."""
    path = Path(path)
    with open(path, "rb") as f:
        header = f.read(_HEADER)
        if not header.startswith(_MAGIC):
            raise ValueError(f"{path}: not a SlimBench gradient trajectory (expected the header {_MAGIC!r})")
        meta = json.loads(header[len(_MAGIC):].decode().strip())
        size = int(np.prod(meta["shape"]))
        body = f.read()
    record = 8 + 2 * size
    count = len(body) // record   # a torn last record (a killed write) is left out
    raw = np.frombuffer(body[: count * record], dtype=np.uint8).reshape(count, record)
    steps = raw[:, :8].copy().view("<i8").reshape(count)
    grads = raw[:, 8:].copy().view(np.float16).reshape(count, size).astype(np.float32)
    return steps, grads
