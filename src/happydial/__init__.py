"""happydial: Happy Eyeballs (RFC 8305) TCP connections for asyncio.

Layout: every implementation module is private and re-exported here. Imports flow
one way: wrappers and host names -> resolvers, racer -> driver -> schedule and sockets
-> address layer; ``_validate`` is a leaf every layer may use.

* ``_addresses``: the pure address layer (ordering and editing addr_info lists).
* ``_selection``: ``sort_addr_infos``, RFC 6724 destination address selection (pure).
* ``_sources``: source addresses for it, by UDP ``connect()`` probes, cached.
* ``_validate``: the argument checks, one place and one wording.
* ``_schedule``: when attempts start and what ends a race (RFC 8305 section 5), as
  pure state with inputs and outputs: no loop, no sockets, no clock.
* ``_driver``: ``LoopRace``, which runs a schedule on an asyncio loop.
* ``_sockets``: the I/O seam: make, bind and connect one attempt's socket.
* ``_racer``: ``start_connection``, the drop-in for aiohappyeyeballs.
* ``_staggered``: ``staggered_race``, the generic primitive.
* ``_delays``: ``DelayPolicy`` and its kinds, the attempt delay per attempt (pure).
* ``_errors``: what is raised when every attempt fails.
* ``_trace``: the events a ``trace`` callable receives.
* ``_report``: ``recording()`` and ``ConnectionReport``, a call's trace as one value
  (loaded on first use, by ``__getattr__``: only a recording needs it).
* ``_history``: ``AddressHistory``, optional memory of what worked (RFC 8305 s. 4, 5).
* ``_nat64``: NAT64 address arithmetic (RFC 6052) and prefix parsing (RFC 7050, 8781), pure.
* ``_dns64``: ``Nat64Discovery``, the network's NAT64 prefixes found once (RFC 7050).
* ``_ipv6only``: ``connect``'s use of them on a host with no IPv4 path (RFC 8305 s. 7).
* ``_resolver``: the ``Resolver`` protocol and ``getaddrinfo_resolver`` on its thread pool.
* ``_backends``: ``AiodnsResolver`` and ``DnspythonResolver``, the optional DNS back ends.
* ``_svcb``: ``ServiceBinding``, HTTPS records (RFC 9460) as values and their order, pure.
* ``_connect``: ``connect``, host names resolved per family in parallel.
* ``_tls``: TLS inside the race (Happy Eyeballs v3): an attempt wins when its handshake does.
* ``_wrappers``: ``open_connection`` and ``create_connection`` in asyncio's shapes.
* ``_cli``: ``python -m happydial``.
"""

import importlib
import typing

from ._addresses import AddrInfoType as AddrInfoType
from ._addresses import SocketFactoryType as SocketFactoryType
from ._addresses import addr_to_addr_infos as addr_to_addr_infos
from ._addresses import interleave_addr_infos as interleave_addr_infos
from ._addresses import ip_addresses_to_addr_infos as ip_addresses_to_addr_infos
from ._addresses import pop_addr_infos_interleave as pop_addr_infos_interleave
from ._addresses import remove_addr_infos as remove_addr_infos
from ._connect import connect as connect
from ._delays import MAX_DELAY as MAX_DELAY
from ._delays import MIN_DELAY as MIN_DELAY
from ._delays import RECOMMENDED_MIN_DELAY as RECOMMENDED_MIN_DELAY
from ._delays import ConstantDelay as ConstantDelay
from ._delays import DelayPolicy as DelayPolicy
from ._delays import ExponentialDelay as ExponentialDelay
from ._delays import LanDelay as LanDelay
from ._delays import effective_delay as effective_delay
from ._dns64 import Nat64Discovery as Nat64Discovery
from ._dns64 import Nat64State as Nat64State
from ._errors import failed_addr_infos as failed_addr_infos
from ._history import AddressHistory as AddressHistory
from ._ipv6only import default_nat64_discovery as default_nat64_discovery
from ._nat64 import Nat64Prefix as Nat64Prefix
from ._nat64 import SynthesizedAddrInfos as SynthesizedAddrInfos
from ._nat64 import nat64_prefixes_from_answers as nat64_prefixes_from_answers
from ._nat64 import parse_pref64_option as parse_pref64_option
from ._nat64 import synthesize_addr_infos as synthesize_addr_infos
from ._racer import start_connection as start_connection
from ._resolver import Resolver as Resolver
from ._resolver import ResolverPoolSettings as ResolverPoolSettings
from ._resolver import configure_resolver_pool as configure_resolver_pool
from ._resolver import getaddrinfo_resolver as getaddrinfo_resolver
from ._selection import SourcesType as SourcesType
from ._selection import SourceType as SourceType
from ._selection import sort_addr_infos as sort_addr_infos
from ._sources import SourceAddressCache as SourceAddressCache
from ._sources import default_source_cache as default_source_cache
from ._sources import probe_source as probe_source
from ._staggered import staggered_race as staggered_race
from ._svcb import ServiceBinding as ServiceBinding
from ._trace import AddressSynthesized as AddressSynthesized
from ._trace import AttemptCancelled as AttemptCancelled
from ._trace import AttemptFailed as AttemptFailed
from ._trace import AttemptStarted as AttemptStarted
from ._trace import AttemptSucceeded as AttemptSucceeded
from ._trace import DelayAdjusted as DelayAdjusted
from ._trace import HistoryReordered as HistoryReordered
from ._trace import ResolutionFailed as ResolutionFailed
from ._trace import ResolutionFinished as ResolutionFinished
from ._trace import ResolutionStarted as ResolutionStarted
from ._trace import ServiceBindingChosen as ServiceBindingChosen
from ._trace import ServiceBindingsResolved as ServiceBindingsResolved
from ._trace import TLSFailed as TLSFailed
from ._trace import TLSStarted as TLSStarted
from ._trace import TLSSucceeded as TLSSucceeded
from ._trace import TraceEvent as TraceEvent
from ._trace import TraceType as TraceType
from ._version import __version__ as __version__
from ._wrappers import create_connection as create_connection
from ._wrappers import open_connection as open_connection

