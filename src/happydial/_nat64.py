"""NAT64 address arithmetic (RFC 6052) and prefix parsing (RFC 7050, RFC 8781), pure.

On an IPv6-only network, an IPv4 address is reached through a NAT64 by connecting
to an *IPv4-embedded IPv6 address*: the NAT64 prefix with the IPv4 address written
into it. RFC 6052 section 2.2 fixes where the 32 bits go for each prefix length,
byte by byte (``p`` prefix, ``4`` an IPv4 octet, ``u`` the u-octet, ``.`` suffix):

.. code-block:: text

    byte   0 1 2 3 4 5 6 7 8 9 A B C D E F
    /32    p p p p 4 4 4 4 u . . . . . . .
    /40    p p p p p 4 4 4 u 4 . . . . . .
    /48    p p p p p p 4 4 u 4 4 . . . . .
    /56    p p p p p p p 4 u 4 4 4 . . . .
    /64    p p p p p p p p u 4 4 4 4 . . .
    /96    p p p p p p p p p p p p 4 4 4 4

Byte 8 (bits 64-71, the u-octet) is always zero and never carries IPv4 bits (in a
/96 prefix it is the prefix's, and must be zero too), so the four IPv4 octets go
into the first four bytes from ``length / 8`` on, skipping byte 8. The suffix is
zero when we synthesise, and ignored when we extract (RFC 6052 reserves it).

Nothing here does I/O or reads a clock: :mod:`happydial._dns64` does the lookup.

Public names: :class:`Nat64Prefix` (with ``Nat64Prefix.WELL_KNOWN``),
:func:`synthesize_addr_infos` with its result :class:`SynthesizedAddrInfos`,
:func:`nat64_prefixes_from_answers` (RFC 7050) and :func:`parse_pref64_option`
(RFC 8781).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._addresses import AddrInfoType, check_addr_infos
from ._validate import is_int

__all__ = [
    "WELL_KNOWN_IPV4_ADDRESSES",
    "Nat64Prefix",
    "SynthesizedAddrInfos",
    "check_lifetime",
    "nat64_prefixes_from_answers",
    "non_global_reason",
    "parse_pref64_option",
    "synthesize_addr_infos",
]

# RFC 6052 section 2.2: the only prefix lengths with a defined layout.
_LENGTHS = (32, 40, 48, 56, 64, 96)
_U_OCTET = 8  # byte index of bits 64-71

# RFC 7050 section 2.2 (and RFC 8880): the A records of ipv4only.arpa.
WELL_KNOWN_IPV4_ADDRESSES = (
    ipaddress.IPv4Address("192.0.0.170"),
    ipaddress.IPv4Address("192.0.0.171"),
)
"""The Well-Known IPv4 Addresses (WKAs) that DNS64 embeds in ``ipv4only.arpa``'s AAAA answers."""

_WKAS_PACKED = frozenset(ip.packed for ip in WELL_KNOWN_IPV4_ADDRESSES)

_WKP_NETWORK = ipaddress.IPv6Network("64:ff9b::/96")

# Prefixes that cannot be NAT64 prefixes: the kernel would not send the result to a
# translator (mapped and compatible addresses mean IPv4 to the socket API; link-local
# and multicast are not unicast routes to anywhere beyond the link).
_FORBIDDEN_PREFIX_RANGES = (
    (ipaddress.IPv6Network("::ffff:0:0/96"), "the IPv4-mapped range ::ffff:0:0/96"),
    (ipaddress.IPv6Network("::/96"), "the IPv4-compatible range ::/96"),
    (ipaddress.IPv6Network("fe80::/10"), "the link-local range fe80::/10"),
    (ipaddress.IPv6Network("ff00::/8"), "the multicast range ff00::/8"),
)


