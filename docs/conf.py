"""Sphinx configuration for trio_dxlink's documentation."""

project = "trio_dxlink"
author = "trio_dxlink developers"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxcontrib_trio",
    "myst_parser",
]
# No intersphinx: the docs must build offline with -W, and an unreachable inventory is a warning.
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "furo"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Generate anchors for ## and ### headings so that [text](#heading) links work in Markdown pages.
myst_heading_anchors = 3
nitpicky = False
# "Attributes:" sections render as field lists (":ivar:"), not as attribute objects: an event
# field named `type` (TimeAndSale.type, OptionSale.type) would otherwise be a cross-reference
# target that every `type[E]` annotation matches.
napoleon_use_ivar = True