if typing.TYPE_CHECKING:  # loaded on first use: see __getattr__
    from ._backends import AiodnsResolver as AiodnsResolver
    from ._backends import DnspythonResolver as DnspythonResolver
    from ._report import AttemptReport as AttemptReport
    from ._report import ConnectionReport as ConnectionReport
    from ._report import LookupReport as LookupReport
    from ._report import Recording as Recording
    from ._report import ReportEvent as ReportEvent
    from ._report import connection_report as connection_report
    from ._report import recording as recording

# Names whose module is loaded the first time one is used: reports (1 MB of memory)
# are for a recording only, the DNS back ends for whoever picks one.
_LAZY = {
    "AiodnsResolver": "_backends",
    "AttemptReport": "_report",
    "ConnectionReport": "_report",
    "DnspythonResolver": "_backends",
    "LookupReport": "_report",
    "Recording": "_report",
    "ReportEvent": "_report",
    "connection_report": "_report",
    "recording": "_report",
}


def __getattr__(name: str) -> object:
    """Load a lazily exported name's module the first time the name is used (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: the next lookup does not come here
    return value


# Plain sorted order (tests/test_exports.py), not ruff's constants-first order.
__all__ = [  # noqa: RUF022
    "AddrInfoType",
    "AddressHistory",
    "AddressSynthesized",
    "AiodnsResolver",
    "AttemptCancelled",
    "AttemptFailed",
    "AttemptReport",
    "AttemptStarted",
    "AttemptSucceeded",
    "ConnectionReport",
    "ConstantDelay",
    "DelayAdjusted",
    "DelayPolicy",
    "DnspythonResolver",
    "ExponentialDelay",
    "HistoryReordered",
    "LanDelay",
    "LookupReport",
    "MAX_DELAY",
    "MIN_DELAY",
    "Nat64Discovery",
    "Nat64Prefix",
    "Nat64State",
    "RECOMMENDED_MIN_DELAY",
    "Recording",
    "ReportEvent",
    "ResolutionFailed",
    "ResolutionFinished",
    "ResolutionStarted",
    "Resolver",
    "ResolverPoolSettings",
    "ServiceBinding",
    "ServiceBindingChosen",
    "ServiceBindingsResolved",
    "SocketFactoryType",
    "SourceAddressCache",
    "SourceType",
    "SourcesType",
    "SynthesizedAddrInfos",
    "TLSFailed",
    "TLSStarted",
    "TLSSucceeded",
    "TraceEvent",
    "TraceType",
    "__version__",
    "addr_to_addr_infos",
    "configure_resolver_pool",
    "connect",
    "connection_report",
    "create_connection",
    "default_nat64_discovery",
    "default_source_cache",
    "effective_delay",
    "failed_addr_infos",
    "getaddrinfo_resolver",
    "interleave_addr_infos",
    "ip_addresses_to_addr_infos",
    "nat64_prefixes_from_answers",
    "open_connection",
    "parse_pref64_option",
    "pop_addr_infos_interleave",
    "probe_source",
    "recording",
    "remove_addr_infos",
    "sort_addr_infos",
    "staggered_race",
    "start_connection",
    "synthesize_addr_infos",
]
