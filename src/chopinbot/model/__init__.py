"""The network, its loss and metrics, predictions over a split, and checkpoints."""
