"""Training: the program a config builds (`build`), the data-parallel steps, verified checkpoints, the run's
workdir and the loop."""
from ltjax._extras import require_train_extra

require_train_extra(__name__)

