"""aiohttp's TCPConnector with happydial in aiohappyeyeballs' place, on real loopback sockets.

aiohttp calls ``aiohappyeyeballs.start_connection(addr_infos=..., local_addr_infos=...,
happy_eyeballs_delay=..., interleave=..., loop=..., socket_factory=...)`` and then
``pop_addr_infos_interleave`` / ``remove_addr_infos`` through the module object
``aiohttp.connector.aiohappyeyeballs``. The ``happydial_in_aiohttp`` fixture swaps that
module object for one holding happydial's functions, so a real ``ClientSession`` talks
to a real ``aiohttp.web`` server through happydial.

The host names resolve (through a resolver of our own) to loopback addresses only:
dead ones (127.0.0.2, a full accept queue), refusing ones (127.0.0.3-5 and ``::1``,
ports bound but not listening) and the live server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
import types
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import happydial
from happydial import AddrInfoType, failed_addr_infos, remove_addr_infos, start_connection

from .conftest import Runner, machine_has
from .integration_helpers import ai, dead, has_ipv6_loopback, make_certificate, refusing, settle

pytest.importorskip("aiohttp")

import aiohttp  # after the importorskip on purpose
import aiohttp.connector
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

IPV6 = machine_has(has_ipv6_loopback(), "no IPv6 loopback")
needs_ipv6 = pytest.mark.usefixtures("ipv6_loopback")

TIMEOUT = aiohttp.ClientTimeout(total=10)


class StaticResolver(AbstractResolver):
    """Resolves every host name to the same fixed ``(ip, port)`` list, in order."""

    def __init__(self, endpoints: list[tuple[str, int]]) -> None:
        self.endpoints = endpoints
        self.lookups = 0

    async def resolve(
        self,
        host: str,
        port: int = 0,  # noqa: ARG002 - each endpoint has its own port
        family: socket.AddressFamily = socket.AF_INET,
    ) -> list[ResolveResult]:
        self.lookups += 1
        results: list[ResolveResult] = []
        for ip, ip_port in self.endpoints:
            ip_family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            if family in (socket.AF_UNSPEC, ip_family):
                results.append(
                    {
                        "hostname": host,
                        "host": ip,
                        "port": ip_port,
                        "family": ip_family,
                        "proto": socket.IPPROTO_TCP,
                        "flags": 0,
                    }
                )
        return results

    async def close(self) -> None:
        pass


@dataclass
class Recorder:
    """What aiohttp asked of the connection layer: calls and the sockets they made."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[tuple[Any, ...]] = field(default_factory=list)

    def socket_factory(self, addr_info: AddrInfoType) -> socket.socket:
        """A TCPConnector ``socket_factory`` that counts connect attempts."""
        self.attempts.append(addr_info[4])
        return socket.socket(addr_info[0], addr_info[1], addr_info[2])

    def attempted_hosts(self) -> list[str]:
        return [sockaddr[0] for sockaddr in self.attempts]


