"""The address layer: pure functions over lists of ``getaddrinfo``-style tuples.

An *addr_info* is one entry of :func:`socket.getaddrinfo`'s result, the 5-tuple
``(family, type, proto, canonname, sockaddr)``. Everything here orders, builds or
edits lists of them, and nothing here does I/O, reads a clock or touches a socket.
(The one system call made is :func:`socket.if_nametoindex`, to turn an IPv6 zone
name such as ``eth0`` into the numeric scope id the kernel wants.)

Invariants, kept by every function in this module:

* Only ``AF_INET`` and ``AF_INET6`` entries exist. Anything else is a malformed
  entry and raises :class:`ValueError` naming it; a value of the wrong type raises
  :class:`TypeError`. No other exception type ever leaves this module.
* Functions that return a list never mutate their input.  The two functions that
  edit in place (:func:`pop_addr_infos_interleave`, :func:`remove_addr_infos`) say
  so in their name's upstream heritage and in their docstrings, and they validate
  the whole list before changing any of it.
* Order within one address family is never changed: the resolver (RFC 6724) or
  the caller chose it, and only RFC 8305 section 4 interleaving is applied on top.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from ._validate import check_count, is_int

__all__ = [
    "AddrInfoType",
    "SocketFactoryType",
    "addr_to_addr_infos",
    "check_addr_infos",
    "interleave_addr_infos",
    "interleave_families",
    "ip_addresses_to_addr_infos",
    "literal_addr_info",
    "normalise",
    "pop_addr_infos_interleave",
    "remove_addr_infos",
]

AddrInfoType: TypeAlias = tuple[
    int | socket.AddressFamily,
    int | socket.SocketKind,
    int,
    str,
    tuple[Any, ...],
]
"""One ``getaddrinfo`` entry: ``(family, type, proto, canonname, sockaddr)``.

