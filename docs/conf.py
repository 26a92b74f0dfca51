"""Sphinx configuration of ltjax's documentation.

Build (warnings are errors, as in the tests): `.venv/bin/python -m sphinx -W -b html docs docs/_build/html`.
The API reference, the config keys and the method pages are generated from the code by `_ext/ltjax_docs.py`.
"""
import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))
# Importing the training modules must not grab an accelerator or print JAX's device warnings.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import ltjax  # noqa: E402

project = "ltjax"
author = "The ltjax authors"
copyright = "The ltjax authors"
release = version = ltjax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "ltjax_docs",
]

exclude_patterns = ["_build"]
templates_path = []
# The docstrings write code as Markdown does, `name`: a dotted name links to the object it names, anything else
# (`[B, C]`, `--config.loss.name=<name>`) is shown as code (docs/_ext/ltjax_docs.py).
default_role = "ltjax-code"
nitpicky = False
# Command-line flags (`--config.x`) keep their two hyphens.
smartquotes = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {}
autosummary_generate = False

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
# The attributes' types are in the signature; the annotations' module paths would repeat them, less readably.
napoleon_attr_annotations = False
napoleon_use_rtype = False

html_theme = "alabaster"
html_title = f"ltjax {release}"
html_theme_options = {
    "description": "Long-tailed visual recognition in JAX and Flax",
    "page_width": "1200px",
    "sidebar_width": "260px",
}
