"""Pretraining methods, registered by the names recipes use."""
from pretrain.methods.base import METHODS, PretrainMethod, StepContext, build_method, register_method
from pretrain.methods import dspnet_byol, slimclr_mocov2, slimclr_mocov3, supervised  # noqa: F401  (register the methods)

__all__ = ["METHODS", "PretrainMethod", "StepContext", "build_method", "register_method"]
