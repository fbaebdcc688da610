# SPDX-License-Identifier: BSD-3-Clause
"""Sphinx configuration of psfmatch's documentation site.

Build it (after ``pip install ".[docs]"``) with::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The build needs no network: no intersphinx inventories are fetched, MathJax is served from the
``sphinx-mathjax-offline`` package, and the gallery's examples make their own data with
`psfmatch.simulate`. It documents the *installed* psfmatch (the compiled core comes with it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the gallery and the doctests draw without a display

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import psfmatch  # noqa: E402

project = "psfmatch"
author = "The psfmatch developers"
copyright = "The psfmatch developers (BSD-3-Clause)"
release = psfmatch.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    # MathJax from the installed package, not a CDN, so that the site also shows its equations
    # when it is read from disk without network.
    "sphinx-mathjax-offline",
    # psfmatch's own directives: the config reference and the command-line tables, generated
    # from the code at build time (docs/_ext/psfmatch_docs.py).
    "psfmatch_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    # sphinx-gallery's own input folder: its README is the gallery's index source only.
    "examples/README.rst",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.md5",
    "auto_examples/*.pickle",
    "auto_examples/*.codeobj.json",
]
templates_path = ["_templates"]

# Single backticks in docstrings (the LSST/numpydoc style the package uses, `float`,
# `psfmatch.MaskedImage`) are references to Python objects; those outside this site resolve
# to plain code text, since no intersphinx inventory is fetched.
default_role = "py:obj"

# --- autodoc / autosummary / numpydoc -------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
# A module's page lists its __all__ (the subpackages all have one), not everything it imports.
autosummary_ignore_module_all = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "groupwise"
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
# pybind11 writes each bound function's signature as the first line of its docstring.
autodoc_docstring_signature = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# --- MyST (the markdown pages) --------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
# GitHub's anchors, which the pages' links use (algorithm.md#711-cross-convolution).
myst_heading_anchors = 4

# --- sphinx-gallery -------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    # A failing example fails the build (its own assertions check its result).
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "within_subsection_order": "FileNameSortKey",  # plot_1_... to plot_5_...
    "show_memory": False,
    # The figure functions return their Figure: not printed as a cell's output.
    "capture_repr": (),
    "reset_modules": ("matplotlib",),
    # No links to other projects' docs: they would need their inventories (network).
    "reference_url": {},
    "doc_module": (),
}

# --- HTML -----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"psfmatch {release}"
html_static_path = ["_static"]
html_css_files = ["psfmatch.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 4,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# Only the API reference and the gallery have a section to navigate; every other page is one
# page of its own and uses the full width.
# ("*" matches the pages at the top of docs/ only, not those in a folder.)
html_sidebars = {"*": []}
html_show_sourcelink = False

# Building on Read the Docs or locally; nothing differs but the canonical URL.
if os.environ.get("READTHEDOCS"):
    html_baseurl = os.environ.get("READTHEDOCS_CANONICAL_URL", "")
