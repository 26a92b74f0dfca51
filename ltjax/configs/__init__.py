"""Experiment configs shipped with the package: `digits` (the no-argument default) and the reference recipes that
`experiments/configs/` builds on."""
from ltjax._extras import require_train_extra

require_train_extra(__name__)

