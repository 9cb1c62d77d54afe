"""Slimmable networks and their self-supervised pretraining (torch and torchvision only)."""
from pretrain.models.spec import SubnetSpec, SubnetError
from pretrain.version import __version__

__all__ = ["SubnetSpec", "SubnetError", "__version__"]
