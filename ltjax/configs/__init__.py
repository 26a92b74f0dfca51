"""Experiment configs shipped with the package: `digits` (the no-argument default) and the reference recipes that
`experiments/configs/` builds on."""