def _table(*rows: tuple[str, str]) -> tuple[tuple[int, int, str], ...]:
    """``(network, netmask, description)`` rows, as ints for a fast match."""
    networks = [(ipaddress.IPv4Network(cidr), what) for cidr, what in rows]
    return tuple((int(net.network_address), int(net.netmask), what) for net, what in networks)


# IPv4 destinations that no NAT64 can reach for us, whatever the prefix: the NAT64
# would have to connect to itself, to its own link, or to no unicast host at all.
_UNREACHABLE_IPV4 = _table(
    ("0.0.0.0/8", '"this network" (RFC 791)'),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local (RFC 3927)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved or broadcast (RFC 1112, RFC 919)"),
)

# The rest of the IANA IPv4 Special-Purpose Address Registry entries that are not
# globally reachable (RFC 6890): the Well-Known Prefix must not carry them (RFC 6052
# section 3.1). A fixed table rather than ``IPv4Address.is_global``, whose answers
# changed between Python patch releases.
_NON_GLOBAL_IPV4 = _UNREACHABLE_IPV4 + _table(
    ("10.0.0.0/8", "private-use (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (RFC 6598)"),
    ("172.16.0.0/12", "private-use (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation, TEST-NET-1 (RFC 5737)"),
    ("192.168.0.0/16", "private-use (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation, TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation, TEST-NET-3 (RFC 5737)"),
)
# In 192.0.0.0/24, the registry marks these two globally reachable (anycast services).
_GLOBAL_EXCEPTIONS = frozenset((0xC0000009, 0xC000000A))  # 192.0.0.9, 192.0.0.10


def _range_of(ip: int, table: tuple[tuple[int, int, str], ...]) -> str | None:
    """The description of the range of *table* holding *ip*, if any."""
    for network, mask, what in table:
        if ip & mask == network:
            return what
    return None


def non_global_reason(ip: ipaddress.IPv4Address) -> str | None:
    """Why *ip* is not a globally reachable IPv4 address, or ``None`` if it is."""
    value = int(ip)
    if value in _GLOBAL_EXCEPTIONS:
        return None
    return _range_of(value, _NON_GLOBAL_IPV4)


def _ipv4_packed(value: object, name: str) -> bytes:
    """The 4 bytes of an IPv4 address given as an ``IPv4Address`` or a dotted quad."""
    if isinstance(value, str):
        try:
            # Strict dotted quads only, as ipaddress (no "127.1", no octal).
            return socket.inet_pton(socket.AF_INET, value)
        except (OSError, ValueError):  # ValueError: a NUL or a non-ASCII character
            raise ValueError(f"{name} must be an IPv4 address, got {value!r}") from None
    if isinstance(value, ipaddress.IPv4Address):
        return value.packed
    raise TypeError(f"{name} must be an IPv4 address or a str, got {value!r}")


def _ipv6(value: object, name: str) -> ipaddress.IPv6Address:
    if isinstance(value, ipaddress.IPv6Address):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be an IPv6 address or a str, got {value!r}")
    try:
        return ipaddress.IPv6Address(value)
    except ValueError:
        raise ValueError(f"{name} must be an IPv6 address, got {value!r}") from None


def _slots(length: int) -> tuple[int, int, int, int]:
    """The byte indices of the four IPv4 octets for a prefix of *length* bits."""
    first = length // 8
    a, b, c, d = [i for i in range(first, first + 5) if i != _U_OCTET][:4]
    return (a, b, c, d)


_SLOTS = {length: _slots(length) for length in _LENGTHS}


