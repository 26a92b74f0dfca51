"""Training: the config-named objective, the data-parallel train step, checkpoints and the loop."""
