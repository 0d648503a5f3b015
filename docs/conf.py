"""Sphinx configuration: myst-nb pages and executed tutorials, autosummary API, book theme."""

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "src"))

import pixnet  # noqa: E402

project = "pixnet"
author = "pixnet developers"
copyright = "2026, pixnet developers"
version = release = pixnet.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",
]
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "inherited-members": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
typehints_defaults = "comma"
always_document_param_types = False
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath"]
myst_heading_anchors = 3
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "generated/*.rst.tmp"]

# Tutorials live in ../tutorials (stored without outputs); they are executed on every build.
nb_execution_mode = "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

html_theme = "sphinx_book_theme"
html_title = "pixnet"
html_static_path = ["_static"]
html_theme_options = {
    "repository_url": "https://github.com/scverse/pixnet",
    "use_repository_button": True,
    "path_to_docs": "docs/",
}
suppress_warnings = ["mystnb.unknown_mime_type", "config.cache"]


def _copy_tutorials(app):
    src, dst = HERE.parent / "tutorials", HERE / "tutorials"
    dst.mkdir(exist_ok=True)
    for nb in [*src.glob("*.ipynb"), src / "index.md"]:
        shutil.copy2(nb, dst / nb.name)


def setup(app):
    app.connect("builder-inited", _copy_tutorials)