@dataclass(frozen=True, init=False)
class Nat64Prefix:
    """A NAT64 prefix (the "Pref64::/n" of RFC 6052), validated.

    >>> prefix = Nat64Prefix("2001:db8:122:344::/64")
    >>> prefix.embed("192.0.2.33")
    IPv6Address('2001:db8:122:344:c0:2:2100:0')
    >>> prefix.extract("2001:db8:122:344:c0:2:2100::")
    IPv4Address('192.0.2.33')

    Args:
        prefix: ``"64:ff9b::/96"`` or an :class:`ipaddress.IPv6Network`.

    Raises:
        TypeError: *prefix* is neither a str nor an IPv6 network.
        ValueError: *prefix* is not an IPv6 prefix; its length is not one of 32, 40,
            48, 56, 64 or 96 (RFC 6052 section 2.2); it has bits set after its length;
            a /96 prefix has a non-zero u-octet (bits 64-71, which RFC 6052 reserves);
            or it lies in a range that cannot be a NAT64's (IPv4-mapped,
            IPv4-compatible, link-local, multicast).
    """

    network: ipaddress.IPv6Network

    WELL_KNOWN: ClassVar[Nat64Prefix]
    """The Well-Known Prefix ``64:ff9b::/96`` (RFC 6052 section 2.1)."""

    _packed: bytes = field(init=False, repr=False, compare=False)

    def __init__(self, prefix: str | ipaddress.IPv6Network) -> None:
        """Parse and validate *prefix* (see the class docstring)."""
        network = _parse_network(prefix)
        object.__setattr__(self, "network", network)
        object.__setattr__(self, "_packed", network.network_address.packed)

    @property
    def length(self) -> int:
        """Its length in bits (32, 40, 48, 56, 64 or 96)."""
        return self.network.prefixlen

    @property
    def is_well_known(self) -> bool:
        """Whether this is the Well-Known Prefix ``64:ff9b::/96`` (RFC 6052 section 2.1)."""
        return self.network == _WKP_NETWORK

    def __str__(self) -> str:
        """The prefix in CIDR notation, ``64:ff9b::/96``."""
        return str(self.network)

    def embed(self, ipv4: str | ipaddress.IPv4Address) -> ipaddress.IPv6Address:
        """The IPv4-embedded IPv6 address of *ipv4* (RFC 6052 section 2.2), no questions asked.

        Pure arithmetic, for any IPv4 address: use :meth:`synthesize` for an address
        to connect to, which refuses what must not be synthesised.

        Raises:
            TypeError: *ipv4* is neither an IPv4 address nor a str.
            ValueError: *ipv4* is not an IPv4 address.
        """
        return ipaddress.IPv6Address(self._embed(_ipv4_packed(ipv4, "ipv4")))

    def _embed(self, ipv4: bytes) -> bytes:
        """:meth:`embed` on packed addresses."""
        if self.network.prefixlen == 96:
            return self._packed[:12] + ipv4
        packed = bytearray(self._packed)
        a, b, c, d = _SLOTS[self.network.prefixlen]
        packed[a], packed[b], packed[c], packed[d] = ipv4
        return bytes(packed)

    def synthesize(self, ipv4: str | ipaddress.IPv4Address) -> ipaddress.IPv6Address:
        """The IPv6 address to connect to, through this NAT64, to reach *ipv4*.

        :meth:`embed`, after refusing the IPv4 addresses that must not be synthesised:

        * with any prefix, those no NAT64 can reach: ``0.0.0.0/8``, loopback
          ``127.0.0.0/8``, link-local ``169.254.0.0/16``, multicast ``224.0.0.0/4``
          and reserved ``240.0.0.0/4`` (with the broadcast address);
        * with the Well-Known Prefix, also every address that is not globally
          reachable (RFC 6052 section 3.1): private-use, shared (``100.64.0.0/10``),
          ``192.0.0.0/24`` (but for its two global anycast addresses),
          documentation and benchmarking ranges. A network-specific prefix may carry
          them: its operator may well translate to a private IPv4 network.

        Raises:
            TypeError: *ipv4* is neither an IPv4 address nor a str.
            ValueError: *ipv4* is not an IPv4 address, or one of those above; the
                message names the address, its range and the prefix.
        """
        return ipaddress.IPv6Address(self._synthesize(_ipv4_packed(ipv4, "ipv4")))

    def _synthesize(self, ipv4: bytes) -> bytes:
        """:meth:`synthesize` on packed addresses."""
        value = int.from_bytes(ipv4, "big")
        if self.network == _WKP_NETWORK:
            reason = None if value in _GLOBAL_EXCEPTIONS else _range_of(value, _NON_GLOBAL_IPV4)
            if reason is not None:
                raise ValueError(
                    f"ipv4 {socket.inet_ntop(socket.AF_INET, ipv4)} is {reason}, not globally"
                    f" reachable: the Well-Known Prefix {self} must not be used with it"
                    " (RFC 6052 section 3.1)"
                )
        else:
            reason = _range_of(value, _UNREACHABLE_IPV4)
            if reason is not None:
                raise ValueError(
                    f"ipv4 {socket.inet_ntop(socket.AF_INET, ipv4)} is {reason}:"
                    f" no NAT64 ({self}) can reach it"
                )
        return self._embed(ipv4)

    def extract(self, ipv6: str | ipaddress.IPv6Address) -> ipaddress.IPv4Address:
        """The IPv4 address embedded in *ipv6* (RFC 6052 section 2.2).

        Raises:
            TypeError: *ipv6* is neither an IPv6 address nor a str.
            ValueError: *ipv6* is not an IPv6 address, is outside this prefix, or its
                u-octet (bits 64-71) is not zero, so it is no IPv4-embedded address.
        """
        ip = _ipv6(ipv6, "ipv6")
        if ip.scope_id is not None or ip not in self.network:
            raise ValueError(f"ipv6 {ip} is not inside the NAT64 prefix {self}")
        packed = ip.packed
        if packed[_U_OCTET]:
            raise ValueError(
                f"ipv6 {ip} has a non-zero u-octet (bits 64-71), so it is no"
                f" IPv4-embedded address (RFC 6052 section 2.2)"
            )
        return ipaddress.IPv4Address(bytes(packed[i] for i in _SLOTS[self.length]))

    def __contains__(self, ipv6: object) -> bool:
        """Whether *ipv6* is an IPv4-embedded address of this prefix (see :meth:`extract`)."""
        try:
            self.extract(ipv6)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return True


