"""Semantic segmentation transfer through MMSegmentation (imported only by the ``mmseg`` protocol)."""
