"""Table tests for the address layer, upstream quirks kept and defects fixed."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from happydial import (
    AddrInfoType,
    addr_to_addr_infos,
    interleave_addr_infos,
    ip_addresses_to_addr_infos,
    pop_addr_infos_interleave,
    remove_addr_infos,
)
from happydial._addresses import check_addr_infos

V4 = socket.AF_INET
V6 = socket.AF_INET6
TCP = socket.IPPROTO_TCP
STREAM = socket.SOCK_STREAM
LO_INDEX = socket.if_nametoindex("lo")


def v4(host: str, port: int = 80) -> AddrInfoType:
    return (V4, STREAM, TCP, "", (host, port))


def v6(host: str, port: int = 80, flowinfo: int = 0, scope_id: int = 0) -> AddrInfoType:
    return (V6, STREAM, TCP, "", (host, port, flowinfo, scope_id))


def hosts(addr_infos: list[AddrInfoType]) -> list[str]:
    return [ai[4][0] for ai in addr_infos]


# ---------------------------------------------------------------------------
# interleave_addr_infos
# ---------------------------------------------------------------------------

SIX = [v6("::1"), v6("::2"), v6("::3"), v4("127.0.0.1"), v4("127.0.0.2")]


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, ["::1", "127.0.0.1", "::2", "127.0.0.2", "::3"]),
        (2, ["::1", "::2", "127.0.0.1", "::3", "127.0.0.2"]),
        (3, ["::1", "::2", "::3", "127.0.0.1", "127.0.0.2"]),
        (5, ["::1", "::2", "::3", "127.0.0.1", "127.0.0.2"]),
        (100, ["::1", "::2", "::3", "127.0.0.1", "127.0.0.2"]),
    ],
)
def test_interleave_first_family_count(count: int, expected: list[str]) -> None:
    assert hosts(interleave_addr_infos(SIX, count)) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([], []),
        ([v4("192.0.2.1")], ["192.0.2.1"]),
        ([v4("192.0.2.1"), v4("192.0.2.2")], ["192.0.2.1", "192.0.2.2"]),
        # The first family in the input leads, whichever it is.
        (
            [v4("192.0.2.1"), v4("192.0.2.2"), v6("2001:db8::1")],
            ["192.0.2.1", "2001:db8::1", "192.0.2.2"],
        ),
        # Families scattered through the input are grouped in order of appearance.
        (
            [v6("::1"), v4("10.0.0.1"), v6("::2"), v6("::3"), v4("10.0.0.2")],
            ["::1", "10.0.0.1", "::2", "10.0.0.2", "::3"],
        ),
        # Duplicates are kept: removing them is not interleaving's job.
        ([v6("::1"), v6("::1"), v4("10.0.0.1")], ["::1", "10.0.0.1", "::1"]),
    ],
)
def test_interleave_table(given: list[AddrInfoType], expected: list[str]) -> None:
    assert hosts(interleave_addr_infos(given)) == expected


def test_valid_entries_off_the_fast_path() -> None:
    # Shapes getaddrinfo never makes but callers may: an IPv6 (host, port) sockaddr,
    # a tuple subclass, a bool-free int subclass of a family.
    class Entry(tuple):  # type: ignore[type-arg]
        __slots__ = ()

    given = [
        (V6, STREAM, TCP, "", ("2001:db8::1", 80)),
        Entry((V4, STREAM, TCP, "", ("192.0.2.1", 80))),
        (V6, STREAM, TCP, "", ("2001:db8::2", 80, 0)),
    ]
    assert hosts(interleave_addr_infos(given)) == ["2001:db8::1", "192.0.2.1", "2001:db8::2"]


def test_interleave_does_not_mutate_and_accepts_iterators() -> None:
    original = list(SIX)
    result = interleave_addr_infos(iter(SIX))
    assert original == SIX
    assert hosts(result) == ["::1", "127.0.0.1", "::2", "127.0.0.2", "::3"]
    single = [v4("192.0.2.1")]
    assert interleave_addr_infos(single) is not single


@pytest.mark.parametrize("count", [0, -1])
def test_interleave_count_below_one_is_a_value_error(count: int) -> None:
    with pytest.raises(
        ValueError, match=rf"first_address_family_count must be at least 1, got {count}"
    ):
        interleave_addr_infos(SIX, count)


@pytest.mark.parametrize("count", [1.0, "2", True, None])
def test_interleave_count_wrong_type(count: Any) -> None:
    with pytest.raises(TypeError, match="first_address_family_count must be an int"):
        interleave_addr_infos(SIX, count)


# ---------------------------------------------------------------------------
# Entry validation, shared by every function
# ---------------------------------------------------------------------------

BAD_ENTRIES: list[tuple[Any, type[Exception], str]] = [
    ("not a tuple", TypeError, r"addr_infos\[1\] must be a 5-tuple"),
    ((V4, STREAM, TCP, ""), ValueError, r"addr_infos\[1\] must be a 5-tuple"),
    ((V4, STREAM, TCP, "", ("192.0.2.1", 80), 0), ValueError, "must be a 5-tuple"),
    ((socket.AF_UNIX, STREAM, 0, "", ("192.0.2.1", 80)), ValueError, "family must be AF_INET"),
    (("2", STREAM, TCP, "", ("192.0.2.1", 80)), TypeError, "family, type and proto must be ints"),
    ((V4, STREAM, TCP, None, ("192.0.2.1", 80)), TypeError, "canonname must be a str"),
    ((V4, 2**32, TCP, "", ("192.0.2.1", 80)), ValueError, "type and proto must be in 0-"),
    ((V4, STREAM, -1, "", ("192.0.2.1", 80)), ValueError, "type and proto must be in 0-"),
    ((V4, STREAM, TCP, "", ["192.0.2.1", 80]), TypeError, "sockaddr must be a tuple"),
    ((V4, STREAM, TCP, "", ("192.0.2.1", 80, 0, 0)), ValueError, "AF_INET sockaddr is"),
    ((V6, STREAM, TCP, "", ("::1",)), ValueError, "AF_INET6 sockaddr is"),
    ((V4, STREAM, TCP, "", (b"192.0.2.1", 80)), TypeError, "host must be a str"),
    ((V4, STREAM, TCP, "", ("192.0.2.1", "80")), TypeError, "port must be an int"),
    ((V4, STREAM, TCP, "", ("192.0.2.1", True)), TypeError, "port must be an int"),
    ((V4, STREAM, TCP, "", ("192.0.2.1", 65536)), ValueError, "port must be in 0-65535"),
    ((V4, STREAM, TCP, "", ("192.0.2.1", -1)), ValueError, "port must be in 0-65535"),
    ((V6, STREAM, TCP, "", ("::1", 80, "0", 0)), TypeError, "flowinfo and scope_id must be ints"),
    ((V6, STREAM, TCP, "", ("::1", 80, 0, -1)), ValueError, "must fit in 32 bits"),
]


@pytest.mark.parametrize(("entry", "exc", "match"), BAD_ENTRIES)
def test_malformed_entries_are_named(entry: Any, exc: type[Exception], match: str) -> None:
    good = v4("192.0.2.9")
    with pytest.raises(exc, match=match):
        interleave_addr_infos([good, entry])
    for edit in (pop_addr_infos_interleave, lambda lst: remove_addr_infos(lst, ("192.0.2.9", 80))):
        lst = [good, entry]
        with pytest.raises(exc, match=match.replace("addr_infos\\[1\\]", "")):
            edit(lst)
        assert lst == [good, entry], "the list must not be edited when it is invalid"


@pytest.mark.parametrize("value", ["192.0.2.1", b"abc", 42, None])
def test_addr_infos_must_be_an_iterable(value: Any) -> None:
    with pytest.raises(TypeError, match="addr_infos must be an iterable of addr_info tuples"):
        check_addr_infos(value)


def test_check_addr_infos_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"local_addr_infos\[0\]"):
        check_addr_infos([(V4, STREAM, TCP, "")], "local_addr_infos")


# ---------------------------------------------------------------------------
# pop_addr_infos_interleave
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "interleave", "expected"),
    [
        ([v6("::1"), v6("::2"), v4("10.0.0.1"), v4("10.0.0.2")], None, ["::2", "10.0.0.2"]),
        ([v6("::1"), v6("::2"), v4("10.0.0.1"), v4("10.0.0.2")], 1, ["::2", "10.0.0.2"]),
        ([v6("::1"), v6("::2"), v4("10.0.0.1"), v4("10.0.0.2")], 2, []),
        ([v6("::1"), v6("::2"), v6("::3"), v4("10.0.0.1")], 2, ["::3"]),
        # Upstream 2.7.1 quirk kept: duplicates past the window stay.
        ([v6("::1"), v6("::1"), v4("10.0.0.1"), v4("10.0.0.1")], 1, ["::1", "10.0.0.1"]),
        ([], 1, []),
        ([v4("10.0.0.1")], 5, []),
    ],
)
def test_pop_interleave(
    given: list[AddrInfoType], interleave: int | None, expected: list[str]
) -> None:
    pop_addr_infos_interleave(given, interleave)
    assert hosts(given) == expected


@pytest.mark.parametrize("interleave", [0, -1])
def test_pop_interleave_below_one_is_a_value_error(interleave: int) -> None:
    # Upstream removes nothing here, and aiohttp's retry loop then never ends.
    addr_infos = [v6("::1"), v4("10.0.0.1")]
    with pytest.raises(ValueError, match=rf"interleave must be at least 1, got {interleave}"):
        pop_addr_infos_interleave(addr_infos, interleave)
    assert len(addr_infos) == 2


def test_pop_interleave_wants_a_list() -> None:
    with pytest.raises(TypeError, match="addr_infos must be a list"):
        pop_addr_infos_interleave((v4("10.0.0.1"),), 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="interleave must be an int"):
        pop_addr_infos_interleave([v4("10.0.0.1")], 1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# addr_to_addr_infos
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "family", "sockaddr"),
    [
        (("127.0.0.1", 0), V4, ("127.0.0.1", 0)),
        (("192.0.2.1", 65535), V4, ("192.0.2.1", 65535)),
        (("::1", 80), V6, ("::1", 80, 0, 0)),
        (("::1", 80, 5), V6, ("::1", 80, 5, 0)),
        (("fe80::1", 80, 0, 3), V6, ("fe80::1", 80, 0, 3)),
        # Zones become numeric scope ids (upstream keeps "%lo" in the host string).
        (("fe80::1%lo", 80), V6, ("fe80::1", 80, 0, LO_INDEX)),
        (("fe80::1%7", 80), V6, ("fe80::1", 80, 0, 7)),
        (("fe80::1%7", 80, 0, 7), V6, ("fe80::1", 80, 0, 7)),
        (("2001:DB8::1", 443), V6, ("2001:DB8::1", 443, 0, 0)),
    ],
)
def test_addr_to_addr_infos(addr: Any, family: int, sockaddr: tuple[Any, ...]) -> None:
    assert addr_to_addr_infos(addr) == [(family, STREAM, TCP, "", sockaddr)]


def test_addr_to_addr_infos_none() -> None:
    assert addr_to_addr_infos(None) is None


@pytest.mark.parametrize(
    ("addr", "exc", "match"),
    [
        # Upstream turns this into an AF_INET entry because it has no colon.
        (
            ("localhost", 80),
            ValueError,
            "'localhost' is not an IP address; resolve host names first",
        ),
        (("example.com", 80), ValueError, "resolve host names first"),
        (("127.0.0.1", 65536), ValueError, "port must be in 0-65535"),
        (("::1", -1), ValueError, "port must be in 0-65535"),
        (("::1", "80"), TypeError, "port must be an int"),
        ((b"::1", 80), TypeError, "host must be a str"),
        (("127.0.0.1", 80, 0, 0), ValueError, r"an IPv4 address is \(host, port\)"),
        (("::1",), ValueError, r"expected \(host, port"),
        (("::1", 80, 0, 0, 0), ValueError, r"expected \(host, port"),
        (("::1", 80, "0"), TypeError, "flowinfo and scope_id must be ints"),
        (("::1", 80, 0, 2**32), ValueError, "must fit in 32 bits"),
        (("fe80::1%no-such-if0", 80), ValueError, "no network interface named 'no-such-if0'"),
        (("fe80::1%7", 80, 0, 8), ValueError, "zone '7' and scope_id 8 disagree"),
        (["127.0.0.1", 80], TypeError, "addr must be a tuple"),
    ],
)
def test_addr_to_addr_infos_rejects(addr: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        addr_to_addr_infos(addr)


# ---------------------------------------------------------------------------
# remove_addr_infos
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "addr", "expected"),
    [
        # Exact match: every equal entry goes.
        ([v4("10.0.0.1"), v4("10.0.0.2"), v4("10.0.0.1")], ("10.0.0.1", 80), ["10.0.0.2"]),
        # Expanded and compressed IPv6 spellings are equal (upstream keeps this).
        (
            [v6("dead:beef::"), v4("10.0.0.1")],
            ("dead:beef:0000:0000:0000:0000:0000:0000", 80, 0, 0),
            ["10.0.0.1"],
        ),
        # An IPv6 (host, port) matches entries with flowinfo/scope 0 (upstream: no match).
        ([v6("2001:db8::1"), v4("10.0.0.1")], ("2001:db8::1", 80), ["10.0.0.1"]),
        # A textual zone equals the numeric scope id of the same interface (upstream: no match).
        ([v6("fe80::1%lo"), v4("10.0.0.1")], ("fe80::1", 80, 0, LO_INDEX), ["10.0.0.1"]),
        ([v6("fe80::1", scope_id=LO_INDEX)], ("fe80::1%lo", 80), []),
        # Numeric zones and a zone for an interface this host lacks.
        ([v6(f"fe80::1%{LO_INDEX}")], ("fe80::1", 80, 0, LO_INDEX), []),
        ([v6("fe80::1%wlan-x"), v6("fe80::2")], ("fe80::1%wlan-x", 80, 0, 0), ["fe80::2"]),
        # Entries that are not IP literals are skipped, not a crash.
        ([v4("example.com"), v6("2001:db8::1")], ("2001:db8:0::1", 80), ["example.com"]),
        # IPv4 never equals the IPv4-mapped IPv6 spelling: they are different sockets.
        ([v4("10.0.0.1"), v6("::ffff:10.0.0.2")], ("10.0.0.1", 80), ["::ffff:10.0.0.2"]),
    ],
)
def test_remove_addr_infos(given: list[AddrInfoType], addr: Any, expected: list[str]) -> None:
    remove_addr_infos(given, addr)
    assert hosts(given) == expected


@pytest.mark.parametrize(
    ("addr", "message"),
    [
        (("10.0.0.1", 81), "Address ('10.0.0.1', 81) not found in addr_infos"),
        (("2001:db8::1", 80, 0, 3), "Address ('2001:db8::1', 80, 0, 3) not found in addr_infos"),
        (("fe80::1%wlan-y", 80), "not found in addr_infos"),
    ],
)
def test_remove_not_found(addr: Any, message: str) -> None:
    addr_infos = [v4("10.0.0.1"), v6("2001:db8::1"), v6("fe80::1%wlan-x")]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        remove_addr_infos(addr_infos, addr)
    assert len(addr_infos) == 3


@pytest.mark.parametrize(
    ("addr", "exc", "match"),
    [
        (
            "dead::beef",
            TypeError,
            "addr must be a sockaddr tuple",
        ),  # upstream's stale README example
        (("10.0.0.1",), TypeError, "addr must be a sockaddr tuple"),
        (("example.org", 80), ValueError, "host is not an IP address"),
        (("10.0.0.1", "80"), TypeError, "port must be an int"),
        (("10.0.0.1", 80, 0, 0, 9), ValueError, "AF_INET6 sockaddr is"),
    ],
)
def test_remove_rejects_bad_addr(addr: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        remove_addr_infos([v4("10.0.0.9")], addr)


def test_remove_wants_a_list() -> None:
    with pytest.raises(TypeError, match="addr_infos must be a list"):
        remove_addr_infos((v4("10.0.0.1"),), ("10.0.0.1", 80))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

_v4_entries = st.builds(
    lambda i, port: v4(f"192.0.2.{i}", port), st.integers(0, 255), st.integers(0, 65535)
)
_v6_entries = st.builds(
    lambda i, port: v6(f"2001:db8::{i:x}", port), st.integers(0, 65535), st.integers(0, 65535)
)
_entry_lists = st.lists(st.one_of(_v4_entries, _v6_entries), max_size=30)


def _family_sequence(entries: list[AddrInfoType], family: int) -> list[AddrInfoType]:
    return [e for e in entries if e[0] == family]


@given(_entry_lists, st.integers(1, 8))
def test_interleave_properties(entries: list[AddrInfoType], count: int) -> None:
    snapshot = list(entries)
    result = interleave_addr_infos(entries, count)
    assert entries == snapshot, "input mutated"
    assert sorted(result) == sorted(entries), "not a permutation"
    for family in (V4, V6):
        assert _family_sequence(result, family) == _family_sequence(entries, family)
    if not entries:
        return
    assert result[0][0] == entries[0][0], "must start with the input's first family"
    first = entries[0][0]
    n_first = len(_family_sequence(entries, first))
    n_other = len(entries) - n_first
    lead = min(count, n_first)
    # The first `lead` entries are the preferred family; after that the families
    # alternate while both still have entries, and the leftovers of one family end it.
    assert all(e[0] == first for e in result[:lead])
    rest = result[lead:]
    alternating = 2 * min(n_first - lead, n_other)
    pattern = [e[0] for e in rest[:alternating]]
    if alternating:
        assert pattern == [
            first if i % 2 else next(f for f in (V4, V6) if f != first) for i in range(alternating)
        ]
    assert len({e[0] for e in rest[alternating:]}) <= 1


_anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.text(max_size=20)
    | st.binary(max_size=8)
    | st.floats(),
    lambda children: (
        st.tuples(children)
        | st.tuples(children, children)
        | st.lists(children, max_size=5)
        | st.tuples(children, children, children, children, children)
    ),
    max_leaves=12,
)
_entry_like = st.tuples(
    st.sampled_from([V4, V6, 1, 0, -1, "x"]),
    st.sampled_from([STREAM, 1.0]),
    st.integers(0, 6),
    st.sampled_from(["", None]),
    st.one_of(
        _anything,
        st.tuples(st.text(max_size=40), st.integers(-5, 70000)),
        st.tuples(st.text(max_size=40), _anything, _anything, _anything),
        st.tuples(
            st.sampled_from(["::1", "fe80::1%lo", "fe80::1%zz", "10.0.0.1", "x"]),
            st.integers(0, 65535),
        ),
    ),
)


@given(st.lists(st.one_of(_entry_like, _anything), max_size=5), _anything, _anything)
def test_helpers_raise_only_type_or_value_errors(entries: list[Any], count: Any, addr: Any) -> None:
    # Each call, and the arguments its error message may name.
    calls: list[tuple[Callable[[], object], tuple[str, ...]]] = [
        (
            lambda: interleave_addr_infos(entries, count),
            ("addr_infos", "first_address_family_count"),
        ),
        (lambda: interleave_addr_infos(entries), ("addr_infos",)),
        (lambda: pop_addr_infos_interleave(list(entries), count), ("addr_infos", "interleave")),
        (lambda: remove_addr_infos(list(entries), addr), ("addr_infos", "addr")),
        (lambda: addr_to_addr_infos(addr), ("addr",)),
    ]
    for call, names in calls:
        try:
            call()
        except (TypeError, ValueError) as exc:
            message = str(exc)
            assert any(name in message for name in names), f"{message!r} names none of {names}"


@given(
    st.tuples(
        st.sampled_from(["::1", "fe80::1%lo", "10.0.0.1", "2001:db8::7"]), st.integers(0, 65535)
    )
)
def test_addr_to_addr_infos_output_is_valid_input(addr: tuple[str, int]) -> None:
    result = addr_to_addr_infos(addr)
    assert result is not None
    assert check_addr_infos(result) == result
    remove_addr_infos(result, result[0][4])
    assert result == []


# ---------------------------------------------------------------------------
# ip_addresses_to_addr_infos (zeroconf / mDNS answers)
# ---------------------------------------------------------------------------


def test_ip_addresses_keep_order_scope_and_drop_duplicates() -> None:
    scoped = ipaddress.IPv6Address("fe80::1%lo")
    given: list[Any] = [
        ipaddress.ip_address("192.0.2.7"),
        scoped,
        "2001:db8::7",
        "192.0.2.7",  # the same as the first, as a string
        ipaddress.ip_address("2001:db8:0::7"),  # the same, spelled otherwise
        "fe80::1%lo",  # the same as the scoped one
    ]
    result = ip_addresses_to_addr_infos(given, 6053)
    assert [ai[4] for ai in result] == [
        ("192.0.2.7", 6053),
        ("fe80::1", 6053, 0, LO_INDEX),
        ("2001:db8::7", 6053, 0, 0),
    ]
    assert [ai[0] for ai in result] == [V4, V6, V6]


def test_ip_addresses_spellings_of_one_address_are_one() -> None:
    result = ip_addresses_to_addr_infos(["2001:DB8::7", "2001:db8:0::7"], 80)
    assert [ai[4][0] for ai in result] == ["2001:DB8::7"]


@pytest.mark.parametrize(
    ("addresses", "port", "exc", "match"),
    [
        (["192.0.2.1"], "80", TypeError, "port must be an int"),
        (["192.0.2.1"], 70000, ValueError, "port must be in 0-65535"),
        ("192.0.2.1", 80, TypeError, "addresses must be an iterable of IP addresses"),
        ([b"192.0.2.1"], 80, TypeError, r"addresses\[0\]: expected an IP address or a str"),
        (["192.0.2.1", "printer.local"], 80, ValueError, r"addresses\[1\] 'printer.local': host"),
    ],
)
def test_ip_addresses_rejects(addresses: Any, port: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        ip_addresses_to_addr_infos(addresses, port)