def _parse_network(prefix: object) -> ipaddress.IPv6Network:
    if isinstance(prefix, ipaddress.IPv6Network):
        network = prefix
    elif isinstance(prefix, str):
        try:
            network = ipaddress.IPv6Network(prefix)
        except ValueError as exc:
            raise ValueError(f"prefix {prefix!r} is not an IPv6 prefix: {exc}") from None
    else:
        raise TypeError(f"prefix must be a str or an IPv6Network, got {prefix!r}")
    if network.prefixlen not in _LENGTHS:
        raise ValueError(
            f"prefix {prefix!r}: a NAT64 prefix is /32, /40, /48, /56, /64 or /96"
            f" (RFC 6052 section 2.2), got /{network.prefixlen}"
        )
    if network.prefixlen == 96 and network.network_address.packed[_U_OCTET]:
        raise ValueError(
            f"prefix {prefix!r}: bits 64-71 (the u-octet) must be zero (RFC 6052 section 2.2)"
        )
    for forbidden, what in _FORBIDDEN_PREFIX_RANGES:
        if network.overlaps(forbidden):
            raise ValueError(f"prefix {prefix!r} overlaps {what}; it cannot be a NAT64 prefix")
    return network


Nat64Prefix.WELL_KNOWN = Nat64Prefix(_WKP_NETWORK)


def _one_prefix(prefix: object, name: str) -> Nat64Prefix:
    if isinstance(prefix, Nat64Prefix):
        return prefix
    if isinstance(prefix, (str, ipaddress.IPv6Network)):
        return Nat64Prefix(prefix)
    raise TypeError(f"{name} must be a Nat64Prefix or a str such as '64:ff9b::/96', got {prefix!r}")


