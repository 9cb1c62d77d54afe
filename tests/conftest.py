"""Shared fixtures: tiny slimmable networks with non-trivial BatchNorm state; every test starts from the same
process-wide state (logging, environment, torch's global switches), whatever ran before it."""
import logging
import os

import pytest
import torch

from pretrain.models.resnet import SlimResNet


# Under pytest-xdist each worker takes one core: torch's own threads would oversubscribe them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def _own_handlers(logger: logging.Logger) -> list:
    """A logger's handlers but pytest's (its capture handlers change with every test phase)."""
    return [h for h in logger.handlers if not type(h).__module__.startswith("_pytest")]


def _logging_state():
    """Every logger's level, propagation, disabled flag and handlers (the root's included)."""
    loggers = [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]
    return logging.root.manager.disable, [(lg, lg.level, lg.propagate, lg.disabled, _own_handlers(lg))
                                          for lg in loggers]


def _torch_state():
    return (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_default_dtype(),
            torch.is_grad_enabled(), torch.is_anomaly_enabled())


@pytest.fixture(autouse=True)
def isolated_process_state():
    """Restore logging, os.environ and torch's global switches after each test, so no test sees another's.

    Code under test configures logging (`bench`'s basicConfig, Detectron2's and MMEngine's loggers), exports
    torchrun's variables and sets deterministic modes; a test asserting on a warning or a rank must not
    depend on which of those ran earlier in the same process.
    """
    disable, loggers = _logging_state()
    environ = dict(os.environ)
    torch_state = _torch_state()
    yield
    logging.disable(disable)
    for lg, level, propagate, disabled, handlers in loggers:
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled
        for h in [h for h in _own_handlers(lg) if h not in handlers]:
            lg.removeHandler(h)
        for h in [h for h in handlers if h not in lg.handlers]:
            lg.addHandler(h)
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)
    threads, deterministic, warn_only, dtype, grad, anomaly = torch_state
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)
    torch.autograd.set_detect_anomaly(anomaly)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm distinct affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model


@pytest.fixture
def slim_r18():
    torch.manual_seed(0)
    return randomize_bn(SlimResNet(18, widths=[1.0, 0.75, 0.5, 0.25], stem="small")).eval()
