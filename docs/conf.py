"""Sphinx configuration for the happydial documentation."""

from happydial import __version__

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
doctest_global_setup = "import socket\nfrom happydial import *"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# No network on the build machines: intersphinx resolves nothing, so it is not asked to.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
nitpicky = True
nitpick_ignore_regex = [
    # Standard-library and typing names: without intersphinx there is nothing to link to.
    ("py:class", r"(socket|asyncio|collections\.abc|typing|types|ipaddress|concurrent|ssl)\..*"),
    (
        "py:class",
        r"(Any|Callable|Awaitable|Iterable|Sequence|Coroutine|TypeAlias|T|_T|ExceptionGroup)",
    ),
    ("py:class", r"(int|str|float|bool|bytes|tuple|list|dict|object|None|BaseException|Exception)"),
    ("py:exc", r".*"),
    # The same for functions, methods and modules of the standard library named in the guides.
    ("py:(func|meth|mod|data|attr)", r"(socket|asyncio|ipaddress|ssl|contextlib)(\..*)?"),
    ("py:class", r"(TypeAliasForwardRef|'?happydial\.[A-Za-z]+Type'?|[A-Za-z]+Type)"),
    ("py:obj", r"(happydial\..*\.)?_?T"),
    # Type variables in signatures (create_connection's protocol P, staggered_race's T) and
    # the private field types of happydial.testing's dataclasses have no page of their own.
    ("py:class", r"(happydial\._[a-z]+\.)?(P|T)"),
    # ssl is imported only for type checking in _wrappers (it is slow to import).
    ("py:class", r"ssl_module\..*"),
    ("py:class", r"happydial\.testing\._[A-Za-z]+"),
]

html_theme = "furo"
html_title = f"happydial {__version__}"
