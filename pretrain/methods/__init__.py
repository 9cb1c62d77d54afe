"""Pretraining methods, registered by the names recipes use."""
from pretrain.methods.base import METHODS, PretrainMethod, StepContext, build_method, register_method
from pretrain.methods import (dspnet_byol, slimclr_mocov2, slimclr_mocov3, slimclr_simclr,  # noqa: F401  (register)
                              supervised)

__all__ = ["METHODS", "PretrainMethod", "StepContext", "build_method", "register_method"]
