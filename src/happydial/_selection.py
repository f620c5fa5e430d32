"""RFC 6724 destination address selection, as a pure function over addr_infos.

RFC 8305 section 4 wants the destination addresses sorted by RFC 6724 before the
families are interleaved. ``getaddrinfo(AF_UNSPEC)`` does that inside the C library,
but a lookup per family (what :func:`happydial.connect` does, to race on the first
answer) and address lists from mDNS or a custom resolver arrive unsorted.

:func:`sort_addr_infos` applies section 6's rules with section 2.1's default policy
table. Most rules compare a destination with the source address the kernel would use
to reach it; that source is *given* (a mapping or a callable), so this module does no
I/O and reads no clock. :mod:`happydial._sources` discovers sources for real.

Rules applied, in order (section 6):

1. Avoid unusable destinations: no source address means unusable; it goes last.
2. Prefer matching scope (``Scope(D) == Scope(Source(D))``).
5. Prefer matching label (``Label(D) == Label(Source(D))``).
6. Prefer higher precedence.
8. Prefer smaller scope.
9. Use longest matching prefix, between two IPv6 destinations only.
10. Otherwise keep the order (the sort is stable).

Rules 3 (deprecated sources), 4 (home addresses) and 7 (native transport) need
facts about the source address (its flags, its interface) that a ``getsockname()``
probe does not reveal; they are not applied, as if every source were preferred,
non-home and native.

IPv4 takes part through its IPv4-mapped form (``::ffff:0:0/96``), as section 2.1
says: every address below is an ``int`` of 128 bits.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, TypeAlias

from ._addresses import AddrInfoType, check_addr_infos, interleave_families

__all__ = [
    "SourceType",
    "SourcesType",
    "merge_answers",
    "rank_by_sources",
    "sort_addr_infos",
    "sources_lookup",
]

SourceType: TypeAlias = str | ipaddress.IPv4Address | ipaddress.IPv6Address | None
"""The source address for one destination: an IP literal or address object, or ``None``
when the host has no source for it (no route, no address of that family)."""

SourcesType: TypeAlias = Mapping[str, SourceType] | Callable[[AddrInfoType], SourceType]
"""Where :func:`sort_addr_infos` learns each destination's source address.

Either a mapping from the destination's host (``sockaddr[0]``, such as
``"2001:db8::1"``; ``"fe80::1%2"`` with the numeric scope id tells the same
link-local address on two interfaces apart) to its source, or a callable taking the
destination's addr_info and returning its source
(:class:`happydial.SourceAddressCache` is one).
"""

_MAPPED = 0xFFFF << 32  # ::ffff:0:0/96, IPv4-mapped IPv6 addresses (section 2.1)
_LOOPBACK = 1  # ::1


class _Policy(NamedTuple):
    """One row of the policy table: a prefix, its precedence and its label."""

    prefix: int
    length: int
    precedence: int
    label: int


def _row(prefix: str, precedence: int, label: int) -> _Policy:
    network = ipaddress.IPv6Network(prefix)
    return _Policy(
        int(network.network_address) >> (128 - network.prefixlen),
        network.prefixlen,
        precedence,
        label,
    )


# Section 2.1, the default policy table, most specific prefix first (a lookup takes
# the longest matching prefix).
_POLICY_TABLE = (
    _row("::1/128", 50, 0),
    _row("::ffff:0:0/96", 35, 4),
    _row("::/96", 1, 3),
    _row("2001::/32", 5, 5),  # Teredo
    _row("2002::/16", 30, 2),  # 6to4
    _row("3ffe::/16", 1, 12),  # 6bone, returned
    _row("fec0::/10", 1, 11),  # site-local, deprecated
    _row("fc00::/7", 3, 13),  # unique local (ULA)
    _row("::/0", 40, 1),
)


def _policy(address: int) -> _Policy:
    for row in _POLICY_TABLE:
        if address >> (128 - row.length) == row.prefix:
            return row
    raise AssertionError  # pragma: no cover - ::/0 matches every address


# Scope values of RFC 4007 / RFC 6724 section 3.1.
_SCOPE_LINK_LOCAL = 0x2
_SCOPE_SITE_LOCAL = 0x5
_SCOPE_GLOBAL = 0xE


def _scope(address: int) -> int:
    """The scope of an address (sections 3.1 and 3.2)."""
    if address >> 120 == 0xFF:  # multicast: the scope is in the address
        return (address >> 112) & 0xF
    if address >> 118 == 0xFE80 >> 6 or address == _LOOPBACK:
        # fe80::/10; RFC 4291 section 2.5.3: the loopback is link-local in scope.
        return _SCOPE_LINK_LOCAL
    if address >> 118 == 0xFEC0 >> 6:  # fec0::/10, deprecated site-local
        return _SCOPE_SITE_LOCAL
    if address >> 32 == 0xFFFF:
        # Section 3.2: IPv4 loopback (127.0.0.0/8) and auto-configuration
        # (169.254.0.0/16) addresses are link-local; all others, private ones
        # included, are global.
        v4 = address & 0xFFFFFFFF
        if v4 >> 24 == 127 or v4 >> 16 == 0xA9FE:
            return _SCOPE_LINK_LOCAL
    return _SCOPE_GLOBAL


# CommonPrefixLen(S, D) stops at the length of S's prefix (section 2.2). A probe does
# not reveal it; RFC 4291 section 2.5.1 gives unicast addresses 64-bit interface ids.
_SOURCE_PREFIX_LENGTH = 64


class _Address(NamedTuple):
    """An address as the rules see it."""

    value: int  # 128 bits, IPv4 in its mapped form
    ipv4: bool
    precedence: int
    label: int
    scope: int


@functools.lru_cache(maxsize=4096)
def _address(host: str, family: int) -> _Address | None:
    """The rules' view of an IP literal of *family* (a ``%zone`` ignored), or ``None``.

    Memoised: the function is pure, and a process connects to the same few
    addresses (and from fewer sources) again and again.
    """
    try:
        packed = socket.inet_pton(family, host.partition("%")[0])
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None
    value = int.from_bytes(packed, "big")
    if family == socket.AF_INET:
        value |= _MAPPED
    policy = _policy(value)
    return _Address(value, value >> 32 == 0xFFFF, policy.precedence, policy.label, _scope(value))


def _source_address(source: object) -> _Address | None:
    """The rules' view of a source as :data:`SourceType` allows it."""
    if source is None:
        return None
    if isinstance(source, ipaddress.IPv4Address | ipaddress.IPv6Address):
        text = str(source)  # "fe80::1%eth0" for a scoped IPv6Address; the zone is ignored
    elif isinstance(source, str):
        text = source
    else:
        raise TypeError(f"a source must be an IP address, a str or None, got {source!r}")
    address = _address(text, socket.AF_INET6 if ":" in text else socket.AF_INET)
    if address is None:
        raise ValueError(f"source {source!r} is not an IP address")
    return address


