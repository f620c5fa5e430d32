"""NAT64: RFC 6052 arithmetic, RFC 7050 parsing and discovery, RFC 8781 PREF64."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import socket
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import happydial
from happydial import (
    AddrInfoType,
    Nat64Discovery,
    Nat64Prefix,
    Nat64State,
    SynthesizedAddrInfos,
    _dns64,
    nat64_prefixes_from_answers,
    parse_pref64_option,
    synthesize_addr_infos,
)
from happydial._nat64 import non_global_reason

from .conftest import Runner
from .test_fuzz import FUZZ, HOSTS, addr_info_lists, anything, call_pure, scalars

V6, V4 = socket.AF_INET6, socket.AF_INET
TCP = socket.IPPROTO_TCP
WKP = Nat64Prefix.WELL_KNOWN
LENGTHS = (32, 40, 48, 56, 64, 96)


def ai(host: str, port: int = 443) -> AddrInfoType:
    if ":" in host:
        return (V6, socket.SOCK_STREAM, TCP, "", (host, port, 0, 0))
    return (V4, socket.SOCK_STREAM, TCP, "", (host, port))


# ---------------------------------------------------------------------------
# RFC 6052 section 2.4, both tables, both directions
# ---------------------------------------------------------------------------

# Table 1: network-specific prefixes, each carrying 192.0.2.33.
RFC6052_TABLE_1 = [
    ("2001:db8::/32", "192.0.2.33", "2001:db8:c000:221::"),
    ("2001:db8:100::/40", "192.0.2.33", "2001:db8:1c0:2:21::"),
    ("2001:db8:122::/48", "192.0.2.33", "2001:db8:122:c000:2:2100::"),
    ("2001:db8:122:300::/56", "192.0.2.33", "2001:db8:122:3c0:0:221::"),
    ("2001:db8:122:344::/64", "192.0.2.33", "2001:db8:122:344:c0:2:2100::"),
    ("2001:db8:122:344::/96", "192.0.2.33", "2001:db8:122:344::192.0.2.33"),
]
# Table 2: the Well-Known Prefix.
RFC6052_TABLE_2 = ("64:ff9b::/96", "192.0.2.33", "64:ff9b::192.0.2.33")


@pytest.mark.parametrize(("prefix", "ipv4", "ipv6"), RFC6052_TABLE_1)
def test_rfc6052_table_1(prefix: str, ipv4: str, ipv6: str) -> None:
    nsp = Nat64Prefix(prefix)
    assert not nsp.is_well_known
    assert nsp.length == int(prefix.rpartition("/")[2])
    assert nsp.synthesize(ipv4) == ipaddress.IPv6Address(ipv6)
    assert nsp.embed(ipaddress.IPv4Address(ipv4)) == ipaddress.IPv6Address(ipv6)
    assert nsp.extract(ipv6) == ipaddress.IPv4Address(ipv4)
    assert nsp.extract(ipaddress.IPv6Address(ipv6)) == ipaddress.IPv4Address(ipv4)
    assert ipv6 in nsp


def test_rfc6052_table_2() -> None:
    prefix, ipv4, ipv6 = RFC6052_TABLE_2
    assert Nat64Prefix(prefix) == WKP
    assert WKP.is_well_known
    assert WKP.embed(ipv4) == ipaddress.IPv6Address(ipv6)
    assert WKP.extract(ipv6) == ipaddress.IPv4Address(ipv4)
    # The RFC's example address is documentation space, which section 3.1 forbids
    # the Well-Known Prefix to carry in real use: arithmetic yes, synthesis no.
    with pytest.raises(ValueError, match=r"ipv4 192\.0\.2\.33 is documentation.*3\.1"):
        WKP.synthesize(ipv4)


def test_prefix_value_type() -> None:
    prefix = Nat64Prefix("2001:db8:64::/96")
    assert prefix == Nat64Prefix(ipaddress.IPv6Network("2001:db8:64::/96"))
    assert hash(prefix) == hash(Nat64Prefix("2001:db8:64::/96"))
    assert str(prefix) == "2001:db8:64::/96"
    assert repr(prefix) == "Nat64Prefix(network=IPv6Network('2001:db8:64::/96'))"
    with pytest.raises(AttributeError):
        prefix.network = ipaddress.IPv6Network("64:ff9b::/96")  # type: ignore[misc]


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------


@st.composite
def prefixes(draw: st.DrawFn) -> Nat64Prefix:
    """Any valid NAT64 prefix: the first 16 bits keep clear of ::/96 and ::ffff:0:0/96
    (first hextet 0), link-local (fe80::/10) and multicast (ff00::/8)."""
    length = draw(st.sampled_from(LENGTHS))
    bits = draw(st.integers(1, 0xFE7F)) << 112 | draw(st.integers(0, 2**112 - 1))
    bits = bits >> (128 - length) << (128 - length)
    if length == 96:
        bits &= ~(0xFF << 56)  # the u-octet of a /96 prefix is zero
    return Nat64Prefix(ipaddress.IPv6Network((bits, length)))


global_ipv4 = (
    st.integers(0, 2**32 - 1)
    .map(ipaddress.IPv4Address)
    .filter(lambda ip: non_global_reason(ip) is None)
)


@given(prefixes(), global_ipv4)
def test_synthesize_then_extract_round_trips(prefix: Nat64Prefix, ipv4: Any) -> None:
    ipv6 = prefix.synthesize(ipv4)
    assert ipv6 in prefix.network
    assert ipv6.packed[8] == 0  # the u-octet
    assert prefix.extract(ipv6) == ipv4
    assert ipv6 in prefix


@given(global_ipv4)
def test_well_known_prefix_round_trips_every_global_address(ipv4: Any) -> None:
    ipv6 = WKP.synthesize(ipv4)
    assert ipv6 == ipaddress.IPv6Address(int(WKP.network.network_address) | int(ipv4))
    assert WKP.extract(ipv6) == ipv4


@given(prefixes(), st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
def test_embed_is_arithmetic_for_every_address(prefix: Nat64Prefix, ipv4: Any) -> None:
    ipv6 = prefix.embed(ipv4)
    assert prefix.extract(ipv6) == ipv4
    suffix_start = 16 if prefix.length == 96 else prefix.length // 8 + 5
    assert ipv6.packed[suffix_start:] == bytes(16 - suffix_start)


@given(prefixes(), st.sampled_from(happydial._nat64.WELL_KNOWN_IPV4_ADDRESSES))
def test_discovery_parsing_recovers_every_prefix(prefix: Nat64Prefix, wka: Any) -> None:
    answer = ai(str(prefix.embed(wka)), 0)
    assert nat64_prefixes_from_answers([answer]) == (prefix,)


# ---------------------------------------------------------------------------
# Refusals and bad input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("2001:db8::/33", r"prefix '2001:db8::/33': a NAT64 prefix is /32, .* got /33"),
        ("2001:db8::/128", r"got /128"),
        ("2001:db8::1/96", r"prefix '2001:db8::1/96' is not an IPv6 prefix: .*host bits"),
        ("192.0.2.0/24", r"prefix '192.0.2.0/24' is not an IPv6 prefix"),
        ("nat64", r"prefix 'nat64' is not an IPv6 prefix"),
        ("2001:db8:0:0:100::/96", r"prefix '2001:db8:0:0:100::/96': bits 64-71 .* zero"),
        ("::ffff:0:0/96", r"overlaps the IPv4-mapped range"),
        ("::/96", r"overlaps the IPv4-compatible range"),
        ("::/32", r"overlaps the IPv4-mapped range"),
        ("fe80::/64", r"overlaps the link-local range"),
        ("ff0e::/32", r"overlaps the multicast range"),
    ],
)
def test_bad_prefixes(prefix: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Nat64Prefix(prefix)


def test_bad_prefix_types() -> None:
    with pytest.raises(TypeError, match=r"prefix must be a str or an IPv6Network, got 96"):
        Nat64Prefix(96)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"IPv4Network\('192.0.2.0/24'\)"):
        Nat64Prefix(ipaddress.IPv4Network("192.0.2.0/24"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ipv4", "reason"),
    [
        ("10.1.2.3", "private-use (RFC 1918)"),
        ("172.16.0.1", "private-use (RFC 1918)"),
        ("192.168.1.1", "private-use (RFC 1918)"),
        ("100.64.0.1", "shared address space (RFC 6598)"),
        ("192.0.0.170", "IETF protocol assignments (RFC 6890)"),
        ("198.18.0.1", "benchmarking (RFC 2544)"),
        ("198.51.100.7", "documentation, TEST-NET-2 (RFC 5737)"),
        ("203.0.113.7", "documentation, TEST-NET-3 (RFC 5737)"),
        ("127.0.0.1", "loopback (RFC 1122)"),
        ("0.1.2.3", '"this network" (RFC 791)'),
        ("169.254.1.1", "link-local (RFC 3927)"),
        ("224.0.0.1", "multicast (RFC 5771)"),
        ("255.255.255.255", "reserved or broadcast (RFC 1112, RFC 919)"),
    ],
)
def test_well_known_prefix_refuses_non_global(ipv4: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        WKP.synthesize(ipv4)
    assert str(caught.value) == (
        f"ipv4 {ipv4} is {reason}, not globally reachable: the Well-Known Prefix"
        " 64:ff9b::/96 must not be used with it (RFC 6052 section 3.1)"
    )


@pytest.mark.parametrize("ipv4", ["192.0.0.9", "192.0.0.10", "8.8.8.8", "1.1.1.1"])
def test_well_known_prefix_takes_global_addresses(ipv4: str) -> None:
    assert WKP.extract(WKP.synthesize(ipv4)) == ipaddress.IPv4Address(ipv4)


@pytest.mark.parametrize(
    ("ipv4", "accepted"),
    [
        ("10.1.2.3", True),
        ("192.168.1.1", True),
        ("100.64.0.1", True),
        ("192.0.2.33", True),
        ("127.0.0.1", False),
        ("0.0.0.0", False),
        ("169.254.1.1", False),
        ("239.1.1.1", False),
        ("240.0.0.1", False),
    ],
)
def test_network_specific_prefix_refuses_only_the_unreachable(ipv4: str, accepted: bool) -> None:
    nsp = Nat64Prefix("2001:db8:64::/96")
    if accepted:
        assert nsp.extract(nsp.synthesize(ipv4)) == ipaddress.IPv4Address(ipv4)
    else:
        with pytest.raises(ValueError, match=rf"^ipv4 {ipv4} is .*: no NAT64 \(2001:db8:64::/96\)"):
            nsp.synthesize(ipv4)


@pytest.mark.parametrize(
    "text",
    [
        "2001:db8::1",
        "127.1",
        "01.2.3.4",
        "0x7f.0.0.1",
        "1.2.3.256",
        "1.2.3.4\x00",
        "\uff11.\uff12.\uff13.\uff14",
    ],
)
def test_only_dotted_quads_are_ipv4_addresses(text: str) -> None:
    with pytest.raises(
        ValueError, match=rf"^ipv4 must be an IPv4 address, got {re.escape(repr(text))}$"
    ):
        WKP.embed(text)


def test_bad_addresses_name_the_argument() -> None:
    with pytest.raises(TypeError, match=r"ipv4 must be an IPv4 address or a str, got 3232235777"):
        WKP.synthesize(3232235777)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ipv6 must be an IPv6 address, got '192.0.2.1'"):
        WKP.extract("192.0.2.1")
    with pytest.raises(TypeError, match=r"ipv6 must be an IPv6 address or a str, got None"):
        WKP.extract(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ipv6 2001:db8::1 is not inside the NAT64 prefix 64:ff"):
        WKP.extract("2001:db8::1")
    with pytest.raises(ValueError, match=r"ipv6 64:ff9b::c000:221%eth0 is not inside"):
        WKP.extract("64:ff9b::c000:221%eth0")
    nsp = Nat64Prefix("2001:db8::/32")
    with pytest.raises(ValueError, match=r"ipv6 2001:db8:c000:221:100:: has a non-zero u-octet"):
        nsp.extract("2001:db8:c000:221:100::")


def test_contains() -> None:
    nsp = Nat64Prefix("2001:db8::/32")
    assert "2001:db8:c000:221::" in nsp
    assert "2001:db8:c000:221:100::" not in nsp  # u-octet set
    assert "2001:db9::" not in nsp
    assert "192.0.2.1" not in nsp
    assert 42 not in nsp


# ---------------------------------------------------------------------------
# synthesize_addr_infos
# ---------------------------------------------------------------------------


def test_synthesize_addr_infos_puts_native_ipv6_first() -> None:
    v4a = (V4, socket.SOCK_STREAM, TCP, "example.org", ("192.0.2.1", 443))
    entries = [v4a, ai("2001:db8::1"), ai("10.0.0.1"), ai("2001:db8::2")]
    result = synthesize_addr_infos(entries, Nat64Prefix("2001:db8:64::/96"))
    assert result.addr_infos == (
        ai("2001:db8::1"),
        ai("2001:db8::2"),
        (V6, socket.SOCK_STREAM, TCP, "example.org", ("2001:db8:64::c000:201", 443, 0, 0)),
        ai("2001:db8:64::a00:1"),
    )
    assert result.origins == (
        (result.addr_infos[2], v4a),
        (result.addr_infos[3], ai("10.0.0.1")),
    )
    assert result.refused == ()
    assert result.origin(("2001:db8:64::c000:201", 443, 0, 0)) == v4a
    assert result.origin(("2001:db8::1", 443, 0, 0)) is None


def test_synthesize_addr_infos_with_the_well_known_prefix_refuses_private() -> None:
    entries = [ai("192.168.1.1"), ai("8.8.8.8", 53)]
    result = synthesize_addr_infos(entries, WKP)
    assert result == SynthesizedAddrInfos(
        addr_infos=(ai("64:ff9b::808:808", 53),),
        origins=((ai("64:ff9b::808:808", 53), ai("8.8.8.8", 53)),),
        refused=(ai("192.168.1.1"),),
    )


def test_synthesize_addr_infos_with_several_prefixes() -> None:
    nsp = Nat64Prefix("2001:db8:64::/96")
    result = synthesize_addr_infos(
        [ai("8.8.8.8"), ai("192.168.1.1")], [nsp, "64:ff9b::/96", str(nsp)]
    )
    assert [entry[4][0] for entry in result.addr_infos] == [
        "2001:db8:64::808:808",
        "64:ff9b::808:808",
        "2001:db8:64::c0a8:101",
    ]
    assert result.refused == ()


def test_synthesize_addr_infos_drops_what_dns64_already_gave() -> None:
    # A DNS64 answer, spelled differently, is the same address: keep the native one.
    entries = [ai("64:ff9b:0::8.8.8.8"), ai("8.8.8.8"), ai("8.8.4.4")]
    result = synthesize_addr_infos(entries, "64:ff9b::/96")
    assert [entry[4][0] for entry in result.addr_infos] == [
        "64:ff9b:0::8.8.8.8",
        "64:ff9b::808:404",
    ]
    assert result.refused == ()
    assert result.origin(("64:ff9b::808:808", 443, 0, 0)) is None


def test_synthesize_addr_infos_bad_input() -> None:
    with pytest.raises(ValueError, match=r"prefixes must name at least one NAT64 prefix"):
        synthesize_addr_infos([ai("8.8.8.8")], [])
    with pytest.raises(TypeError, match=r"prefixes\[1\] must be a Nat64Prefix or a str .* got 96"):
        synthesize_addr_infos([ai("8.8.8.8")], ["64:ff9b::/96", 96])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"prefixes must be a NAT64 prefix or an iterable"):
        synthesize_addr_infos([ai("8.8.8.8")], 96)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"addr_infos must be an iterable"):
        synthesize_addr_infos("8.8.8.8", WKP)  # type: ignore[arg-type]
    host = (V4, socket.SOCK_STREAM, TCP, "", ("example.org", 443))
    with pytest.raises(ValueError, match=r"addr_infos\[1\] host must be an IPv4 address"):
        synthesize_addr_infos([ai("8.8.8.8"), host], WKP)


# ---------------------------------------------------------------------------
# RFC 7050: parsing the ipv4only.arpa answers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "_ipv4", "_ipv6"), RFC6052_TABLE_1)
def test_parsing_finds_the_prefix_of_every_length(prefix: str, _ipv4: str, _ipv6: str) -> None:
    nsp = Nat64Prefix(prefix)
    answers = [ai(str(nsp.embed("192.0.0.170")), 0), ai(str(nsp.embed("192.0.0.171")), 0)]
    assert nat64_prefixes_from_answers(answers) == (nsp,)


def test_parsing_well_known_prefix_and_several_prefixes() -> None:
    answers = [
        ai("2001:db8:122:344:c0:0:aa00:0", 0),  # the /64 one
        ai("64:ff9b::192.0.0.171", 0),
        ai("64:ff9b::192.0.0.170", 0),
        ai("2001:db8:122:344:c0:0:ab00:0", 0),
    ]
    assert nat64_prefixes_from_answers(answers) == (Nat64Prefix("2001:db8:122:344::/64"), WKP)


def test_parsing_ignores_answers_without_a_well_known_address() -> None:
    answers = [
        ai("64:ff9b::192.0.0.172", 0),  # the next address: no WKA
        ai("2001:db8::1", 0),
        ai("192.0.0.170", 0),  # an A answer slipped in
        ai("2001:db8:0:0:100::c000:aa", 0),  # /96 position, but the u-octet is set
        (V6, socket.SOCK_STREAM, TCP, "", ("ipv4only.arpa", 0, 0, 0)),
        (V6, socket.SOCK_STREAM, TCP, "", ("64:ff9b::c000:aa\x00", 0, 0, 0)),
    ]
    assert nat64_prefixes_from_answers(answers) == ()
    assert nat64_prefixes_from_answers([]) == ()


def test_parsing_takes_the_longest_position() -> None:
    # This /64 prefix spells 192.0.0.170 at the /32 position too: the answer
    # embeds the WKA at both, and only the /64 is the DNS64's prefix.
    nsp = Nat64Prefix("2001:db8:c000:aa::/64")
    answer = nsp.embed("192.0.0.170")
    assert Nat64Prefix("2001:db8::/32").extract(answer) == ipaddress.IPv4Address("192.0.0.170")
    assert nat64_prefixes_from_answers([ai(str(answer), 0)]) == (nsp,)
    # The other WKA's answer holds 192.0.0.170 at /32 and 192.0.0.171 at /64.
    other = nsp.embed("192.0.0.171")
    assert Nat64Prefix("2001:db8::/32").extract(other) == ipaddress.IPv4Address("192.0.0.170")
    assert nat64_prefixes_from_answers([ai(str(other), 0), ai(str(answer), 0)]) == (nsp,)


def test_parsing_bad_input() -> None:
    with pytest.raises(TypeError, match=r"answers must be an iterable of addr_info tuples"):
        nat64_prefixes_from_answers(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"answers\[0\] must be a 5-tuple"):
        nat64_prefixes_from_answers([(V6, 1, 6, "")])  # type: ignore[list-item]


# ---------------------------------------------------------------------------
# RFC 8781: PREF64
# ---------------------------------------------------------------------------


def pref64(scaled_lifetime: int, plc: int, prefix: str) -> bytes:
    word = scaled_lifetime << 3 | plc
    return bytes([38, 2]) + word.to_bytes(2, "big") + ipaddress.IPv6Address(prefix).packed[:12]


@pytest.mark.parametrize(
    ("plc", "prefix"),
    [
        (0, "64:ff9b::/96"),
        (1, "2001:db8:122:344::/64"),
        (2, "2001:db8:122:300::/56"),
        (3, "2001:db8:122::/48"),
        (4, "2001:db8:100::/40"),
        (5, "2001:db8::/32"),
    ],
)
def test_pref64_prefix_length_codes(plc: int, prefix: str) -> None:
    option = pref64(225, plc, prefix.partition("/")[0])
    assert parse_pref64_option(option) == (Nat64Prefix(prefix), 1800)


def test_pref64_ignores_bits_beyond_the_length_and_reads_the_lifetime() -> None:
    option = pref64(8191, 5, "2001:db8:ffff:ffff:ffff:ffff::")
    assert parse_pref64_option(bytearray(option)) == (Nat64Prefix("2001:db8::/32"), 65528)
    assert parse_pref64_option(pref64(0, 0, "64:ff9b::")) == (WKP, 0)


def test_pref64_bad_input() -> None:
    with pytest.raises(ValueError, match=r"Prefix Length Code 6"):
        parse_pref64_option(pref64(1, 6, "64:ff9b::"))
    with pytest.raises(ValueError, match=r"16-byte PREF64 option .*got '2602'"):
        parse_pref64_option(b"\x26\x02")
    with pytest.raises(ValueError, match=r"type 38, length 2"):
        parse_pref64_option(b"\x19" + pref64(1, 0, "64:ff9b::")[1:])
    with pytest.raises(ValueError, match=r"type 38, length 2"):
        parse_pref64_option(b"\x26\x03" + pref64(1, 0, "64:ff9b::")[2:])
    with pytest.raises(TypeError, match=r"option must be bytes, got '2602'"):
        parse_pref64_option("2602")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"link-local"):
        parse_pref64_option(pref64(1, 1, "fe80::"))


# ---------------------------------------------------------------------------
# Discovery on the virtual clock
# ---------------------------------------------------------------------------

PREFIX = Nat64Prefix("2001:db8:64::/96")
ANSWERS = [ai("2001:db8:64::c000:aa", 0), ai("2001:db8:64::c000:ab", 0)]


class Dns64:
    """A scripted resolver: answers ``ipv4only.arpa`` after *delay*; records the calls."""

    def __init__(
        self, answer: list[AddrInfoType] | BaseException | Any = None, delay: float = 0.01
    ):
        self.answer = ANSWERS if answer is None else answer
        self.delay = delay
        self.calls: list[tuple[str, int, int, float]] = []
        self.cancelled = 0

    async def __call__(self, host: str, port: int, family: int) -> list[AddrInfoType]:
        loop = asyncio.get_running_loop()
        self.calls.append((host, port, family, loop.time()))
        answer = self.answer  # what the network says when asked
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if isinstance(answer, BaseException):
            raise answer
        return answer


def known(nat64: Nat64Discovery) -> Nat64State:
    """The state, which must be known (a function: mypy narrows no call results)."""
    state = nat64.state
    assert state is not None
    return state


def unknown(nat64: Nat64Discovery) -> bool:
    return nat64.state is None


def discovery(**options: Any) -> Nat64Discovery:
    options.setdefault("network_key", None)
    return Nat64Discovery(clock=asyncio.get_running_loop().time, **options)


def test_one_query_then_the_cache(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        dns = Dns64()
        nat64 = discovery()
        assert unknown(nat64)
        assert await nat64.prefixes(dns) == (PREFIX,)
        assert dns.calls == [("ipv4only.arpa", 0, V6, 0.0)]
        assert nat64.state == Nat64State((PREFIX,), "discovered", 600.01, None, None)
        await asyncio.sleep(500)
        assert await nat64.prefixes(dns) == (PREFIX,)
        assert len(dns.calls) == 1
        await asyncio.sleep(100)  # the TTL is over
        assert unknown(nat64)
        assert await nat64.prefixes(dns) == (PREFIX,)
        assert [call[3] for call in dns.calls] == [0.0, 600.01]
        assert loop.time() == pytest.approx(600.02)

    vrun(main)


@pytest.mark.parametrize(
    "answer",
    [
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        TimeoutError("the DNS server did not answer"),
        [ai("2001:db8::1", 0)],  # AAAA without any WKA: not a DNS64
        [],
    ],
)
def test_no_nat64_is_cached_for_the_negative_ttl(vrun: Runner[Any], answer: Any) -> None:
    async def main() -> None:
        dns = Dns64(answer)
        nat64 = discovery(negative_ttl=30)
        assert await nat64.prefixes(dns) == ()
        state = known(nat64)
        assert (state.prefixes, state.source, state.expires_at) == ((), "discovered", 30.01)
        assert state.error is (answer if isinstance(answer, OSError) else None)
        await asyncio.sleep(29)
        assert await nat64.prefixes(dns) == ()
        await asyncio.sleep(1)
        assert await nat64.prefixes(dns) == ()
        assert [call[3] for call in dns.calls] == [0.0, 30.01]

    vrun(main)


def test_concurrent_callers_share_one_discovery(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        dns = Dns64(delay=0.2)
        nat64 = discovery()

        async def late(at: float) -> tuple[Nat64Prefix, ...]:
            await asyncio.sleep(at)
            return await nat64.prefixes(dns)

        results = await asyncio.gather(late(0), late(0.1), late(0.15), late(0.3))
        assert list(results) == [(PREFIX,)] * 4
        assert len(dns.calls) == 1
        assert loop.time() == pytest.approx(0.3)

    vrun(main)


def test_a_cancelled_caller_does_not_cancel_the_others(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        dns = Dns64(delay=0.2)
        nat64 = discovery()
        first = loop.create_task(nat64.prefixes(dns))
        second = loop.create_task(nat64.prefixes(dns))
        await asyncio.sleep(0.1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second == (PREFIX,)
        assert loop.time() == pytest.approx(0.2)
        assert (len(dns.calls), dns.cancelled) == (1, 0)

    vrun(main)


def test_the_last_cancelled_caller_cancels_the_discovery(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        dns = Dns64(delay=5.0)
        nat64 = discovery()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(nat64.prefixes(dns), 0.5)
        assert (len(dns.calls), dns.cancelled) == (1, 1)
        assert loop.time() == pytest.approx(0.5)
        assert unknown(nat64)  # nothing was learned, so nothing is cached
        dns.delay = 0.01
        assert await nat64.prefixes(dns) == (PREFIX,)
        assert len(dns.calls) == 2

    vrun(main)


def test_a_resolver_bug_reaches_every_caller_and_is_not_cached(vrun: Runner[Any]) -> None:
    async def main() -> None:
        dns = Dns64(KeyError("bug"))
        nat64 = discovery()
        results = await asyncio.gather(
            nat64.prefixes(dns), nat64.prefixes(dns), return_exceptions=True
        )
        assert [type(result) for result in results] == [KeyError, KeyError]
        assert unknown(nat64)
        dns.answer = "not a list"
        with pytest.raises(TypeError, match=r"answers must be an iterable of addr_info"):
            await nat64.prefixes(dns)
        assert len(dns.calls) == 2

    vrun(main)


def test_configured_prefixes_win_while_they_last(vrun: Runner[Any]) -> None:
    async def main() -> None:
        dns = Dns64()
        nat64 = discovery()
        prefix, lifetime = parse_pref64_option(pref64(1, 0, "64:ff9b::"))  # 8 s
        nat64.configure(prefix, lifetime=lifetime)
        assert nat64.state == Nat64State((WKP,), "configured", 8.0)
        assert await nat64.prefixes(dns) == (WKP,)
        assert dns.calls == []
        await asyncio.sleep(8)
        assert await nat64.prefixes(dns) == (PREFIX,)  # lapsed: discovered
        nat64.configure(["2001:db8:46::/96"])
        assert await nat64.prefixes(dns) == (Nat64Prefix("2001:db8:46::/96"),)
        await asyncio.sleep(10**6)
        assert nat64.state == Nat64State((Nat64Prefix("2001:db8:46::/96"),), "configured", None)
        nat64.configure([])  # known: no NAT64 here, and no query either
        assert await nat64.prefixes(dns) == ()
        nat64.configure(None)
        assert await nat64.prefixes(dns) == (PREFIX,)
        assert len(dns.calls) == 2

    vrun(main)


def test_discovery_can_be_turned_off(vrun: Runner[Any]) -> None:
    async def main() -> None:
        dns = Dns64()
        nat64 = discovery(discover=False)
        assert await nat64.prefixes(dns) == ()
        nat64.configure(PREFIX)
        assert await nat64.prefixes(dns) == (PREFIX,)
        assert dns.calls == []
        nat64.configure(None)
        nat64.discover = True
        assert await nat64.prefixes(dns) == (PREFIX,)
        nat64.discover = False
        assert unknown(nat64)  # the discovered result is not used while off
        assert await nat64.prefixes(dns) == ()
        assert len(dns.calls) == 1

    vrun(main)


def test_a_new_network_or_a_reset_discovers_again(vrun: Runner[Any]) -> None:
    async def main() -> None:
        network: list[Hashable] = [("2001:db8::7", None)]
        dns = Dns64()
        nat64 = discovery(network_key=lambda: network[0])
        assert await nat64.prefixes(dns) == (PREFIX,)
        assert await nat64.prefixes(dns) == (PREFIX,)
        assert known(nat64).network == ("2001:db8::7", None)
        network[0] = ("2001:db8:1::7", None)
        dns.answer = [ai("64:ff9b::c000:aa", 0)]
        assert await nat64.prefixes(dns) == (WKP,)
        nat64.reset()
        assert unknown(nat64)
        dns.answer = ANSWERS
        assert await nat64.prefixes(dns) == (PREFIX,)
        assert len(dns.calls) == 3

    vrun(main)


def test_a_reset_during_discovery_keeps_its_result_out(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        dns = Dns64(delay=0.2)
        nat64 = discovery()
        old = loop.create_task(nat64.prefixes(dns))
        await asyncio.sleep(0.1)
        nat64.reset()
        dns.answer = []
        new = loop.create_task(nat64.prefixes(dns))
        assert await old == (PREFIX,)  # its callers get their answer...
        assert await new == ()
        assert known(nat64).prefixes == ()  # ...but only the new network's is kept
        assert [call[3] for call in dns.calls] == [0.0, 0.1]

    vrun(main)


def test_a_network_change_during_discovery_starts_another(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        network = ["a"]
        dns = Dns64(delay=0.2)
        nat64 = discovery(network_key=lambda: network[0])
        old = loop.create_task(nat64.prefixes(dns))
        await asyncio.sleep(0.1)
        network[0] = "b"
        new = loop.create_task(nat64.prefixes(dns))
        assert list(await asyncio.gather(old, new)) == [(PREFIX,), (PREFIX,)]
        assert len(dns.calls) == 2
        assert known(nat64).network == "b"

    vrun(main)


def test_an_eagerly_finished_discovery(vrun: Runner[Any]) -> None:
    async def main() -> None:
        calls: list[str] = []

        async def instant(host: str, port: int, family: int) -> list[AddrInfoType]:
            calls.append(host)
            return ANSWERS

        nat64 = discovery()
        assert await nat64.prefixes(instant) == (PREFIX,)
        assert await nat64.prefixes(instant) == (PREFIX,)
        assert calls == ["ipv4only.arpa"]

    vrun(main)


def test_discovery_bad_arguments(vrun: Runner[Any]) -> None:
    with pytest.raises(TypeError, match=r"discover must be a bool, got 1"):
        Nat64Discovery(discover=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"discover must be a bool, got 'no'"):
        Nat64Discovery().discover = "no"  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"ttl must be a finite number of seconds >= 0, got -1"):
        Nat64Discovery(ttl=-1)
    with pytest.raises(ValueError, match=r"negative_ttl must be .* got nan"):
        Nat64Discovery(negative_ttl=math.nan)
    with pytest.raises(TypeError, match=r"ttl must be a number of seconds, got None"):
        Nat64Discovery(ttl=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"negative_ttl must be a number of seconds or None, got"):
        Nat64Discovery(negative_ttl=True)
    with pytest.raises(TypeError, match=r"clock must be callable, got 0"):
        Nat64Discovery(clock=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"network_key must be callable or None, got 'eth0'"):
        Nat64Discovery(network_key="eth0")  # type: ignore[arg-type]
    nat64 = Nat64Discovery(network_key=None)
    with pytest.raises(ValueError, match=r"lifetime must be a finite number .* got inf"):
        nat64.configure(WKP, lifetime=math.inf)
    with pytest.raises(TypeError, match=r"lifetime must be a number of seconds or None, got '8'"):
        nat64.configure(WKP, lifetime="8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"prefix '64:ff9b::/95'"):
        nat64.configure("64:ff9b::/95")
    assert unknown(nat64)

    async def main() -> None:
        with pytest.raises(TypeError, match=r"resolver must be callable, got 'dns'"):
            await nat64.prefixes("dns")  # type: ignore[arg-type]

    vrun(main)


def test_source_addresses_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    v6, v4 = _dns64.source_addresses()
    for address, version in ((v6, 6), (v4, 4)):
        assert address is None or ipaddress.ip_address(address).version == version
    # A destination the kernel refuses to route (link-local without a zone): None.
    monkeypatch.setattr(_dns64, "_PROBES", ((V6, "fe80::1"), (V4, "0.0.0.0")))
    assert _dns64.source_addresses()[0] is None


def test_the_default_network_key_is_the_source_addresses(vrun: Runner[Any]) -> None:
    async def main() -> None:
        dns = Dns64()
        nat64 = Nat64Discovery(clock=asyncio.get_running_loop().time)
        assert await nat64.prefixes(dns) == (PREFIX,)
        assert known(nat64).network == _dns64.source_addresses()

    vrun(main)


def test_a_discovery_orphaned_by_a_reset_ends_with_its_last_caller(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        dns = Dns64(delay=5.0)
        nat64 = discovery()
        caller = loop.create_task(nat64.prefixes(dns))
        await asyncio.sleep(0.1)
        nat64.reset()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert (len(dns.calls), dns.cancelled) == (1, 1)
        assert unknown(nat64)

    vrun(main)


# ---------------------------------------------------------------------------
# Fuzzed input (as tests/test_fuzz.py does for the rest of the public API)
# ---------------------------------------------------------------------------

GOOD_PREFIXES = ["64:ff9b::/96", "2001:db8::/32", "2001:db8:100::/40", "2001:db8:122:344::/64"]
prefix_values = st.one_of(
    st.sampled_from([*GOOD_PREFIXES, "::/96", "2001:db8::/33"]),
    st.sampled_from(GOOD_PREFIXES).map(Nat64Prefix),
    anything,
)
address_values = st.one_of(
    st.sampled_from(["192.0.2.33", "8.8.8.8", "10.0.0.1", "64:ff9b::808:808", "2001:db8::1"]),
    st.sampled_from(HOSTS),
    scalars,
    anything,
)


@FUZZ
@given(prefix_values, address_values)
def test_fuzz_prefix_methods(prefix: Any, address: Any) -> None:
    made = call_pure(Nat64Prefix, ["prefix"], prefix)
    if not isinstance(made, Nat64Prefix):
        return
    for method, name in ((made.embed, "ipv4"), (made.synthesize, "ipv4"), (made.extract, "ipv6")):
        result = call_pure(method, [name], address)
        assert isinstance(result, (ipaddress.IPv4Address, ipaddress.IPv6Address, Exception))
    assert isinstance(address in made, bool)


@FUZZ
@given(addr_info_lists, st.one_of(prefix_values, st.lists(prefix_values, max_size=3)))
def test_fuzz_synthesize_addr_infos(addr_infos: Any, prefixes: Any) -> None:
    result = call_pure(synthesize_addr_infos, ["addr_infos", "prefix"], addr_infos, prefixes)
    if isinstance(result, SynthesizedAddrInfos):
        assert all(entry[0] == V6 for entry in result.addr_infos)
        for made, ipv4 in result.origins:
            assert result.origin(made[4]) == ipv4


@FUZZ
@given(addr_info_lists)
def test_fuzz_nat64_prefixes_from_answers(answers: Any) -> None:
    result = call_pure(nat64_prefixes_from_answers, ["answers"], answers)
    assert isinstance(result, (tuple, Exception))


@FUZZ
@given(
    st.one_of(
        st.binary(min_size=16, max_size=16).map(lambda data: b"\x26\x02" + data[2:]),
        st.binary(max_size=20),
        anything,
    )
)
def test_fuzz_parse_pref64_option(option: Any) -> None:
    result = call_pure(parse_pref64_option, ["option", "prefix"], option)
    if isinstance(result, tuple):
        prefix, lifetime = result
        assert isinstance(prefix, Nat64Prefix)
        assert 0 <= lifetime <= 65528


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["discover", "ttl", "negative_ttl", "clock", "network_key"]),
        st.one_of(scalars, st.sampled_from([True, False, 0, 60.0, None])),
        max_size=3,
    ),
    st.one_of(prefix_values, st.lists(prefix_values, max_size=2), st.none()),
    st.one_of(st.none(), st.floats(), st.integers(-1, 10), scalars),
)
def test_fuzz_discovery_configuration(
    options: dict[str, Any], prefixes: Any, lifetime: Any
) -> None:
    options.setdefault("network_key", None)
    names = ["discover", "ttl", "negative_ttl", "clock", "network_key"]
    nat64 = call_pure(lambda: Nat64Discovery(**options), names)
    if isinstance(nat64, Nat64Discovery):
        configure = lambda: nat64.configure(prefixes, lifetime=lifetime)  # noqa: E731
        outcome = call_pure(configure, ["prefix", "lifetime"])
        assert outcome is None or isinstance(outcome, Exception)


@pytest.mark.parametrize(
    ("ipv4", "reason"),
    [
        ("10.1.2.3", "private-use (RFC 1918)"),
        ("192.0.0.8", "IETF protocol assignments (RFC 6890)"),
        ("192.0.0.9", None),  # global anycast inside a non-global block
        ("192.0.0.10", None),
        ("8.8.8.8", None),
    ],
)
def test_non_global_reason(ipv4: str, reason: str | None) -> None:
    assert non_global_reason(ipaddress.IPv4Address(ipv4)) == reason