def _check_prefixes(prefixes: object, name: str = "prefixes") -> tuple[Nat64Prefix, ...]:
    """The prefixes, in order, without repeats, from one prefix or an iterable of them."""
    if isinstance(prefixes, (Nat64Prefix, str, ipaddress.IPv6Network)):
        return (_one_prefix(prefixes, name),)
    if isinstance(prefixes, (bytes, bytearray)) or not isinstance(prefixes, Iterable):
        raise TypeError(f"{name} must be a NAT64 prefix or an iterable of them, got {prefixes!r}")
    result: list[Nat64Prefix] = []
    for i, item in enumerate(prefixes):
        prefix = _one_prefix(item, f"{name}[{i}]")
        if prefix not in result:
            result.append(prefix)
    return tuple(result)


# ---------------------------------------------------------------------------
# Lists of addr_infos on an IPv6-only network
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SynthesizedAddrInfos:
    """What :func:`synthesize_addr_infos` made of a list of addr_infos.

    Attributes:
        addr_infos: The list to race: the native IPv6 entries first, in their order,
            then one synthesised IPv6 entry per IPv4 entry and prefix, in the IPv4
            entries' order (each IPv4 entry's prefixes in the order given).
        origins: ``(synthesised entry, IPv4 entry)`` pairs, in the order of
            *addr_infos*: where each synthesised entry came from.
        refused: IPv4 entries that must not be synthesised with any of the prefixes
            (see :meth:`Nat64Prefix.synthesize`), in their order.
    """

    addr_infos: tuple[AddrInfoType, ...]
    origins: tuple[tuple[AddrInfoType, AddrInfoType], ...]
    refused: tuple[AddrInfoType, ...]

    def origin(self, sockaddr: tuple[Any, ...]) -> AddrInfoType | None:
        """The IPv4 entry that *sockaddr* was synthesised from; ``None`` if it was not.

        *sockaddr* is compared as it appears in :attr:`addr_infos` (a connected
        socket's ``getpeername()`` gives it back the same way).
        """
        return next((ipv4 for made, ipv4 in self.origins if made[4] == sockaddr), None)


def synthesize_addr_infos(
    addr_infos: Iterable[AddrInfoType],
    prefixes: Nat64Prefix | str | Iterable[Nat64Prefix | str],
) -> SynthesizedAddrInfos:
    """Turn addr_infos into the list to race on an IPv6-only network (RFC 8305 section 7).

    Every IPv4 entry becomes one IPv6 entry per NAT64 prefix (same type, protocol,
    canonname and port), after the native IPv6 entries, which always go first. An
    entry synthesised to an address that is already in the list (a DNS64 answer, say)
    is dropped. IPv4 entries that must not be synthesised are left out and listed in
    :attr:`SynthesizedAddrInfos.refused`. Feed :attr:`SynthesizedAddrInfos.addr_infos`
    to :func:`happydial.start_connection`.

    >>> import socket
    >>> entries = [
    ...     (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 443)),
    ...     (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 443, 0, 0)),
    ... ]
    >>> result = synthesize_addr_infos(entries, Nat64Prefix("2001:db8:64::/96"))
    >>> [entry[4] for entry in result.addr_infos]
    [('2001:db8::1', 443, 0, 0), ('2001:db8:64::c000:201', 443, 0, 0)]
    >>> result.origin(("2001:db8:64::c000:201", 443, 0, 0))[4]
    ('192.0.2.1', 443)

    Args:
        addr_infos: ``getaddrinfo``-style entries with IP-literal sockaddrs.
        prefixes: One :class:`Nat64Prefix` (or its text, ``"64:ff9b::/96"``), or
            several (all are used, in order).

    Returns:
        A :class:`SynthesizedAddrInfos`.

    Raises:
        TypeError: An argument or an entry has the wrong type.
        ValueError: *prefixes* is empty, or an entry is malformed or its host is no
            IP literal of its family.
    """
    entries = check_addr_infos(addr_infos)
    chosen = _check_prefixes(prefixes)
    if not chosen:
        raise ValueError("prefixes must name at least one NAT64 prefix, got none")
    native = [entry for entry in entries if entry[0] == socket.AF_INET6]
    seen = {_packed_key(entry[4]) for entry in native}
    made: list[tuple[AddrInfoType, AddrInfoType]] = []
    refused: list[AddrInfoType] = []
    for i, entry in enumerate(entries):
        if entry[0] != socket.AF_INET:
            continue
        ipv4 = _ipv4_packed(entry[4][0], f"addr_infos[{i}] host")
        port = entry[4][1]
        synthesised = 0
        for prefix in chosen:
            try:
                packed = prefix._synthesize(ipv4)
            except ValueError:
                continue
            synthesised += 1
            if (packed, port) in seen:
                continue
            seen.add((packed, port))
            # inet_ntop spells it as the kernel does, so getpeername() gives it back.
            sockaddr = (socket.inet_ntop(socket.AF_INET6, packed), port, 0, 0)
            made.append(((socket.AF_INET6, entry[1], entry[2], entry[3], sockaddr), entry))
        if not synthesised:
            refused.append(entry)
    return SynthesizedAddrInfos(
        addr_infos=(*native, *(pair[0] for pair in made)),
        origins=tuple(made),
        refused=tuple(refused),
    )


