"""HTTPS records (RFC 9460) as values: modes, ALPN over TCP, alias chains, hints."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

import dns.rdata
import pytest

from happydial import ServiceBinding
from happydial._backends import service_binding
from happydial._svcb import MAX_ALIAS_DEPTH, hint_addr_infos, service_bindings, usable_over_tcp

SB = ServiceBinding


def test_mode_follows_priority() -> None:
    assert SB(0, "svc.test").mode == "alias"
    assert SB(1).mode == "service"
    assert SB(65535).mode == "service"


@pytest.mark.parametrize(
    ("binding", "tcp_alpn"),
    [
        (SB(1), ("http/1.1",)),  # no alpn: the implicit default alone
        (SB(1, alpn=("h2",)), ("h2", "http/1.1")),
        (SB(1, alpn=("h3", "h2")), ("h2", "http/1.1")),
        (SB(1, alpn=("h3",)), ("http/1.1",)),  # h3 listed, the default still implied
        (SB(1, alpn=("h3",), no_default_alpn=True), ()),  # h3 only: not for TCP
        (SB(1, alpn=("h2", "h3"), no_default_alpn=True), ("h2",)),
        (SB(1, alpn=("http/1.1", "h2")), ("http/1.1", "h2")),
        (SB(1, alpn=("foo",), no_default_alpn=True), ()),  # unknown: not known to be TCP
    ],
)
def test_tcp_alpn_and_usability(binding: ServiceBinding, tcp_alpn: tuple[str, ...]) -> None:
    assert binding.tcp_alpn == tcp_alpn
    assert usable_over_tcp(binding) is bool(tcp_alpn)


def test_target_of() -> None:
    assert SB(1).target_of("example.test.") == "example.test"
    assert SB(1, "svc.test").target_of("example.test") == "svc.test"


def test_hint_addr_infos_use_the_records_port_else_the_callers() -> None:
    binding = SB(1, port=8443, ipv4hint=("192.0.2.1", "192.0.2.2"), ipv6hint=("2001:db8::1",))
    assert hint_addr_infos(binding, 443, socket.AF_INET) == [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("192.0.2.1", 8443)),
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("192.0.2.2", 8443)),
    ]
    assert hint_addr_infos(binding, 443, socket.AF_INET6) == [
        (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("2001:db8::1", 8443, 0, 0)),
    ]
    assert [a[4] for a in hint_addr_infos(SB(1, ipv4hint=("192.0.2.9",)), 443, socket.AF_INET)] == [
        ("192.0.2.9", 443)
    ]
    assert hint_addr_infos(SB(1), 443, socket.AF_INET6) == []


class Zone:
    """HTTPS RRsets per name; records the names asked."""

    def __init__(self, zone: dict[str, list[ServiceBinding]]) -> None:
        self.zone = zone
        self.asked: list[str] = []

    async def __call__(self, name: str) -> Sequence[ServiceBinding]:
        self.asked.append(name)
        return self.zone.get(name, [])


def follow(zone: Zone, host: str, **kwargs: int) -> tuple[str, list[ServiceBinding]]:
    return asyncio.run(service_bindings(zone, host, **kwargs))


def test_service_mode_records_by_priority_h3_only_skipped() -> None:
    p1, p2a, p2b = SB(1, "a.test"), SB(2, "b.test"), SB(2, "c.test")
    h3 = SB(1, "q.test", alpn=("h3",), no_default_alpn=True)
    zone = Zone({"example.test": [p2a, h3, p1, p2b]})
    assert follow(zone, "Example.TEST.") == ("example.test", [p1, p2a, p2b])
    assert zone.asked == ["example.test"]


def test_no_records() -> None:
    assert follow(Zone({}), "example.test") == ("example.test", [])


def test_alias_chain_is_followed_service_records_beside_an_alias_ignored() -> None:
    service = SB(1, port=8443)
    zone = Zone(
        {
            "example.test": [SB(0, "cdn.test"), SB(1, "ignored.test")],
            "cdn.test": [SB(0, "pop.cdn.test")],
            "pop.cdn.test": [service],
        }
    )
    assert follow(zone, "example.test") == ("pop.cdn.test", [service])
    assert zone.asked == ["example.test", "cdn.test", "pop.cdn.test"]


def test_alias_to_a_name_without_records_ends_there() -> None:
    zone = Zone({"example.test": [SB(0, "cdn.test")]})
    assert follow(zone, "example.test") == ("cdn.test", [])


@pytest.mark.parametrize(
    "zone",
    [
        {"example.test": [SB(0, "")]},  # AliasMode "." : no service
        {"example.test": [SB(0, "b.test")], "b.test": [SB(0, "example.test")]},  # a loop
        {"example.test": [SB(0, "example.test")]},  # to itself
    ],
)
def test_alias_to_nothing_or_in_a_loop_gives_no_records(
    zone: dict[str, list[ServiceBinding]],
) -> None:
    assert follow(Zone(zone), "example.test")[1] == []


def test_alias_chain_depth_limit() -> None:
    chain = {f"n{i}.test": [SB(0, f"n{i + 1}.test")] for i in range(20)}
    zone = Zone({**chain, "n20.test": [SB(1)]})
    assert follow(zone, "n0.test", max_depth=3) == ("n3.test", [])
    assert zone.asked == ["n0.test", "n1.test", "n2.test", "n3.test"]
    assert MAX_ALIAS_DEPTH == 8
    short = Zone(
        {**{f"n{i}.test": [SB(0, f"n{i + 1}.test")] for i in range(8)}, "n8.test": [SB(1)]}
    )
    assert follow(short, "n0.test") == ("n8.test", [SB(1)])


@pytest.mark.parametrize(
    ("text", "binding"),
    [
        (
            "1 . alpn=h2,h3 port=8443 ipv4hint=192.0.2.1 ipv6hint=2001:db8::1 ech=AAQAAQAB",
            SB(
                1,
                "",
                8443,
                ("h2", "h3"),
                False,
                ("192.0.2.1",),
                ("2001:db8::1",),
                b"\x00\x04\x00\x01\x00\x01",
            ),
        ),
        ("0 CDN.Example.", SB(0, "cdn.example")),
        (
            "2 svc.test. alpn=h3 no-default-alpn",
            SB(2, "svc.test", alpn=("h3",), no_default_alpn=True),
        ),
    ],
)
def test_dnspython_rdata_to_service_binding(text: str, binding: ServiceBinding) -> None:
    assert service_binding(dns.rdata.from_text("IN", "HTTPS", text)) == binding
