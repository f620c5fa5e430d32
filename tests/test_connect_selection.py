"""connect() orders answers by RFC 6724 before interleaving them (RFC 8305 section 4).

The lookups are per family, so the C library's sort of a ``getaddrinfo(AF_UNSPEC)``
answer is lost; connect() sorts the answers itself with the source address of each
destination. These scenarios inject the sources, as a host with that network has them.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import pytest

import happydial
from happydial import AddrInfoType, connect
from happydial.testing import FakeNetwork

from .conftest import Runner

V6, V4 = socket.AF_INET6, socket.AF_INET
A6, B6 = "2001:db8::a", "2001:db8::b"
A4, B4 = "192.0.2.1", "192.0.2.2"


def ai(host: str, port: int = 80) -> AddrInfoType:
    if ":" in host:
        return (V6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
    return (V4, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


def resolver(v6_at: float, v4_at: float) -> Any:
    async def resolve(host: str, port: int, family: int) -> list[AddrInfoType]:
        await asyncio.sleep(v6_at if family == V6 else v4_at)
        return [ai(h, port) for h in ((A6, B6) if family == V6 else (A4, B4))]

    return resolve


async def _attempts(**kwargs: Any) -> list[tuple[str, float]]:
    """Each attempt's address and start time, from the call's start."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    net = FakeNetwork(loop)
    events: list[happydial.TraceEvent] = []
    with pytest.raises(OSError):
        await connect(
            "h.test",
            80,
            socket_factory=net.socket_factory,
            attempt_timeout=5.0,
            trace=events.append,
            **kwargs,
        )
    return [
        (e.addr_info[4][0], round(e.time - start, 6))
        for e in events
        if isinstance(e, happydial.AttemptStarted)
        or (
            isinstance(e, happydial.AttemptFailed)
            and getattr(e.error, "errno", None) == errno.EAFNOSUPPORT
        )
    ]


ULA_ONLY = {A6: "fd00::2", B6: "fd00::2", A4: "198.51.100.2", B4: "198.51.100.2"}
GLOBAL = {A6: "2001:db8:c::2", B6: "2001:db8:c::2", A4: "198.51.100.2", B4: "198.51.100.2"}
NO_IPV6 = {A6: None, B6: None, A4: "198.51.100.2", B4: "198.51.100.2"}


@pytest.mark.parametrize(
    ("sources", "order"),
    [
        # A global IPv6 source: IPv6 starts when AAAA answers (section 3), and the
        # untried addresses are sorted and interleaved when A answers.
        (GLOBAL, [(A6, 0.01), (A4, 0.26), (B6, 0.51), (B4, 0.76)]),
        # Only a ULA IPv6 source: the default policy ranks a global IPv6 destination
        # after IPv4 (rule 5: the labels differ), as glibc's getaddrinfo(AF_UNSPEC)
        # does. The early AAAA answer waits for A, and IPv4 leads.
        (ULA_ONLY, [(A4, 0.02), (A6, 0.27), (B4, 0.52), (B6, 0.77)]),
    ],
)
def test_answers_are_sorted_by_rfc_6724(
    vrun: Runner[Any], sources: dict[str, str], order: list[tuple[str, float]]
) -> None:
    async def main() -> None:
        assert await _attempts(resolver=resolver(0.01, 0.02), sources=sources) == order

    vrun(main)


def test_ula_only_ipv6_waits_at_most_the_resolution_delay(vrun: Runner[Any]) -> None:
    async def main() -> None:
        seen = await _attempts(resolver=resolver(0.01, 1.0), sources=ULA_ONLY)
        assert seen == [(A6, 0.06), (B6, 0.31), (A4, 1.0), (B4, 1.25)]

    vrun(main)


def test_ipv6_with_no_source_waits_for_ipv4_and_goes_last(vrun: Runner[Any]) -> None:
    # Rule 1: no source address for IPv6 at all. The AAAA answer is held for the
    # resolution delay like an early A answer, and its addresses are tried last.
    async def main() -> None:
        seen = await _attempts(resolver=resolver(0.01, 0.03), sources=NO_IPV6)
        assert seen == [(A4, 0.03), (B4, 0.28), (A6, 0.53), (B6, 0.78)]
        seen = await _attempts(resolver=resolver(0.01, 1.0), sources=NO_IPV6)
        assert seen == [(A6, 0.06), (B6, 0.31), (A4, 1.0), (B4, 1.25)]

    vrun(main)


def test_a_callable_gives_the_sources(vrun: Runner[Any]) -> None:
    async def main() -> None:
        asked: list[str] = []

        def sources(addr_info: AddrInfoType) -> str | None:
            asked.append(addr_info[4][0])
            return ULA_ONLY[addr_info[4][0]]

        seen = await _attempts(resolver=resolver(0.01, 0.01), sources=sources)
        assert seen == [(A4, 0.01), (A6, 0.26), (B4, 0.51), (B6, 0.76)]
        assert set(asked) == {A6, B6, A4, B4}

    vrun(main)


def test_local_addr_is_the_source(vrun: Runner[Any]) -> None:
    # Bound to an IPv4 address, no IPv6 attempt can bind: IPv6 goes last.
    async def main() -> None:
        seen = await _attempts(resolver=resolver(0.01, 0.01), local_addr=("198.51.100.2", 0))
        # The IPv6 attempts fail at once (nothing to bind to), one after the other.
        assert seen == [(A4, 0.01), (B4, 0.26), (A6, 0.51), (B6, 0.51)]

    vrun(main)


@pytest.mark.parametrize(
    ("sources", "error", "match"),
    [
        (42, TypeError, r"sources must be a mapping .* or a callable .*, got 42"),
        ({A6: "fd00::2"}, ValueError, r"sources has no entry for destination '2001:db8::b'"),
        ({**GLOBAL, A4: "fd00::2"}, ValueError, r"an IPv4 destination needs an IPv4 source"),
    ],
)
def test_bad_sources_are_refused(
    vrun: Runner[Any], sources: object, error: type[Exception], match: str
) -> None:
    async def main() -> None:
        with pytest.raises(error, match=match):
            await connect("h.test", 80, resolver=resolver(0.0, 0.0), sources=sources)  # type: ignore[arg-type]

    vrun(main)


@pytest.mark.parametrize("v6_at", [0.01, 1.0])
def test_a_sources_callable_that_raises_ends_the_call(vrun: Runner[Any], v6_at: float) -> None:
    # Asked when an answer is fed: from a lookup's task, or from the timer that ends
    # the resolution delay (A answered first, AAAA late). Either way the call ends.
    class SourcesBugError(Exception):
        pass

    def sources(addr_info: AddrInfoType) -> str:
        raise SourcesBugError(addr_info[4][0])

    async def main() -> None:
        # With NAT64 synthesis on (the default), an A answer's sources are asked at
        # once (has this host an IPv4 path?): that raises in the lookup's task.
        with pytest.raises(SourcesBugError):
            await connect("h.test", 80, resolver=resolver(v6_at, 0.02), sources=sources)
        # Without it, the held A answer's sources are first asked by the timer.
        with pytest.raises(SourcesBugError):
            await connect(
                "h.test", 80, resolver=resolver(v6_at, 0.02), sources=sources, nat64=False
            )

    vrun(main)