def _packed_key(sockaddr: tuple[Any, ...]) -> tuple[bytes, int] | None:
    """The packed address and port of an IPv6 sockaddr; ``None`` for a host name."""
    try:
        return (socket.inet_pton(socket.AF_INET6, sockaddr[0].partition("%")[0]), sockaddr[1])
    except (OSError, ValueError):  # ValueError: a NUL or a non-ASCII character
        return None


# ---------------------------------------------------------------------------
# RFC 7050: the prefixes in the AAAA answers for ipv4only.arpa
# ---------------------------------------------------------------------------

# Longest first: see _prefix_of_answer.
_SEARCH_ORDER = tuple(sorted(_LENGTHS, reverse=True))


def _prefix_of_answer(packed: bytes) -> Nat64Prefix | None:
    """The NAT64 prefix that synthesised *packed* from a Well-Known IPv4 Address, if any.

    RFC 7050 section 3: look for a WKA at the position of each RFC 6052 prefix length.
    Several positions can match when the prefix's own bits happen to spell a WKA
    (``2001:db8:c000:aa::/64`` holds 192.0.0.170 at the /32 position). The longest
    matching length is the true one: the bits a longer length reads start after a
    shorter prefix's embedded address, where there are only the WKA's trailing octets
    (0, 0, 170 or 171) and zeros, never the leading 192. (RFC 7050 settles such an
    address with the other WKA; the longest position gives the same prefix wherever
    that decides, and also decides when both WKAs sit in the prefix's bits.) A
    candidate that is no valid prefix (a u-octet set, a forbidden range) does not count.
    """
    for length in _SEARCH_ORDER:
        a, b, c, d = _SLOTS[length]
        embedded = bytes((packed[a], packed[b], packed[c], packed[d]))
        if embedded not in _WKAS_PACKED or (length < 96 and packed[_U_OCTET]):
            continue
        try:
            return Nat64Prefix(ipaddress.IPv6Network((packed, length), strict=False))
        except ValueError:
            continue
    return None


