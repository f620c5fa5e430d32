"""Sphinx configuration for the happydial documentation."""

import sys
from pathlib import Path

from sphinx.util.inspect import TypeAliasForwardRef

from happydial import __version__

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_scripts"))

from python_inventory import URL, write_inventory  # noqa: E402 - found through the path above

project = "happydial"
copyright = "2026, The happydial developers"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Types for the arguments a docstring describes: a dataclass's fields documented as
# Attributes (FakeNetwork's) are not listed again as constructor parameters.
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True  # family=socket.AF_UNSPEC, not AddressFamily.AF_UNSPEC
doctest_global_setup = "import socket\nfrom happydial import *"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# No network on the build machines: the standard library's inventory is written from
# the Python that builds the docs (docs/_scripts/python_inventory.py), with links to
# docs.python.org, instead of being downloaded.
intersphinx_mapping = {
    "python": (URL, str(write_inventory(DOCS / "_build" / "python-objects.inv"))),
}
nitpicky = True
python_use_unqualified_type_names = True  # "Awaitable", linked, not "collections.abc.Awaitable"
nitpick_ignore = [
    # Type variables in signatures (create_connection's protocol type P, staggered_race's
    # result type T) have no page of their own; the docstrings say what they stand for.
    ("py:class", "P"),
    ("py:class", "happydial._staggered.T"),
    # dnspython (an optional extra) publishes no inventory the offline build could use.
    ("py:class", "dns.asyncresolver.Resolver"),
]

# Aliases, by the names the annotations use (postponed, so autodoc sees the names):
# shown as links to their own entries in api.md, not expanded in every signature.
autodoc_type_aliases = {
    "AddrInfoType": "happydial.AddrInfoType",
    "SocketFactoryType": "happydial.SocketFactoryType",
    "TraceType": "happydial.TraceType",
    "TraceEvent": "happydial.TraceEvent",
    "ResolverType": "happydial.Resolver",
    "Outcome": "happydial.testing.Outcome",
    "SourceType": "happydial.SourceType",
    "SourcesType": "happydial.SourcesType",
}
# Sphinx renders an alias nested in another type (list[AddrInfoType], Alias | None)
# by the repr of its placeholder, "TypeAliasForwardRef('happydial.AddrInfoType')",
# in the descriptions autodoc_typehints = "description" writes: make that the name.
TypeAliasForwardRef.__repr__ = lambda self: self.name  # type: ignore[method-assign]

html_theme = "furo"
html_title = f"happydial {__version__}"
