"""Source address discovery for RFC 6724 sorting: UDP probes, cached for the network.

RFC 6724's destination rules compare each destination with the source address the
kernel would pick for it. User space learns that address the way the C library does
inside ``getaddrinfo``: ``connect()`` a UDP socket to the destination (a route lookup
and source selection; no packet is sent) and read ``getsockname()``. A destination
with no route, or of a family the host has no address of, has no source.

:class:`SourceAddressCache` remembers the answers. "Per network" means this: the
kernel's answer depends only on the destination and on the host's network
configuration (its addresses and routes, i.e. the network it is attached to), so an
entry is kept per destination (family, address, scope id) for as long as that
configuration may be assumed unchanged. Nothing tells a process cheaply that it
changed, so the whole cache is one network's view that ends

* when :meth:`SourceAddressCache.invalidate` is called (an application that watches
  the network, or one that saw ``ENETUNREACH``/``EADDRNOTAVAIL``, calls it), and
* entry by entry, *ttl* seconds after each probe (10 s by default), which bounds how
  long a change goes unnoticed.

So a connect to a known destination costs a dictionary lookup and a clock read, and a
probe (four system calls, no packet) happens once per destination per *ttl*.
``getaddrinfo`` probes every destination on every call.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ._addresses import AddrInfoType, check_addr_infos
from ._selection import SourceType
from ._validate import check_count

__all__ = ["SourceAddressCache", "default_source_cache", "probe_source"]


def probe_source(addr_info: AddrInfoType) -> str | None:
    """The source address the kernel would use to reach *addr_info*, or ``None``.

    Connects a UDP socket to the destination (which sends nothing) and reads the local
    address, with the scope (``%zone``) dropped. ``None`` when there is no route, no
    address of that family, or (for a link-local destination) no scope id.

    Args:
        addr_info: One addr_info tuple with an IP-literal host.

    Returns:
        The source address as an IP literal, or ``None``.

    Raises:
        TypeError: *addr_info* has the wrong type.
        ValueError: *addr_info* is malformed or its host is not an IP literal (a host
            name would make ``connect()`` block on DNS).
    """
    [entry] = check_addr_infos([addr_info], "addr_info")
    family, sockaddr = entry[0], entry[4]
    try:
        socket.inet_pton(family, sockaddr[0].partition("%")[0])
    except (OSError, ValueError):  # ValueError: an embedded NUL
        raise ValueError(
            f"addr_info: {sockaddr[0]!r} is not an IP address of the entry's family"
        ) from None
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:
        return None  # e.g. EAFNOSUPPORT: IPv6 is disabled on this host
    try:
        sock.connect(sockaddr)
        host: str = sock.getsockname()[0]
    except OSError:
        return None  # ENETUNREACH, EHOSTUNREACH, EINVAL (link-local without scope)...
    except OverflowError as exc:
        # A flowinfo above 20 bits: check_addr_infos allows 32, the socket module not.
        raise ValueError(f"addr_info: {exc}, got {sockaddr!r}") from None
    finally:
        sock.close()
    return host.partition("%")[0]


_Key = tuple[int, str, int]


def _check_ttl(ttl: object) -> float:
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
        raise TypeError(f"ttl must be a number of seconds, got {ttl!r}")
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be positive and finite, got {ttl!r}")
    return float(ttl)


def _check_callable(value: object, name: str) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {value!r}")


class SourceAddressCache:
    """Source addresses per destination for the current network, found by probes.

    An instance is a ``sources`` callable for :func:`happydial.sort_addr_infos`: call
    it with an addr_info and it returns that destination's source address (an IP
    literal) or ``None``. Safe to share between threads and event loops.

    >>> import socket
    >>> cache = SourceAddressCache(probe=lambda addr_info: "192.0.2.2")
    >>> cache((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.10", 443)))
    '192.0.2.2'

    Args:
        ttl: Seconds an answer is trusted after its probe (see the module notes).
        max_entries: How many destinations to remember; the oldest answer goes first.
        probe: Finds one destination's source; :func:`probe_source` by default.
        clock: A monotonic clock in seconds; ``time.monotonic`` by default.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: *ttl* is not positive and finite, or *max_entries* is below 1.
    """

    __slots__ = ("_clock", "_entries", "_lock", "_max_entries", "_probe", "_ttl")

    def __init__(
        self,
        *,
        ttl: float = 10.0,
        max_entries: int = 1024,
        probe: Callable[[AddrInfoType], SourceType] = probe_source,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = _check_ttl(ttl)
        self._max_entries = check_count(max_entries, "max_entries")
        _check_callable(probe, "probe")
        _check_callable(clock, "clock")
        self._probe = probe
        self._clock = clock
        self._entries: dict[_Key, tuple[float, SourceType]] = {}
        self._lock = threading.Lock()

    def __call__(self, addr_info: AddrInfoType) -> SourceType:
        """The source address for *addr_info*: remembered, or probed now."""
        sockaddr: tuple[Any, ...] = addr_info[4]
        scope_id = sockaddr[3] if len(sockaddr) == 4 else 0
        key = (addr_info[0], sockaddr[0], scope_id)
        now = self._clock()
        hit = self._entries.get(key)
        if hit is not None and now < hit[0]:
            return hit[1]
        source = self._probe(addr_info)
        with self._lock:
            # Re-inserted at the end, so the first entry is always the oldest answer.
            self._entries.pop(key, None)
            if len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (now + self._ttl, source)
        return source

    def invalidate(self) -> None:
        """Forget every answer: the network changed (or may have)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        """How many destinations are remembered (expired answers included)."""
        return len(self._entries)

    def __repr__(self) -> str:
        """Show the settings and the number of remembered answers."""
        return (
            f"<SourceAddressCache ttl={self._ttl} max_entries={self._max_entries}"
            f" entries={len(self._entries)}>"
        )


_DEFAULT = SourceAddressCache()


def bound_sources(
    local_addr_infos: list[AddrInfoType], fallback: Callable[[AddrInfoType], SourceType]
) -> Callable[[AddrInfoType], SourceType]:
    """The sources when every attempt binds to *local_addr_infos* (``local_addr=``).

    The bound address is the source, not the kernel's choice (a probe would not bind):
    the first local address of the destination's family, as ``_sockets._bind`` tries
    it first; no local address of that family means the attempt cannot bind (no
    source). A wildcard (``0.0.0.0``, ``::``) leaves the choice to the kernel:
    *fallback* (a probe, usually cached) answers.

    Args:
        local_addr_infos: Validated addr_infos with IP-literal hosts.
        fallback: Asked for destinations whose local address is a wildcard.

    Returns:
        A ``sources`` callable for :func:`happydial.sort_addr_infos`.
    """
    firsts: dict[int, str | None] = {}
    for family, _, _, _, sockaddr in local_addr_infos:
        if family not in firsts:
            host = sockaddr[0].partition("%")[0]
            wildcard = not any(socket.inet_pton(family, host))
            firsts[family] = None if wildcard else host

    def sources(addr_info: AddrInfoType) -> SourceType:
        family = addr_info[0]
        if family not in firsts:
            return None
        host = firsts[family]
        return fallback(addr_info) if host is None else host

    return sources


def default_source_cache() -> SourceAddressCache:
    """The process-wide :class:`SourceAddressCache` (ttl 10 s), shared by every caller.

    Call ``default_source_cache().invalidate()`` when the host's network changes.
    """
    return _DEFAULT