def nat64_prefixes_from_answers(answers: Iterable[AddrInfoType]) -> tuple[Nat64Prefix, ...]:
    """The NAT64 prefixes in the AAAA answers for ``ipv4only.arpa`` (RFC 7050 section 3).

    Each IPv6 answer that embeds one of the Well-Known IPv4 Addresses 192.0.0.170
    and 192.0.0.171 at the position of an RFC 6052 prefix length gives that prefix
    (the longest such length, see the module's notes). Answers with no WKA are
    ignored, IPv4 entries too. Several prefixes come out in the order of their first
    answer, without repeats. The RFC's optional DNSSEC validation (section 3.1) and
    connectivity check (section 3.2) are not done here: connecting through the prefix
    is the check.

    >>> import socket
    >>> answers = [
    ...     (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("64:ff9b::c000:aa", 0, 0, 0)),
    ...     (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("64:ff9b::c000:ab", 0, 0, 0)),
    ... ]
    >>> [str(prefix) for prefix in nat64_prefixes_from_answers(answers)]
    ['64:ff9b::/96']

    Args:
        answers: addr_infos, as ``await resolver("ipv4only.arpa", 0, AF_INET6)`` gives.

    Returns:
        The prefixes found; empty when there is no DNS64 (no answer holds a WKA).

    Raises:
        TypeError: *answers* is not an iterable of addr_infos.
        ValueError: An entry is malformed.
    """
    found: list[Nat64Prefix] = []
    for entry in check_addr_infos(answers, "answers"):
        if entry[0] != socket.AF_INET6:
            continue
        key = _packed_key(entry[4])
        if key is None:
            continue  # a host name where an address should be: no WKA in it
        prefix = _prefix_of_answer(key[0])
        if prefix is not None and prefix not in found:
            found.append(prefix)
    return tuple(found)


# ---------------------------------------------------------------------------
# RFC 8781: the PREF64 option of a Router Advertisement
# ---------------------------------------------------------------------------

_PREF64_TYPE = 38
# RFC 8781 section 4: the Prefix Length Code (PLC) to the prefix length.
_PLC_LENGTHS = {0: 96, 1: 64, 2: 56, 3: 48, 4: 40, 5: 32}


def parse_pref64_option(option: bytes | bytearray | memoryview) -> tuple[Nat64Prefix, int]:
    """The NAT64 prefix and its lifetime from a Router Advertisement's PREF64 option.

    RFC 8781 section 4: 16 bytes, type 38, length 2 (in units of 8 bytes), a 13-bit
    scaled lifetime (units of 8 seconds) and a 3-bit Prefix Length Code, then the
    prefix's first 96 bits. Bits beyond the prefix length are ignored.

    >>> option = bytes.fromhex("2602 0708") + bytes.fromhex("0064ff9b" + "00" * 8)
    >>> prefix, lifetime = parse_pref64_option(option)
    >>> (str(prefix), lifetime)
    ('64:ff9b::/96', 1800)

    Pass the result to :meth:`happydial.Nat64Discovery.configure`
    (``configure(prefix, lifetime=lifetime)``); a lifetime of 0 withdraws the prefix.

    Raises:
        TypeError: *option* is not bytes.
        ValueError: *option* is not a PREF64 option, or its PLC is 6 or 7 (which the
            RFC says to ignore the option for), or the prefix is not usable.
    """
    if not isinstance(option, (bytes, bytearray, memoryview)):
        raise TypeError(f"option must be bytes, got {option!r}")
    data = bytes(option)
    if len(data) != 16 or data[0] != _PREF64_TYPE or data[1] != 2:
        raise ValueError(
            f"option must be a 16-byte PREF64 option (type 38, length 2), got {data.hex()!r}"
        )
    word = int.from_bytes(data[2:4], "big")
    plc = word & 0x7
    if plc not in _PLC_LENGTHS:
        raise ValueError(f"option has the invalid Prefix Length Code {plc} (RFC 8781 section 4)")
    network = ipaddress.IPv6Network((data[4:16] + bytes(4), _PLC_LENGTHS[plc]), strict=False)
    return Nat64Prefix(network), (word >> 3) * 8


def check_lifetime(value: object, name: str) -> float | None:
    """A lifetime in seconds: ``None`` or a finite number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not (is_int(value) or isinstance(value, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if not 0 <= value < float("inf"):  # type: ignore[operator]
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]
