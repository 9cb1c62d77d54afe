"""Slimmable networks and their self-supervised pretraining (torch and torchvision only)."""
from .spec import SubnetSpec, SubnetError
from .version import __version__

__all__ = ["SubnetSpec", "SubnetError", "__version__"]
