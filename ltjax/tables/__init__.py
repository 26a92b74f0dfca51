"""Results tables: a spec (recipe, methods, seeds, papers' numbers) -> cells trained as ensembles -> mean ± std tables.

`ltjax-table experiments/tables/<name>.py` runs one; see `ltjax.tables.spec` for the spec and `ltjax.tables.run` for
how cells are grouped and resumed.
"""
from ltjax._extras import require_train_extra

require_train_extra(__name__)

from ltjax.tables.spec import METRICS, Row, Table, load_table

__all__ = ["METRICS", "Row", "Table", "load_table"]
