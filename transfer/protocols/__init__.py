"""Downstream protocols, registered by name; see ``base.py`` for the contract."""
from .base import PROTOCOLS, Protocol, Result, RunContext, get_protocol, register_protocol

__all__ = ["PROTOCOLS", "Protocol", "Result", "RunContext", "get_protocol", "register_protocol"]
