"""SlimBench's version, written into every checkpoint and results row."""
__version__ = "0.1.0"