def sources_lookup(sources: object) -> Callable[[AddrInfoType], object]:
    """One way to ask *sources* for a destination's source, whichever form it has."""
    if type(sources) is dict or isinstance(sources, Mapping):
        mapping = sources

        def lookup(entry: AddrInfoType) -> object:
            sockaddr = entry[4]
            host = sockaddr[0]
            if len(sockaddr) == 4 and sockaddr[3]:
                scoped = f"{host}%{sockaddr[3]}"
                if scoped in mapping:
                    return mapping[scoped]
            if host not in mapping:
                raise ValueError(
                    f"sources has no entry for destination {host!r}"
                    " (map it to None if it has no source address)"
                )
            return mapping[host]

        return lookup
    if callable(sources):
        return sources
    raise TypeError(
        "sources must be a mapping from destination to source address or a callable"
        f" taking an addr_info, got {sources!r}"
    )


_Key: TypeAlias = tuple[int, int, int, int, int, int]


def _sort_key(destination: _Address, source: _Address | None) -> _Key:
    """Where a destination sorts: smaller first, one tuple field per rule."""
    if source is None:
        # Rule 1; rules 2, 5 and 9 compare with the source and cannot apply, rules 6
        # and 8 still order the unusable destinations among themselves.
        return (1, 0, 0, -destination.precedence, destination.scope, 0)
    # Rule 9 between IPv6 destinations only (section 6: "when DA and DB belong to
    # the same address family"; IPv4 prefixes say little about topology). With the
    # default table a tie on rules 1 to 8 never joins an IPv4 and an IPv6
    # destination (no IPv6 prefix shares IPv4's precedence), so a 0 for IPv4 never
    # competes with an IPv6 prefix length.
    if destination.ipv4:
        prefix = 0
    else:
        prefix = min(128 - (source.value ^ destination.value).bit_length(), _SOURCE_PREFIX_LENGTH)
    return (
        0,
        destination.scope != source.scope,  # rule 2
        destination.label != source.label,  # rule 5
        -destination.precedence,  # rule 6
        destination.scope,  # rule 8
        -prefix,  # rule 9
    )


# Where a global IPv4 destination reached from a global IPv4 source sorts: the
# usual IPv4 answer on a host with IPv4 connectivity (192.0.2.1 and 198.51.100.1
# are documentation addresses standing for any such pair).
_TYPICAL_IPV4: _Key = _sort_key(
    _address("192.0.2.1", socket.AF_INET),  # type: ignore[arg-type]
    _source_address("198.51.100.1"),
)


def ranks_below_ipv4(entries: list[AddrInfoType], lookup: Callable[[AddrInfoType], object]) -> bool:
    """Whether a usual IPv4 answer would sort before every one of *entries*.

    ``connect()`` asks this of an IPv6 answer that arrives before the A answer: an
    IPv6 address this host has no source for (rule 1), or only a ULA source for a
    global destination (rule 5: its label differs, IPv4's matches), goes after IPv4
    by the default policy, so the AAAA answer waits the Resolution Delay for A
    rather than starting on the path RFC 6724 ranks last.
    """
    keys, _ = _keys(entries, lookup)
    return all(key > _TYPICAL_IPV4 for key in keys)


