"""zeroconf / mDNS service info as the source of addresses (aioesphomeapi's and aiohomekit's use).

The ``AsyncServiceInfo`` objects are built locally, as a browser would fill them from
mDNS answers: no multicast is sent. The documentation addresses (192.0.2.0/24,
2001:db8::/32) and the link-local ones only go through the address conversion;
connections are made to loopback addresses only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from typing import Any

import pytest

from happydial import (
    AddrInfoType,
    AttemptStarted,
    TraceEvent,
    failed_addr_infos,
    interleave_addr_infos,
    ip_addresses_to_addr_infos,
    remove_addr_infos,
    start_connection,
)

from .conftest import Runner
from .integration_helpers import dual_stack_port

pytest.importorskip("zeroconf")

from zeroconf import IPVersion  # after the importorskip on purpose
from zeroconf.asyncio import AsyncServiceInfo

TCP = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
V4, V6 = socket.AF_INET, socket.AF_INET6


def _loopback_interface() -> tuple[str, int]:
    for name in ("lo", "lo0"):
        with contextlib.suppress(OSError):
            return name, socket.if_nametoindex(name)
    pytest.skip("no loopback interface named lo or lo0")  # pragma: no cover - machine-specific


LO_NAME, LO_INDEX = _loopback_interface()
needs_ipv6 = pytest.mark.usefixtures("ipv6_loopback")


def _service(port: int, addresses: list[str]) -> AsyncServiceInfo:
    """A service info as an mDNS browser fills it; link-local scopes come from the interface."""
    return AsyncServiceInfo(
        "_esphomelib._tcp.local.",
        "kitchen._esphomelib._tcp.local.",
        port=port,
        server="kitchen.local.",
        parsed_addresses=addresses,
        interface_index=LO_INDEX,
    )


def _loopback_only(addr_infos: list[AddrInfoType]) -> list[AddrInfoType]:
    return [entry for entry in addr_infos if ipaddress.ip_address(entry[4][0]).is_loopback]


# ---------------------------------------------------------------------------
# From a service info to addr_infos (no I/O)
# ---------------------------------------------------------------------------

ANNOUNCED = ["192.0.2.7", "2001:db8::7", "fe80::7", "192.0.2.7", "fe80::7"]
EXPECTED = [
    (V4, *TCP, ("192.0.2.7", 6053)),
    (V6, *TCP, ("2001:db8::7", 6053, 0, 0)),
    (V6, *TCP, ("fe80::7", 6053, 0, LO_INDEX)),
]


def test_ip_addresses_by_version_become_addr_infos() -> None:
    info = _service(6053, ANNOUNCED)
    addresses = info.ip_addresses_by_version(IPVersion.All)
    # zeroconf (0.154) hands out the duplicates it was given, and scopes only the
    # link-local address (an IPv6Address subclass with scope_id set).
    scoped = [a for a in addresses if isinstance(a, ipaddress.IPv6Address) and a.scope_id]
    assert {str(a) for a in scoped} == {f"fe80::7%{LO_INDEX}"}
    assert info.port is not None
    assert ip_addresses_to_addr_infos(addresses, info.port) == EXPECTED


def test_parsed_scoped_addresses_become_the_same_addr_infos() -> None:
    info = _service(6053, ANNOUNCED)
    assert ip_addresses_to_addr_infos(info.parsed_scoped_addresses(), 6053) == EXPECTED
    # parsed_addresses() drops the scope: the link-local entry then has scope id 0,
    # which Linux refuses to connect to (EINVAL). Use the scoped forms.
    unscoped = ip_addresses_to_addr_infos(info.parsed_addresses(), 6053)
    assert unscoped[2][4] == ("fe80::7", 6053, 0, 0)


def test_zone_names_and_numbers_give_the_interface_index() -> None:
    spellings: list[str | ipaddress.IPv6Address] = [
        ipaddress.IPv6Address(f"fe80::7%{LO_NAME}"),
        f"fe80::7%{LO_NAME}",
        f"fe80::7%{LO_INDEX}",
        ipaddress.IPv6Address(f"fe80::7%{LO_INDEX}"),
    ]
    # One address, four spellings: one entry, with the numeric scope id.
    assert ip_addresses_to_addr_infos(spellings, 6053) == [
        (V6, *TCP, ("fe80::7", 6053, 0, LO_INDEX))
    ]


def test_ipv6_first_as_aioesphomeapi_orders_them() -> None:
    info = _service(6053, ANNOUNCED)
    v6_first = [
        *info.ip_addresses_by_version(IPVersion.V6Only),
        *info.ip_addresses_by_version(IPVersion.V4Only),
    ]
    addr_infos = ip_addresses_to_addr_infos(v6_first, 6053)
    assert [entry[4][0] for entry in addr_infos] == ["2001:db8::7", "fe80::7", "192.0.2.7"]
    # RFC 8305 interleaving, as start_connection applies it with a delay set.
    interleaved = interleave_addr_infos(addr_infos)
    assert [entry[4][0] for entry in interleaved] == ["2001:db8::7", "192.0.2.7", "fe80::7"]


def test_getpeername_of_a_link_local_peer_removes_its_entry() -> None:
    # aiohttp-style retry loops remove a bad peer by sock.getpeername(); for a
    # link-local peer that is a 4-tuple with the numeric scope id.
    addr_infos = ip_addresses_to_addr_infos(
        _service(6053, ANNOUNCED).parsed_scoped_addresses(), 6053
    )
    remove_addr_infos(addr_infos, ("fe80::7", 6053, 0, LO_INDEX))
    assert addr_infos == EXPECTED[:2]
    # ... and a textual zone means the same interface.
    addr_infos = list(EXPECTED)
    remove_addr_infos(addr_infos, (f"fe80::7%{LO_NAME}", 6053))
    assert addr_infos == EXPECTED[:2]


# ---------------------------------------------------------------------------
# Connecting (loopback only)
# ---------------------------------------------------------------------------


@needs_ipv6
@pytest.mark.parametrize(
    ("order", "winner"),
    [("as announced", "127.0.0.1"), ("IPv6 first", "::1")],
)
def test_connect_to_a_service_on_loopback(
    run: Runner[Any], no_fd_leak: None, order: str, winner: str
) -> None:
    async def main() -> None:
        with dual_stack_port() as port:
            info = _service(port, ["127.0.0.1", "192.0.2.7", "::1", "2001:db8::7", "127.0.0.1"])
            if order == "IPv6 first":
                addresses = [
                    *info.ip_addresses_by_version(IPVersion.V6Only),
                    *info.ip_addresses_by_version(IPVersion.V4Only),
                ]
            else:
                addresses = info.ip_addresses_by_version(IPVersion.All)
            assert info.port is not None
            addr_infos = ip_addresses_to_addr_infos(addresses, info.port)
            assert len(addr_infos) == 4  # the duplicate 127.0.0.1 is gone
            events: list[TraceEvent] = []
            sock = await start_connection(
                _loopback_only(addr_infos), happy_eyeballs_delay=0.1, trace=events.append
            )
            with sock:
                assert sock.getpeername()[:2] == (winner, port)
            started = [e.addr_info[4][0] for e in events if isinstance(e, AttemptStarted)]
            assert started == [winner]

    run(main)


@needs_ipv6
def test_service_falls_back_to_ipv4_when_ipv6_refuses(run: Runner[Any], no_fd_leak: None) -> None:
    async def main() -> None:
        with dual_stack_port(v6_listens=False) as port:
            info = _service(port, ["127.0.0.1", "::1"])
            v6_first = [
                *info.ip_addresses_by_version(IPVersion.V6Only),
                *info.ip_addresses_by_version(IPVersion.V4Only),
            ]
            addr_infos = ip_addresses_to_addr_infos(v6_first, port)
            sock = await start_connection(addr_infos, happy_eyeballs_delay=0.1, interleave=1)
            with sock:
                assert sock.getpeername() == ("127.0.0.1", port)

    run(main)


@needs_ipv6
def test_every_loopback_address_refusing_names_each(run: Runner[Any], no_fd_leak: None) -> None:
    async def main() -> None:
        with dual_stack_port(v4_listens=False, v6_listens=False) as port:
            info = _service(port, ["127.0.0.1", "::1", "127.0.0.1"])
            addr_infos = ip_addresses_to_addr_infos(info.parsed_scoped_addresses(), port)
            assert len(addr_infos) == 2
            with pytest.raises(ConnectionRefusedError) as caught:
                await start_connection(addr_infos, happy_eyeballs_delay=0.1)
        assert failed_addr_infos(caught.value) == addr_infos

    run(main)
