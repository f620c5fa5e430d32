"""happydial: Happy Eyeballs (RFC 8305) TCP connections for asyncio.

Layout: every implementation module is private and re-exported here.

* ``_addresses``: the pure address layer (ordering and editing addr_info lists).
"""

from ._addresses import (
    AddrInfoType as AddrInfoType,
)
from ._addresses import (
    SocketFactoryType as SocketFactoryType,
)
from ._addresses import (
    addr_to_addr_infos as addr_to_addr_infos,
)
from ._addresses import (
    interleave_addr_infos as interleave_addr_infos,
)
from ._addresses import (
    pop_addr_infos_interleave as pop_addr_infos_interleave,
)
from ._addresses import (
    remove_addr_infos as remove_addr_infos,
)
from ._version import __version__ as __version__

__all__ = [
    "AddrInfoType",
    "SocketFactoryType",
    "__version__",
    "addr_to_addr_infos",
    "interleave_addr_infos",
    "pop_addr_infos_interleave",
    "remove_addr_infos",
]