def sort_addr_infos(
    addr_infos: Iterable[AddrInfoType], *, sources: SourcesType
) -> list[AddrInfoType]:
    """Sort destination addresses by RFC 6724 section 6, with the default policy table.

    Use it on addresses that did not come from one ``getaddrinfo(AF_UNSPEC)`` call
    (which sorts them itself): answers of per-family lookups, mDNS, a custom resolver.
    The result is a permutation of the input: an unusable destination (one with no
    source address) goes last, never away; entries that compare equal keep their
    order (rule 10), so sorting twice changes nothing.

    >>> import socket
    >>> addr_infos = [
    ...     (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.10", 443)),
    ...     (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::10", 443, 0, 0)),
    ... ]
    >>> [
    ...     ai[4][0]
    ...     for ai in sort_addr_infos(
    ...         addr_infos, sources={"192.0.2.10": "192.0.2.2", "2001:db8::10": "2001:db8:1::2"}
    ...     )
    ... ]
    ['2001:db8::10', '192.0.2.10']
    >>> # The host's only IPv6 address is a ULA: rule 5 prefers IPv4.
    >>> [
    ...     ai[4][0]
    ...     for ai in sort_addr_infos(
    ...         addr_infos, sources={"192.0.2.10": "192.0.2.2", "2001:db8::10": "fd00::2"}
    ...     )
    ... ]
    ['192.0.2.10', '2001:db8::10']

    Args:
        addr_infos: Any iterable of addr_info tuples with IP-literal hosts. It is not
            mutated.
        sources: The source address of each destination (see :data:`SourcesType`):
            a mapping keyed by ``sockaddr[0]``, or a callable such as a
            :class:`happydial.SourceAddressCache`. ``None`` means "no source".

    Returns:
        A new list holding the same entries, sorted.

    Raises:
        TypeError: An entry, *sources* or a source it gives has the wrong type.
        ValueError: An entry is malformed or its host is not an IP literal of its
            family; a mapping lacks a destination; a source is not an IP literal or
            is IPv4 for an IPv6 destination (or the reverse).
    """
    return rank_by_sources(check_addr_infos(addr_infos), sources_lookup(sources))[0]


def rank_by_sources(
    entries: list[AddrInfoType], lookup: Callable[[AddrInfoType], object]
) -> tuple[list[AddrInfoType], int]:
    """:func:`sort_addr_infos` on a list :func:`check_addr_infos` made (``connect()``'s).

    Returns:
        The sorted list, and how many of its entries are usable (they come first):
        a caller that interleaves families can keep the unusable ones at the end.
    """
    keys, usable = _keys(entries, lookup)
    if len(entries) < 2:
        return entries, usable
    order = sorted(range(len(entries)), key=keys.__getitem__)
    return [entries[i] for i in order], usable


def _keys(
    entries: list[AddrInfoType], lookup: Callable[[AddrInfoType], object]
) -> tuple[list[_Key], int]:
    """Each entry's sort key, and how many entries are usable (have a source)."""
    keys: list[_Key] = []
    for i, entry in enumerate(entries):
        host = entry[4][0]
        destination = _address(host, entry[0])
        if destination is None:
            raise ValueError(
                f"addr_infos[{i}]: {host!r} is not an IP address of the entry's family;"
                " resolve host names first"
            )
        given = lookup(entry)
        try:
            source = _source_address(given)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"sources for addr_infos[{i}] {host!r}: {exc}") from None
        if source is not None and source.ipv4 != destination.ipv4:
            raise ValueError(
                f"sources for addr_infos[{i}] {host!r}: source {given!r}:"
                " an IPv4 destination needs an IPv4 source and the reverse"
            )
        keys.append(_sort_key(destination, source))
    return keys, sum(1 for key in keys if not key[0])


def merge_answers(
    untried: Iterable[AddrInfoType],
    new: list[AddrInfoType],
    started: list[AddrInfoType],
    count: int,
    sources: Callable[[AddrInfoType], object],
) -> list[AddrInfoType]:
    """The untried addresses with *new* ones, in the order to try them (section 4).

    Sorted by RFC 6724 with the source address of each (``sources``), then
    interleaved: the preferred family's first *count*, then alternating where the
    race left off (*started*); addresses with no usable source go last.
    """
    ranked, usable = rank_by_sources([*untried, *new], sources)
    unusable = ranked[usable:]
    ranked = ranked[:usable]
    preferred = ranked[0][0] if ranked else socket.AF_INET6
    same = [a for a in ranked if a[0] == preferred]
    other = [a for a in ranked if a[0] != preferred]
    tried = sum(1 for a in started if a[0] == preferred)
    last = started[-1][0] if started else None
    if last is None or (last == preferred and tried < count):
        merged = interleave_families(same + other, count - tried)
    elif last == preferred:
        merged = interleave_families(other + same, 1)  # the other family's turn
    else:
        merged = interleave_families(same + other, 1)  # the preferred family's turn
    return merged + unusable
