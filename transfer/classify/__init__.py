"""Classification protocols' building blocks: the dataset block, the switchable probe, kNN, DDP helpers."""
