"""Pretraining input: datasets, augmentations, the resumable loader and the DALI path."""