def substitute_happydial(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Make aiohttp call happydial where it calls aiohappyeyeballs; record the calls."""
    recorder = Recorder()

    async def recording_start_connection(*args: Any, **kwargs: Any) -> socket.socket:
        recorder.calls.append(dict(kwargs, addr_infos=list(kwargs["addr_infos"])))
        return await happydial.start_connection(*args, **kwargs)

    substitute = types.SimpleNamespace(
        start_connection=recording_start_connection,
        pop_addr_infos_interleave=happydial.pop_addr_infos_interleave,
        remove_addr_infos=happydial.remove_addr_infos,
        addr_to_addr_infos=happydial.addr_to_addr_infos,
    )
    monkeypatch.setattr(aiohttp.connector, "aiohappyeyeballs", substitute)
    return recorder


@pytest.fixture
def happydial_in_aiohttp(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    return substitute_happydial(monkeypatch)


async def _hello(request: web.Request) -> web.Response:
    assert request.transport is not None
    return web.Response(text=f"hello from {request.transport.get_extra_info('sockname')[0]}")


async def _peer(request: web.Request) -> web.Response:
    return web.Response(text=str(request.remote))


@contextlib.asynccontextmanager
async def serving(
    *hosts: str, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[list[int]]:
    """An aiohttp.web app on each of *hosts* (port 0 each); yields the ports."""
    app = web.Application()
    app.router.add_get("/", _hello)
    app.router.add_get("/peer", _peer)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        for host in hosts:
            await web.TCPSite(runner, host, 0, ssl_context=ssl_context).start()
        yield [address[1] for address in runner.addresses]
    finally:
        await runner.cleanup()
        await settle()


@contextlib.contextmanager
def refusing_endpoints(*hosts: str) -> Iterator[list[tuple[str, int]]]:
    with contextlib.ExitStack() as stack:
        yield [(host, stack.enter_context(refusing(host))) for host in hosts]


def _session(resolver: StaticResolver, **connector_options: Any) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, **connector_options)
    return aiohttp.ClientSession(connector=connector, timeout=TIMEOUT)


# ---------------------------------------------------------------------------
# A request that gets through
# ---------------------------------------------------------------------------


def test_request_past_dead_and_refusing_addresses(
    run: Runner[Any], happydial_in_aiohttp: Recorder, no_fd_leak: None
) -> None:
    recorder = happydial_in_aiohttp
    refusers = ["127.0.0.3", "::1", "127.0.0.4"] if IPV6 else ["127.0.0.3", "127.0.0.4"]

    async def main() -> None:
        with dead("127.0.0.2") as dead_port, refusing_endpoints(*refusers) as refused:
            async with serving("127.0.0.1") as (live_port,):
                endpoints = [("127.0.0.2", dead_port), *refused, ("127.0.0.1", live_port)]
                async with (
                    _session(
                        StaticResolver(endpoints),
                        happy_eyeballs_delay=0.05,
                        socket_factory=recorder.socket_factory,
                    ) as session,
                    session.get("http://service.test/") as response,
                ):
                    assert response.status == 200
                    assert await response.text() == "hello from 127.0.0.1"

        # One race: the dead address is passed over after 50 ms, the refusals are
        # immediate, the live server wins. aiohttp's retry loop never runs.
        assert len(recorder.calls) == 1
        call = recorder.calls[0]
        assert set(call) == {
            "addr_infos",
            "local_addr_infos",
            "happy_eyeballs_delay",
            "interleave",
            "loop",
            "socket_factory",
        }
        assert call["happy_eyeballs_delay"] == 0.05
        assert call["interleave"] is None
        assert call["addr_infos"] == [ai(host, port) for host, port in endpoints]
        # interleave=None with a delay means RFC 8305 interleaving: ::1 goes second.
        expected = (
            ["127.0.0.2", "::1", "127.0.0.3", "127.0.0.4", "127.0.0.1"]
            if IPV6
            else ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.1"]
        )
        assert recorder.attempted_hosts() == expected

    run(main)


def test_a_recording_explains_aiohttps_connection(
    run: Runner[Any], happydial_in_aiohttp: Recorder
) -> None:
    """``with happydial.recording()`` around a request: the report of aiohttp's call."""

    async def main() -> None:
        with dead("127.0.0.2") as dead_port, refusing_endpoints("127.0.0.3") as refused:
            async with serving("127.0.0.1") as (live_port,):
                endpoints = [("127.0.0.2", dead_port), *refused, ("127.0.0.1", live_port)]
                async with _session(
                    StaticResolver(endpoints), happy_eyeballs_delay=0.05
                ) as session:
                    with happydial.recording() as rec:
                        async with session.get("http://service.test/") as response:
                            assert response.status == 200
        [report] = rec.reports
        refused_port = refused[0][1]
        assert (report.call, report.outcome, report.peer, report.winner, report.delay) == (
            "start_connection",
            "connected",
            f"127.0.0.1:{live_port}",
            2,
            0.05,
        )
        assert report.addresses == tuple(f"{host}:{port}" for host, port in endpoints)
        assert [(a.address, a.outcome, a.failure) for a in report.attempts] == [
            (f"127.0.0.2:{dead_port}", "cancelled", None),
            (f"127.0.0.3:{refused_port}", "failed", "refused"),
            (f"127.0.0.1:{live_port}", "connected", None),
        ]
        # The refusing address was tried once the dead one had had its 50 ms.
        assert report.attempts[1].start >= 0.05

    run(main)


@needs_ipv6
def test_a_recording_explains_every_round_of_aiohttps(
    run: Runner[Any], happydial_in_aiohttp: Recorder
) -> None:
    """Five refused addresses: aiohttp's four calls, four reports; its error has the last."""

    async def main() -> None:
        with refusing_endpoints(*FIVE_REFUSERS) as endpoints:
            async with _session(StaticResolver(endpoints), happy_eyeballs_delay=0.05) as session:
                with (
                    happydial.recording() as rec,
                    pytest.raises(aiohttp.ClientConnectorError) as info,
                ):
                    await session.get("http://service.test/")
        assert [len(report.attempts) for report in rec.reports] == [5, 3, 2, 1]
        assert all(report.outcome == "failed" for report in rec.reports)
        assert all(a.failure == "refused" for r in rec.reports for a in r.attempts)
        # aiohttp raises ClientConnectorError from happydial's error: the report follows.
        assert happydial.connection_report(info.value) is rec.reports[-1]

    run(main)


def test_keep_alive_reuses_the_connection(run: Runner[Any], happydial_in_aiohttp: Recorder) -> None:
    recorder = happydial_in_aiohttp

    async def main() -> None:
        async with serving("127.0.0.1") as (port,):
            resolver = StaticResolver([("127.0.0.1", port)])
            async with _session(resolver) as session:
                for _ in range(3):
                    async with session.get("http://service.test/") as response:
                        assert await response.text() == "hello from 127.0.0.1"
        assert len(recorder.calls) == 1

    run(main)


def test_local_addr_goes_through_addr_to_addr_infos(
    run: Runner[Any], happydial_in_aiohttp: Recorder
) -> None:
    recorder = happydial_in_aiohttp

    async def main() -> None:
        async with serving("127.0.0.1") as (port,):
            resolver = StaticResolver([("127.0.0.1", port)])
            async with (
                _session(resolver, local_addr=("127.0.0.9", 0)) as session,
                session.get("http://service.test/peer") as response,
            ):
                assert await response.text() == "127.0.0.9"
        assert recorder.calls[0]["local_addr_infos"] == [ai("127.0.0.9", 0)]

    run(main)


# ---------------------------------------------------------------------------
# Every address refuses: aiohttp's rounds, and the better pattern
# ---------------------------------------------------------------------------

FIVE_REFUSERS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "::1", "127.0.0.5")


