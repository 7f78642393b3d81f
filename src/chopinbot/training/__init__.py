"""Training a model: the loop, its checkpoints and its per-epoch records."""
