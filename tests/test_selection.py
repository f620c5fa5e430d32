"""RFC 6724 destination address selection: one table per rule, exact orders.

The glibc oracle for the same rules is in ``tests/test_selection_lab.py``.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from happydial import AddrInfoType, sort_addr_infos
from happydial._selection import rank_by_sources, sources_lookup

V4 = socket.AF_INET
V6 = socket.AF_INET6
TCP = socket.IPPROTO_TCP
STREAM = socket.SOCK_STREAM


def entry(host: str, port: int = 443, scope_id: int = 0) -> AddrInfoType:
    if ":" in host:
        return (V6, STREAM, TCP, "", (host, port, 0, scope_id))
    return (V4, STREAM, TCP, "", (host, port))


def order(hosts: list[str], sources: dict[str, Any]) -> list[str]:
    """The sorted hosts of *hosts* (given in this order) with the *sources* mapping."""
    return [ai[4][0] for ai in sort_addr_infos([entry(h) for h in hosts], sources=sources)]


# ---------------------------------------------------------------------------
# One table per rule. Each case is (destinations in input order, sources, expected).
# ---------------------------------------------------------------------------

RULE_CASES: dict[str, tuple[list[str], dict[str, Any], list[str]]] = {
    # Rule 1: a destination without a source goes last, whatever its precedence.
    "rule1-no-ipv6-source": (
        ["2001:db8::10", "192.0.2.10"],
        {"2001:db8::10": None, "192.0.2.10": "192.0.2.2"},
        ["192.0.2.10", "2001:db8::10"],
    ),
    # Rule 1 keeps unusable destinations, in rule 6 then rule 10 order among themselves.
    "rule1-all-unusable": (
        ["192.0.2.10", "2001:db8::10", "192.0.2.11"],
        {"192.0.2.10": None, "2001:db8::10": None, "192.0.2.11": None},
        ["2001:db8::10", "192.0.2.10", "192.0.2.11"],
    ),
    # Rule 2: the IPv6 source is link-local for a global destination; IPv4 matches.
    "rule2-link-local-ipv6-source": (
        ["2001:db8:1::1", "198.51.100.121"],
        {"2001:db8:1::1": "fe80::1", "198.51.100.121": "198.51.100.117"},
        ["198.51.100.121", "2001:db8:1::1"],
    ),
    # Rule 2, the other way: an IPv4 link-local (169.254/16) source for a global
    # IPv4 destination loses to an IPv6 destination with a global source.
    "rule2-link-local-ipv4-source": (
        ["198.51.100.121", "2001:db8:1::1"],
        {"2001:db8:1::1": "2001:db8:1::2", "198.51.100.121": "169.254.13.78"},
        ["2001:db8:1::1", "198.51.100.121"],
    ),
    # Rule 5: the only IPv6 source is a ULA (label 13) for a global destination
    # (label 1); IPv4 labels match (4 and 4). The example.
    "rule5-ula-source": (
        ["2001:db8::10", "192.0.2.10"],
        {"2001:db8::10": "fd00::2", "192.0.2.10": "192.0.2.2"},
        ["192.0.2.10", "2001:db8::10"],
    ),
    # Rule 5: a 6to4 source (label 2) matches a 6to4 destination, not a native one.
    "rule5-6to4": (
        ["2001:db8:1::1", "2002:c633:6401::1"],
        {"2001:db8:1::1": "2002:c633:6401::2", "2002:c633:6401::1": "2002:c633:6401::2"},
        ["2002:c633:6401::1", "2001:db8:1::1"],
    ),
    # Rule 6: global IPv6 (40) before IPv4 (35).
    "rule6-ipv6-over-ipv4": (
        ["192.0.2.10", "2001:db8::10"],
        {"2001:db8::10": "2001:db8:1::2", "192.0.2.10": "192.0.2.2"},
        ["2001:db8::10", "192.0.2.10"],
    ),
    # Rule 6: ::1 (50) before 127.0.0.1 (35); both are link-local, so rule 8 ties.
    "rule6-loopback": (
        ["127.0.0.1", "::1"],
        {"::1": "::1", "127.0.0.1": "127.0.0.1"},
        ["::1", "127.0.0.1"],
    ),
    # Rule 6: the ULA destination (3) with a ULA source loses to IPv4 (35); glibc
    # (precedence 40 for ULAs) puts the ULA first.
    "rule6-ula-to-ula": (
        ["fd00::10", "192.0.2.10"],
        {"fd00::10": "fd00::2", "192.0.2.10": "192.0.2.2"},
        ["192.0.2.10", "fd00::10"],
    ),
    # Rule 6: IPv4 (35) before 6to4 (30), both with matching labels.
    "rule6-ipv4-over-6to4": (
        ["2002:c633:6401::1", "192.0.2.10"],
        {"2002:c633:6401::1": "2002:c633:6401::2", "192.0.2.10": "192.0.2.2"},
        ["192.0.2.10", "2002:c633:6401::1"],
    ),
    # Rule 6: Teredo (5) and the deprecated ::/96, fec0::/10, 3ffe::/16 (1) last.
    "rule6-table": (
        ["3ffe::1", "2001::1", "fec0::1", "::c000:20a", "2001:db8::1"],
        {
            "3ffe::1": "2001:db8::2",
            "2001::1": "2001:db8::2",
            "fec0::1": "2001:db8::2",
            "::c000:20a": "2001:db8::2",
            "2001:db8::1": "2001:db8::2",
        },
        # Only 2001:db8::1 shares the source's label (1, rule 5); fec0::1 alone has
        # another scope than its source (5, rule 2) and goes last; then precedence
        # (rule 6) and, between 3ffe::1 and ::c000:20a, 3 common bits against 2 (rule 9).
        ["2001:db8::1", "2001::1", "3ffe::1", "::c000:20a", "fec0::1"],
    ),
    # Rule 8: the link-local destination (scope 2) before the global one (scope 14).
    "rule8-ipv6-link-local": (
        ["2001:db8:1::1", "fe80::1"],
        {"2001:db8:1::1": "2001:db8:1::2", "fe80::1": "fe80::2"},
        ["fe80::1", "2001:db8:1::1"],
    ),
    # Rule 8 for IPv4: 169.254/16 is link-local, private space is global.
    "rule8-ipv4-link-local": (
        ["10.0.0.10", "169.254.0.10"],
        {"10.0.0.10": "10.0.0.2", "169.254.0.10": "169.254.0.2"},
        ["169.254.0.10", "10.0.0.10"],
    ),
    # Rule 9: the destination sharing 64 bits with its source before the one
    # sharing 47.
    "rule9-longest-prefix": (
        ["2001:db8:3::10", "2001:db8:1::10"],
        {"2001:db8:3::10": "2001:db8:2::2", "2001:db8:1::10": "2001:db8:1::2"},
        ["2001:db8:1::10", "2001:db8:3::10"],
    ),
    # Rule 9 stops at the source's prefix (64 bits): inside it, rule 10 decides
    # (glibc compares all 128 bits and puts ::3 first).
    "rule9-capped-at-64-bits": (
        ["2001:db8:1:0:8000::10", "2001:db8:1::3"],
        {"2001:db8:1:0:8000::10": "2001:db8:1::2", "2001:db8:1::3": "2001:db8:1::2"},
        ["2001:db8:1:0:8000::10", "2001:db8:1::3"],
    ),
    # Rule 9 is not applied to IPv4 (glibc applies it on the source's subnet).
    "rule9-not-for-ipv4": (
        ["198.51.100.10", "192.0.2.10"],
        {"198.51.100.10": "192.0.2.2", "192.0.2.10": "192.0.2.2"},
        ["198.51.100.10", "192.0.2.10"],
    ),
    # Rule 10: equal in every rule, so the input order stays.
    "rule10-ipv6": (
        ["2001:db8:5::20", "2001:db8:5::10"],
        {"2001:db8:5::20": "2001:db8:1::2", "2001:db8:5::10": "2001:db8:1::2"},
        ["2001:db8:5::20", "2001:db8:5::10"],
    ),
    # All rules at once, with both families interleaved in the input.
    "mixed": (
        ["192.0.2.10", "2001:db8:3::10", "fd00::10", "2001:db8:1::10", "192.0.2.11", "fe80::9"],
        {
            "192.0.2.10": "192.0.2.2",
            "2001:db8:3::10": "2001:db8:2::2",
            "fd00::10": "fd00::2",
            "2001:db8:1::10": "2001:db8:1::2",
            "192.0.2.11": "192.0.2.2",
            "fe80::9": None,
        },
        [
            "2001:db8:1::10",
            "2001:db8:3::10",
            "192.0.2.10",
            "192.0.2.11",
            "fd00::10",
            "fe80::9",
        ],
    ),
}


@pytest.mark.parametrize(("hosts", "sources", "expected"), RULE_CASES.values(), ids=RULE_CASES)
def test_rule(hosts: list[str], sources: dict[str, Any], expected: list[str]) -> None:
    assert order(hosts, sources) == expected
    # Sorting is idempotent: the sorted list sorts to itself.
    assert order(expected, sources) == expected


def test_sources_as_address_objects() -> None:
    sources = {
        "2001:db8::10": ipaddress.IPv6Address("fd00::2"),
        "192.0.2.10": ipaddress.IPv4Address("192.0.2.2"),
    }
    assert order(["2001:db8::10", "192.0.2.10"], sources) == ["192.0.2.10", "2001:db8::10"]


def test_ipv4_mapped_destination_is_ipv4() -> None:
    # An AF_INET6 entry for ::ffff:192.0.2.10 has IPv4's precedence (35) and label.
    sources = {"::ffff:192.0.2.10": "::ffff:192.0.2.2", "2001:db8::10": "2001:db8:1::2"}
    assert order(["::ffff:192.0.2.10", "2001:db8::10"], sources) == [
        "2001:db8::10",
        "::ffff:192.0.2.10",
    ]
    # ... and no rule 9 between two of them.
    sources = {"::ffff:198.51.100.10": "192.0.2.2", "::ffff:192.0.2.10": "192.0.2.2"}
    assert order(["::ffff:198.51.100.10", "::ffff:192.0.2.10"], sources) == [
        "::ffff:198.51.100.10",
        "::ffff:192.0.2.10",
    ]


def test_multicast_scope() -> None:
    # ff02::1 has link-local scope (2), ff05::1 site-local (5): rule 8.
    sources = {"ff05::1": "2001:db8::2", "ff02::1": "fe80::2"}
    assert order(["ff05::1", "ff02::1"], sources) == ["ff02::1", "ff05::1"]


def test_scoped_link_local_destinations() -> None:
    # The same link-local address on two interfaces: the mapping tells them apart
    # by "host%scope_id"; the one reachable (with a source) goes first.
    infos = [entry("fe80::1", scope_id=7), entry("fe80::1", scope_id=3)]
    sources = {"fe80::1%7": None, "fe80::1%3": "fe80::2"}
    assert sort_addr_infos(infos, sources=sources) == [infos[1], infos[0]]
    # Without a scoped key, the plain host applies to both; a %zone in the source
    # (as getsockname() may give it) is allowed.
    assert sort_addr_infos(infos, sources={"fe80::1": "fe80::2%eth0"}) == infos


def test_callable_sources_receive_the_entry() -> None:
    infos = [entry("2001:db8::10"), entry("192.0.2.10")]
    seen: list[AddrInfoType] = []

    def sources(addr_info: AddrInfoType) -> str | None:
        seen.append(addr_info)
        return "192.0.2.2" if addr_info[0] == V4 else None

    assert sort_addr_infos(infos, sources=sources) == [infos[1], infos[0]]
    assert seen == infos


def test_input_is_not_mutated_and_result_is_new() -> None:
    infos = [entry("192.0.2.10"), entry("2001:db8::10")]
    copy = list(infos)
    sources = {"192.0.2.10": "192.0.2.2", "2001:db8::10": "2001:db8::2"}
    result = sort_addr_infos(infos, sources=sources)
    assert infos == copy
    assert result == [copy[1], copy[0]]
    assert result is not infos


def test_accepts_any_iterable_and_short_lists() -> None:
    sources = {"192.0.2.10": None}
    assert sort_addr_infos(iter([entry("192.0.2.10")]), sources=sources) == [entry("192.0.2.10")]
    assert sort_addr_infos([], sources={}) == []
    assert sort_addr_infos((), sources=lambda _: None) == []


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("infos", "sources", "error", "match"),
    [
        ("2001:db8::1", {}, TypeError, "addr_infos must be an iterable"),
        ([("2001:db8::1", 443)], {}, ValueError, r"addr_infos\[0\] must be a 5-tuple"),
        ([entry("example.com")], {}, ValueError, r"addr_infos\[0\]: 'example.com' is not an IP"),
        ([entry("192.0.2.1\x00")], {}, ValueError, r"addr_infos\[0\]: '192.0.2.1\\x00' is not"),
        ([entry("192.0.2.1")], {"192.0.2.1": "192.0.2.2\x00"}, ValueError, "is not an IP address"),
        (
            [(V4, STREAM, TCP, "", ("2001:db8::1", 443))],
            {},
            ValueError,
            "not an IP address of the entry's family",
        ),
        ([entry("192.0.2.1")], ["192.0.2.2"], TypeError, "sources must be a mapping"),
        ([entry("192.0.2.1")], {}, ValueError, "sources has no entry for destination '192.0.2.1'"),
        ([entry("192.0.2.1")], {"192.0.2.1": 3232235522}, TypeError, "a source must be an IP"),
        ([entry("192.0.2.1")], {"192.0.2.1": "gateway"}, ValueError, "'gateway' is not an IP"),
        ([entry("192.0.2.1")], {"192.0.2.1": "2001:db8::2"}, ValueError, "needs an IPv4 source"),
        ([entry("2001:db8::1")], {"2001:db8::1": "192.0.2.2"}, ValueError, "needs an IPv4 source"),
    ],
)
def test_bad_input(infos: Any, sources: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        sort_addr_infos(infos, sources=sources)


def test_error_names_the_destination() -> None:
    infos = [entry("192.0.2.1"), entry("2001:db8::1")]
    with pytest.raises(ValueError, match=r"sources for addr_infos\[1\] '2001:db8::1'"):
        sort_addr_infos(infos, sources={"192.0.2.1": None, "2001:db8::1": "nope"})


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

_V4_SOURCES = ["192.0.2.2", "169.254.0.2", "127.0.0.1", None]
_V6_SOURCES = ["2001:db8:1::2", "fd00::2", "fe80::2", "2002:c633:6401::2", "::1", None]


@st.composite
def _destinations(draw: Callable[..., Any]) -> tuple[list[AddrInfoType], dict[str, Any]]:
    """Addr_infos drawn from a small address space (so ties and repeats happen)."""
    hosts = draw(
        st.lists(
            st.one_of(
                st.builds(
                    lambda a, b: f"{a}.0.2.{b}",
                    st.sampled_from([192, 198, 127, 169, 10]),
                    st.integers(1, 3),
                ),
                st.builds(
                    lambda p, b: f"{p}::{b}",
                    st.sampled_from(["2001:db8:1", "2001:db8:2", "fd00", "fe80", "2002:c633:6401"]),
                    st.integers(1, 3),
                ),
            ),
            max_size=10,
        )
    )
    infos = [entry(h, port=draw(st.integers(0, 2))) for h in hosts]
    sources = {
        h: draw(st.sampled_from(_V6_SOURCES if ":" in h else _V4_SOURCES)) for h in set(hosts)
    }
    return infos, sources


# An independent reading of section 6: the pairwise comparison, rule by rule, over
# ipaddress objects and the policy table as the RFC prints it.
_TABLE = [
    (ipaddress.IPv6Network(prefix), precedence, label)
    for prefix, precedence, label in [
        ("::1/128", 50, 0),
        ("::/0", 40, 1),
        ("::ffff:0:0/96", 35, 4),
        ("2002::/16", 30, 2),
        ("2001::/32", 5, 5),
        ("fc00::/7", 3, 13),
        ("::/96", 1, 3),
        ("fec0::/10", 1, 11),
        ("3ffe::/16", 1, 12),
    ]
]


def _as_v6(host: str) -> ipaddress.IPv6Address:
    address = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(f"::ffff:{address}")
    return address


def _row(address: ipaddress.IPv6Address) -> tuple[int, int]:
    _, precedence, label = max(
        (row for row in _TABLE if address in row[0]), key=lambda row: row[0].prefixlen
    )
    return precedence, label


def _ref_scope(address: ipaddress.IPv6Address) -> int:
    if address.is_multicast:
        return address.packed[1] & 0xF
    if address.is_link_local or address == ipaddress.IPv6Address("::1"):
        return 2
    if address.is_site_local:
        return 5
    v4 = address.ipv4_mapped
    if v4 is not None and (v4.is_loopback or v4.is_link_local):
        return 2
    return 14


def _reference_sort(infos: list[AddrInfoType], sources: dict[str, Any]) -> list[AddrInfoType]:
    def compare(a: AddrInfoType, b: AddrInfoType) -> int:  # noqa: PLR0911 - one return per rule
        da, db = _as_v6(a[4][0]), _as_v6(b[4][0])
        sa, sb = sources[a[4][0]], sources[b[4][0]]
        if (sa is None) != (sb is None):  # rule 1
            return -1 if sb is None else 1
        if sa is not None and sb is not None:
            sa, sb = _as_v6(str(sa)), _as_v6(str(sb))
            ma, mb = _ref_scope(da) == _ref_scope(sa), _ref_scope(db) == _ref_scope(sb)
            if ma != mb:  # rule 2
                return -1 if ma else 1
            la, lb = _row(da)[1] == _row(sa)[1], _row(db)[1] == _row(sb)[1]
            if la != lb:  # rule 5
                return -1 if la else 1
        if _row(da)[0] != _row(db)[0]:  # rule 6
            return -1 if _row(da)[0] > _row(db)[0] else 1
        if _ref_scope(da) != _ref_scope(db):  # rule 8
            return -1 if _ref_scope(da) < _ref_scope(db) else 1
        if sa is not None and sb is not None and da.ipv4_mapped is None and db.ipv4_mapped is None:
            # rule 9, IPv6 only, CommonPrefixLen up to a 64-bit source prefix
            pa = min(64, 128 - (int(da) ^ int(sa)).bit_length())
            pb = min(64, 128 - (int(db) ^ int(sb)).bit_length())
            if pa != pb:
                return -1 if pa > pb else 1
        return 0  # rule 10: the stable sort keeps the order

    return sorted(infos, key=functools.cmp_to_key(compare))


@given(_destinations())
def test_matches_the_pairwise_rules(case: tuple[list[AddrInfoType], dict[str, Any]]) -> None:
    infos, sources = case
    assert sort_addr_infos(infos, sources=sources) == _reference_sort(infos, sources)


@given(_destinations())
def test_result_is_a_stable_permutation(case: tuple[list[AddrInfoType], dict[str, Any]]) -> None:
    infos, sources = case
    result = sort_addr_infos(infos, sources=sources)
    assert sorted(map(repr, result)) == sorted(map(repr, infos))  # nothing lost or added
    # The same host with different ports ties on every rule: its ports keep their order.
    for host in {ai[4][0] for ai in infos}:
        ports_in = [ai[4][1] for ai in infos if ai[4][0] == host]
        assert [ai[4][1] for ai in result if ai[4][0] == host] == ports_in
    assert sort_addr_infos(result, sources=sources) == result  # idempotent


@given(_destinations())
def test_unusable_destinations_go_last(case: tuple[list[AddrInfoType], dict[str, Any]]) -> None:
    infos, sources = case
    result = sort_addr_infos(infos, sources=sources)
    usable = [sources[ai[4][0]] is not None for ai in result]
    assert usable == sorted(usable, reverse=True)


def test_internal_sort_counts_usable_entries() -> None:
    # connect() interleaves the usable entries and keeps the rest last.
    infos = [entry("2001:db8::10"), entry("192.0.2.10"), entry("192.0.2.11")]
    lookup = sources_lookup({"2001:db8::10": None, "192.0.2.10": "192.0.2.2", "192.0.2.11": None})
    assert rank_by_sources(infos, lookup) == ([infos[1], infos[0], infos[2]], 1)
    assert rank_by_sources(infos[:1], lookup) == (infos[:1], 0)