@needs_ipv6
@pytest.mark.parametrize("implementation", ["happydial", "aiohappyeyeballs"])
def test_five_refused_addresses_cost_aiohttp_eleven_attempts(
    run: Runner[Any], monkeypatch: pytest.MonkeyPatch, implementation: str
) -> None:
    """aiohttp repeats addresses in rounds: 11 attempts for 5 refused addresses.

    ``start_connection`` already tries every address, but on failure aiohttp's
    ``_create_direct_connection`` pops the first address of each family
    (``pop_addr_infos_interleave(addr_infos, interleave)``) and races the rest
    again, until the list is empty. With 4 IPv4 and 1 IPv6 refusing addresses the
    rounds are 5 + 3 + 2 + 1 = 11 connect attempts in 4 ``start_connection`` calls,
    and the error reports only the last round's address.

    Measured: 11 with happydial substituted, 11 with aiohappyeyeballs 2.7.1. happydial
    keeps the call pattern (it is a drop-in); it cannot fix aiohttp's loop, whose
    ``pop`` never sees the error. Compare
    :func:`test_each_address_exactly_once_with_failed_addr_infos`.
    """
    recorder = Recorder()
    if implementation == "happydial":
        recorder = substitute_happydial(monkeypatch)

    async def main() -> None:
        with refusing_endpoints(*FIVE_REFUSERS) as endpoints:
            async with _session(
                StaticResolver(endpoints),
                happy_eyeballs_delay=0.05,
                socket_factory=recorder.socket_factory,
            ) as session:
                with pytest.raises(aiohttp.ClientConnectorError) as info:
                    await session.get("http://service.test/")
            last_port = endpoints[-1][1]
        assert isinstance(info.value.os_error, ConnectionRefusedError)
        assert f"('127.0.0.5', {last_port})" in str(info.value)
        assert len(recorder.attempts) == 11
        assert recorder.attempted_hosts() == [
            *("127.0.0.2", "::1", "127.0.0.3", "127.0.0.4", "127.0.0.5"),
            *("127.0.0.3", "127.0.0.4", "127.0.0.5"),
            *("127.0.0.4", "127.0.0.5"),
            "127.0.0.5",
        ]
        if implementation == "happydial":
            assert len(recorder.calls) == 4
            # aiohttp keeps happydial's error as os_error: the addresses are readable.
            assert failed_addr_infos(info.value.os_error) == [ai("127.0.0.5", last_port)]

    run(main)


@needs_ipv6
def test_each_address_exactly_once_with_failed_addr_infos(
    run: Runner[Any], no_fd_leak: None
) -> None:
    """The pattern happydial's structured errors allow: drop exactly what failed.

    The error raised by ``start_connection`` names every failed attempt's addr_info
    (``failed_addr_infos``); removing those, and retrying only what is left (after a
    timeout, say, nothing may have failed yet), tries each address once: 5 attempts
    for 5 refused addresses, against aiohttp's 11.
    """
    recorder = Recorder()

    async def connect_each_once(addr_infos: list[AddrInfoType]) -> socket.socket:
        remaining = list(addr_infos)
        while True:
            try:
                return await start_connection(
                    remaining, happy_eyeballs_delay=0.05, socket_factory=recorder.socket_factory
                )
            except OSError as exc:
                failed = failed_addr_infos(exc)
                for addr_info in failed:
                    remove_addr_infos(remaining, addr_info[4])
                if not failed or not remaining:
                    raise

    async def main() -> None:
        with refusing_endpoints(*FIVE_REFUSERS) as endpoints:
            addr_infos = [ai(host, port) for host, port in endpoints]
            with pytest.raises(ConnectionRefusedError) as info:
                await connect_each_once(addr_infos)
        assert len(recorder.attempts) == 5
        assert sorted(recorder.attempts) == sorted(entry[4] for entry in addr_infos)
        # Every address is in the error, not only the last one.
        assert sorted(failed_addr_infos(info.value)) == sorted(addr_infos)
        for _, port in endpoints:
            assert str(port) in str(info.value)

    run(main)


