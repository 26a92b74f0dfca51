"""Training: the program a config builds (`build`), the data-parallel steps, verified checkpoints, the run's
workdir and the loop."""