The same alias as aiohappyeyeballs' ``AddrInfoType``, so code typed against it keeps
type-checking.
"""

SocketFactoryType: TypeAlias = Callable[[AddrInfoType], socket.socket]
"""Makes the socket for one attempt from its addr_info (aiohappyeyeballs-compatible)."""

_INET_FAMILIES = frozenset((socket.AF_INET, socket.AF_INET6))
_AF_INET = int(socket.AF_INET)
_AF_INET6 = int(socket.AF_INET6)
_INT_TYPES = frozenset((int, socket.AddressFamily, socket.SocketKind))
_MAX_PORT = 65535
_MAX_U32 = 2**32 - 1
_MAX_C_INT = 2**31 - 1


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def _check_port(port: object, what: str) -> None:
    if not is_int(port):
        raise TypeError(f"{what}: port must be an int, got {port!r}")
    if not 0 <= port <= _MAX_PORT:  # type: ignore[operator]
        raise ValueError(f"{what}: port must be in 0-{_MAX_PORT}, got {port!r}")


def _check_sockaddr(family: int, sockaddr: object, what: str) -> None:
    if not isinstance(sockaddr, tuple):
        raise TypeError(f"{what}: sockaddr must be a tuple, got {sockaddr!r}")
    n = len(sockaddr)
    if family == socket.AF_INET and n != 2:
        raise ValueError(f"{what}: an AF_INET sockaddr is (host, port), got {sockaddr!r}")
    if family == socket.AF_INET6 and not 2 <= n <= 4:
        raise ValueError(
            f"{what}: an AF_INET6 sockaddr is (host, port[, flowinfo[, scope_id]]),"
            f" got {sockaddr!r}"
        )
    if not isinstance(sockaddr[0], str):
        raise TypeError(f"{what}: sockaddr host must be a str, got {sockaddr[0]!r}")
    _check_port(sockaddr[1], what)
    for field in sockaddr[2:]:
        if not is_int(field):
            raise TypeError(f"{what}: flowinfo and scope_id must be ints, got {sockaddr!r}")
        if not 0 <= field <= _MAX_U32:
            raise ValueError(f"{what}: flowinfo and scope_id must fit in 32 bits, got {sockaddr!r}")


def _check_addr_info(entry: Any, what: str) -> AddrInfoType:
    if not isinstance(entry, tuple):
        raise TypeError(
            f"{what} must be a 5-tuple (family, type, proto, canonname, sockaddr), got {entry!r}"
        )
    if len(entry) != 5:
        raise ValueError(
            f"{what} must be a 5-tuple (family, type, proto, canonname, sockaddr), got {entry!r}"
        )
    family, type_, proto, canonname, sockaddr = entry
    if not (is_int(family) and is_int(type_) and is_int(proto)):
        raise TypeError(f"{what}: family, type and proto must be ints, got {entry!r}")
    if family not in _INET_FAMILIES:
        raise ValueError(f"{what}: family must be AF_INET or AF_INET6, got {entry!r}")
    if not (0 <= type_ <= _MAX_C_INT and 0 <= proto <= _MAX_C_INT):
        # socket.socket() would raise OverflowError on them, mid-race.
        raise ValueError(f"{what}: type and proto must be in 0-{_MAX_C_INT}, got {entry!r}")
    if not isinstance(canonname, str):
        raise TypeError(f"{what}: canonname must be a str, got {entry!r}")
    _check_sockaddr(family, sockaddr, what)
    return entry


def check_addr_infos(addr_infos: object, name: str = "addr_infos") -> list[AddrInfoType]:
    """Validate every entry of *addr_infos* and return them as a new list.

    Args:
        addr_infos: Any iterable of addr_info 5-tuples.
        name: The argument name used in error messages.

    Returns:
        A new list holding the same entries, in the same order.

    Raises:
        TypeError: *addr_infos* is not iterable (a ``str`` or ``bytes`` counts as not
            iterable here), or an entry has a value of the wrong type.
        ValueError: An entry has the wrong shape, an unknown family, or a port out of range.
    """
    if type(addr_infos) is not list and (
        isinstance(addr_infos, (str, bytes)) or not isinstance(addr_infos, Iterable)
    ):
        raise TypeError(f"{name} must be an iterable of addr_info tuples, got {addr_infos!r}")
    entries = list(addr_infos)
    # The common case, checked inline and cheaply (this runs on every connect):
    # exact tuples and ints as getaddrinfo makes them. Anything else, valid or
    # not, goes through the thorough check, which also writes the error message.
    for entry in entries:
        if type(entry) is tuple and len(entry) == 5:
            family, type_, proto, canonname, sockaddr = entry
            if (
                type(sockaddr) is tuple
                and type(canonname) is str
                and type(family) in _INT_TYPES
                and type(type_) in _INT_TYPES
                and type(proto) is int
                and 0 <= type_ <= _MAX_C_INT
                and 0 <= proto <= _MAX_C_INT
                and (
                    (family == _AF_INET and len(sockaddr) == 2)
                    or (
                        family == _AF_INET6
                        and len(sockaddr) == 4
                        and type(sockaddr[2]) is int
                        and type(sockaddr[3]) is int
                        and 0 <= sockaddr[2] <= _MAX_U32
                        and 0 <= sockaddr[3] <= _MAX_U32
                    )
                )
                and type(sockaddr[0]) is str
                and type(sockaddr[1]) is int
                and 0 <= sockaddr[1] <= _MAX_PORT
            ):
                continue
        _check_addr_info(entry, f"{name}[{_index_of(entries, entry)}]")
    return entries


def _index_of(entries: list[Any], entry: object) -> int:
    return next(i for i, e in enumerate(entries) if e is entry)


def _require_list(addr_infos: object) -> None:
    if not isinstance(addr_infos, list):
        raise TypeError(f"addr_infos must be a list (it is edited in place), got {addr_infos!r}")


# ---------------------------------------------------------------------------
# RFC 8305 section 4: interleaving address families
# ---------------------------------------------------------------------------


def _group_by_family(addr_infos: list[AddrInfoType]) -> list[list[AddrInfoType]]:
    """Split into one list per family, families in order of first appearance."""
    groups: dict[int, list[AddrInfoType]] = {}
    for entry in addr_infos:
        groups.setdefault(entry[0], []).append(entry)
    return list(groups.values())


def interleave_addr_infos(
    addr_infos: Iterable[AddrInfoType], first_address_family_count: int = 1
) -> list[AddrInfoType]:
    """Interleave addresses by family, as RFC 8305 section 4 describes.

    The family of the first entry is the preferred one (the resolver, following
    RFC 6724, put it first). It contributes its first *first_address_family_count*
    entries, then the families take turns one entry at a time until all are used.
    Order within a family is kept.

    >>> import socket
    >>> v6 = [
    ...     (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (f"2001:db8::{i}", 80, 0, 0))
    ...     for i in (1, 2, 3)
    ... ]
    >>> v4 = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"192.0.2.{i}", 80)) for i in (1, 2)]
    >>> [ai[4][0] for ai in interleave_addr_infos(v6 + v4)]
    ['2001:db8::1', '192.0.2.1', '2001:db8::2', '192.0.2.2', '2001:db8::3']
    >>> [ai[4][0] for ai in interleave_addr_infos(v6 + v4, first_address_family_count=2)]
    ['2001:db8::1', '2001:db8::2', '192.0.2.1', '2001:db8::3', '192.0.2.2']

    Args:
        addr_infos: Any iterable of addr_info tuples. It is not mutated.
        first_address_family_count: How many addresses of the preferred family go
            first (RFC 8305's "First Address Family Count"; 1 is recommended).

    Returns:
        A new list, a permutation of the input.

    Raises:
        TypeError: An argument or entry has the wrong type.
        ValueError: *first_address_family_count* is below 1 (aiohappyeyeballs treats 0
            as 1 silently), or an entry is malformed.
    """
    count = check_count(first_address_family_count, "first_address_family_count")
    entries = check_addr_infos(addr_infos)
    return interleave_families(entries, count)


def interleave_families(entries: list[AddrInfoType], count: int) -> list[AddrInfoType]:
    """:func:`interleave_addr_infos` on an already validated list."""
    if len(entries) < 3:
        return list(entries)  # interleaving cannot change the order of two entries
    groups = _group_by_family(entries)
    if len(groups) < 2:
        return entries
    preferred = groups[0]
    result = preferred[: count - 1]
    queues = [preferred[count - 1 :], *groups[1:]]
    longest = max(len(queue) for queue in queues)
    for i in range(longest):
        for queue in queues:
            if i < len(queue):
                result.append(queue[i])
    return result


def pop_addr_infos_interleave(
    addr_infos: list[AddrInfoType], interleave: int | None = None
) -> None:
    """Remove, in place, the first *interleave* entries of each family.

    This is how a caller that retries in rounds (aiohttp's connector) drops the
    addresses the previous round started with.  ``[v6a, v6b, v4a, v4b]`` with
    ``interleave=1`` becomes ``[v6b, v4b]``.

    Args:
        addr_infos: The list to edit.
        interleave: Entries to drop per family; ``None`` means 1, as upstream.

    Raises:
        TypeError: *addr_infos* is not a list, or an entry or *interleave* has the wrong type.
        ValueError: *interleave* is below 1. aiohappyeyeballs silently removes
            nothing there, and a retry loop around it never ends (aiohttp's
            ``TCPConnector(interleave=0)`` spins at about 14,000 calls a second).
    """
    count = 1 if interleave is None else check_count(interleave, "interleave")
    _require_list(addr_infos)
    check_addr_infos(addr_infos)
    seen: dict[int, int] = {}
    kept: list[AddrInfoType] = []
    for entry in addr_infos:
        family = entry[0]
        popped = seen.get(family, 0)
        if popped < count:
            seen[family] = popped + 1
        else:
            kept.append(entry)
    addr_infos[:] = kept


# ---------------------------------------------------------------------------
# Building addr_infos from an address tuple
# ---------------------------------------------------------------------------


def zone_to_scope_id(zone: str, what: str) -> int:
    """Map an IPv6 zone (``"eth0"`` or ``"2"``) to its numeric scope id."""
    if zone.isdigit():
        return int(zone)
    try:
        return socket.if_nametoindex(zone)
    except OSError:
        raise ValueError(f"{what}: no network interface named {zone!r}") from None


def addr_to_addr_infos(
    addr: tuple[str, int] | tuple[str, int, int] | tuple[str, int, int, int] | None,
) -> list[AddrInfoType] | None:
    """Turn one IP address tuple into a one-entry addr_info list.

    Meant for local addresses (``local_addr=("192.0.2.7", 0)`` becomes
    ``local_addr_infos``), as aiohttp uses it.  Unlike aiohappyeyeballs, the host is
    parsed as an IP literal rather than classified by looking for a colon, and an
    IPv6 zone such as ``%eth0`` becomes the numeric scope id.

    Args:
        addr: ``None``; ``(host, port)`` for IPv4; or ``(host, port)``,
            ``(host, port, flowinfo)`` or ``(host, port, flowinfo, scope_id)`` for IPv6.

    Returns:
        ``None`` for ``None``; otherwise ``[(family, SOCK_STREAM, IPPROTO_TCP, "", sockaddr)]``
        with an IPv6 sockaddr padded to 4 fields.

    Raises:
        TypeError: *addr* is not a tuple, or a field has the wrong type.
        ValueError: The host is not an IP literal (resolve host names first), the port
            is outside 0-65535, the zone names no interface, or the zone and scope_id
            disagree.
    """
    if addr is None:
        return None
    if not isinstance(addr, tuple):
        raise TypeError(f"addr must be a tuple (host, port, ...) or None, got {addr!r}")
    return [literal_addr_info(addr, f"addr {addr!r}")]


def literal_addr_info(addr: tuple[Any, ...], what: str) -> AddrInfoType:
    """The addr_info of an IP-literal address tuple; errors start with *what*."""
    if not 2 <= len(addr) <= 4:
        raise ValueError(f"{what}: expected (host, port[, flowinfo[, scope_id]])")
    host, port = addr[0], addr[1]
    if not isinstance(host, str):
        raise TypeError(f"{what}: host must be a str")
    _check_port(port, what)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{what}: host {host!r} is not an IP address; resolve host names first"
            " (or use happydial.connect(), which resolves them)"
        ) from None
    if ip.version == 4:
        if len(addr) != 2:
            raise ValueError(f"{what}: an IPv4 address is (host, port)")
        return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))
    return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", _ipv6_sockaddr(addr, what))


def _ipv6_sockaddr(addr: tuple[Any, ...], what: str) -> tuple[str, int, int, int]:
    """Pad an IPv6 address tuple to 4 fields, turning a ``%zone`` into the scope id."""
    flowinfo, scope_id = (*addr[2:], 0, 0)[:2]
    for field in (flowinfo, scope_id):
        if not is_int(field):
            raise TypeError(f"{what}: flowinfo and scope_id must be ints")
        if not 0 <= field <= _MAX_U32:
            raise ValueError(f"{what}: flowinfo and scope_id must fit in 32 bits")
    plain_host, _, zone = addr[0].partition("%")
    if zone:
        zone_scope = zone_to_scope_id(zone, what)
        if scope_id and scope_id != zone_scope:
            raise ValueError(f"{what}: zone {zone!r} and scope_id {scope_id} disagree")
        scope_id = zone_scope
    return (plain_host, addr[1], flowinfo, scope_id)


def ip_addresses_to_addr_infos(
    addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address], port: int
) -> list[AddrInfoType]:
    """Build addr_infos from IP addresses, as zeroconf/mDNS or a custom resolver gives them.

    Duplicates are dropped (the first occurrence keeps its place: zeroconf has
    returned the same address twice), and IPv6 scope ids are kept, from an
    ``IPv6Address.scope_id`` or a ``%zone`` suffix, so link-local addresses work.
    The order is kept; pass the result to :func:`interleave_addr_infos` or let
    :func:`happydial.start_connection` interleave it.

    >>> import ipaddress
    >>> [
    ...     ai[4]
    ...     for ai in ip_addresses_to_addr_infos(
    ...         [ipaddress.ip_address("192.0.2.7"), "2001:db8::7", "192.0.2.7"], 6053
    ...     )
    ... ]
    [('192.0.2.7', 6053), ('2001:db8::7', 6053, 0, 0)]

    Args:
        addresses: ``ipaddress`` objects or IP literal strings (``"fe80::1%eth0"`` allowed).
        port: The TCP port, 0-65535.

    Returns:
        A new list of ``(family, SOCK_STREAM, IPPROTO_TCP, "", sockaddr)`` entries.

    Raises:
        TypeError: *addresses* is not iterable, or holds something that is not an
            address or a string; *port* is not an int.
        ValueError: A string is not an IP literal, a zone names no interface, or
            *port* is out of range.
    """
    _check_port(port, "port")
    if isinstance(addresses, (str, bytes)) or not isinstance(addresses, Iterable):
        raise TypeError(f"addresses must be an iterable of IP addresses, got {addresses!r}")
    result: dict[_NormalisedAddr, AddrInfoType] = {}
    for i, address in enumerate(addresses):
        if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            text = str(address)  # includes "%scope" for a scoped IPv6Address
        elif isinstance(address, str):
            text = address
        else:
            raise TypeError(f"addresses[{i}]: expected an IP address or a str, got {address!r}")
        entry = literal_addr_info((text, port), f"addresses[{i}] {text!r}")
        result.setdefault(normalise(entry[4]), entry)  # type: ignore[arg-type]
    return list(result.values())


# ---------------------------------------------------------------------------
# Removing an address
# ---------------------------------------------------------------------------

_NormalisedAddr: TypeAlias = tuple[
    ipaddress.IPv4Address | ipaddress.IPv6Address, int, int, int | str
]


@functools.lru_cache(maxsize=4096)
def _ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ipaddress.ip_address(text)``, remembered (the objects are immutable).

    ``connect()`` normalises every answer to compare it with the others; parsing an
    IPv6 literal costs some microseconds, and a client asks for the same few
    addresses over and over. A ``ValueError`` is not remembered.
    """
    return ipaddress.ip_address(text)


def normalise(sockaddr: tuple[Any, ...]) -> _NormalisedAddr | None:
    """A comparable key for an IP sockaddr, or ``None`` if its host is no IP literal.

    IPv6 spellings compare equal (``ipaddress`` parses them), a missing flowinfo or
    scope id counts as 0, and a textual zone counts as its interface's scope id.
    """
    host, port = sockaddr[0], sockaddr[1]
    plain_host, _, zone = host.partition("%")
    try:
        ip = _ip_address(plain_host)
    except ValueError:
        return None
    flowinfo, scope = (*sockaddr[2:], 0, 0)[:2]
    scope_key: int | str = scope
    if zone and not scope:
        try:
            scope_key = zone_to_scope_id(zone, "")
        except ValueError:
            # An interface this host does not have: only the same name matches.
            scope_key = zone
    return (ip, port, flowinfo, scope_key)


def remove_addr_infos(
    addr_infos: list[AddrInfoType],
    addr: tuple[str, int] | tuple[str, int, int] | tuple[str, int, int, int],
) -> None:
    """Remove, in place, every entry whose sockaddr is *addr*.

    Typically *addr* is ``sock.getpeername()`` of a connection that turned out bad.
    Entries equal to *addr* exactly are removed; if there are none, addresses are
    compared normalised: ``2001:db8::1`` equals ``2001:0db8:0:0:0:0:0:1``, a textual
    zone (``fe80::1%eth0``) equals the numeric scope id of that interface, and an IPv6
    ``(host, port)`` matches entries whose flowinfo and scope id are 0.  Entries that
    are not IP literals are skipped (aiohappyeyeballs raises a confusing
    ``ipaddress`` error on them).

    Args:
        addr_infos: The list to edit.
        addr: The address to remove, a sockaddr tuple.

    Raises:
        TypeError: *addr_infos* is not a list, or *addr* or an entry has the wrong type.
        ValueError: ``Address ... not found in addr_infos`` (as upstream), or *addr*
            is malformed.
    """
    _require_list(addr_infos)
    given: object = addr  # typed callers aside, anything may arrive here
    if not isinstance(given, tuple) or len(given) < 2:
        raise TypeError(f"addr must be a sockaddr tuple (host, port, ...), got {addr!r}")
    check_addr_infos(addr_infos)
    kept = [entry for entry in addr_infos if entry[4] != addr]
    if len(kept) == len(addr_infos):
        family = socket.AF_INET6 if len(addr) > 2 or ":" in str(addr[0]) else socket.AF_INET
        _check_sockaddr(family, addr, f"addr {addr!r}")
        key = normalise(addr)
        if key is None:
            raise ValueError(f"addr {addr!r}: host is not an IP address")
        kept = [entry for entry in addr_infos if normalise(entry[4]) != key]
    if len(kept) == len(addr_infos):
        raise ValueError(f"Address {addr} not found in addr_infos")
    addr_infos[:] = kept
