"""Checkpoint files: the format, kept copies, sub-network extraction and the importers of foreign layouts."""
