"""Training: typed configs, batching of padded query lists, the training loop, checkpoints."""