# ---------------------------------------------------------------------------
# The interleave option of TCPConnector, set to 0
# ---------------------------------------------------------------------------


def test_interleave_zero_is_bounded(
    run: Runner[Any], happydial_in_aiohttp: Recorder, no_fd_leak: None
) -> None:
    """``TCPConnector(interleave=0)`` with every address refusing: one round, then an error.

    With aiohappyeyeballs, ``pop_addr_infos_interleave(addr_infos, 0)`` removes
    nothing and aiohttp's ``while addr_infos`` loop spins until a total timeout
    (about 14,000 ``start_connection`` calls a second; forever without one). happydial
    raises ``ValueError`` from the pop, which aiohttp does not catch: the request
    fails after 1 call and one attempt per address, with a ``ValueError`` (not a
    ``ClientError``) whose ``__context__`` is the ``ClientConnectorError``.
    """
    recorder = happydial_in_aiohttp
    hosts = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")

    async def main() -> None:
        with refusing_endpoints(*hosts) as endpoints:
            async with _session(
                StaticResolver(endpoints),
                happy_eyeballs_delay=0.05,
                interleave=0,
                socket_factory=recorder.socket_factory,
            ) as session:
                with pytest.raises(ValueError, match="interleave must be at least 1") as info:
                    await session.get("http://service.test/")
        assert isinstance(info.value.__context__, aiohttp.ClientConnectorError)
        assert len(recorder.calls) == 1
        assert recorder.calls[0]["interleave"] == 0
        assert recorder.attempted_hosts() == list(hosts)

    run(main)


def test_interleave_zero_keeps_the_order_and_connects(
    run: Runner[Any], happydial_in_aiohttp: Recorder
) -> None:
    recorder = happydial_in_aiohttp
    refusers = ("::1", "127.0.0.3") if IPV6 else ("127.0.0.3", "127.0.0.4")

    async def main() -> None:
        with refusing_endpoints(*refusers) as refused:
            async with serving("127.0.0.1") as (port,):
                endpoints = [*refused, ("127.0.0.1", port)]
                async with (
                    _session(
                        StaticResolver(endpoints),
                        happy_eyeballs_delay=0.05,
                        interleave=0,
                        socket_factory=recorder.socket_factory,
                    ) as session,
                    session.get("http://service.test/") as response,
                ):
                    assert response.status == 200
        assert recorder.attempted_hosts() == [*refusers, "127.0.0.1"]

    run(main)


# ---------------------------------------------------------------------------
# TLS fingerprint mismatch: aiohttp's remove_addr_infos(addr_infos, getpeername())
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@needs_ipv6
def test_fingerprint_mismatch_removes_each_peer(
    run: Runner[Any],
    happydial_in_aiohttp: Recorder,
    certificate: tuple[Path, Path],
    no_fd_leak: None,
) -> None:
    recorder = happydial_in_aiohttp
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    wrong = aiohttp.Fingerprint(hashlib.sha256(b"not the certificate").digest())

    async def main() -> None:
        async with serving("127.0.0.1", "::1", ssl_context=server_ctx) as ports:
            endpoints = [("127.0.0.1", ports[0]), ("::1", ports[1])]
            async with _session(
                StaticResolver(endpoints),
                happy_eyeballs_delay=0.05,
                socket_factory=recorder.socket_factory,
            ) as session:
                with pytest.raises(aiohttp.ServerFingerprintMismatch):
                    await session.get("https://service.test/", ssl=wrong)
            await asyncio.sleep(0)
        # Each TLS connection came from a separate race; aiohttp removed the peer
        # (a 4-tuple from getpeername() for ::1) and raced what was left.
        assert [call["addr_infos"] for call in recorder.calls] == [
            [ai(*endpoint) for endpoint in endpoints],
            [ai(*endpoints[1])],
        ]
        assert recorder.attempted_hosts() == ["127.0.0.1", "::1"]

    run(main)
