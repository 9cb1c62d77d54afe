"""`bench` sub-commands, one module each; every module has ``register(sub, list_sub)``."""
