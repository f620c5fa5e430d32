"""Recipes from the documentation, run for real: a DNS cache, and handing the socket to TLS.

* A TTL cache over the loop's ``getaddrinfo`` feeding :func:`happydial.start_connection`
  ("when using DNS caching", aiohappyeyeballs' stated use case).
* ``loop.create_connection(sock=...)`` and ``asyncio.open_connection(sock=...)`` with
  TLS on the winning socket, on asyncio and uvloop; a handoff that fails (an untrusted
  certificate, a wrong host name) leaves no descriptor open.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from happydial import AddrInfoType, AttemptStarted, TraceEvent, start_connection

from .conftest import Runner, machine_has
from .integration_helpers import (
    ai,
    dual_stack_port,
    has_ipv6_loopback,
    listening,
    make_certificate,
    refusing,
    settle,
)

Lookup = Callable[..., Awaitable[list[Any]]]


class CachedGetaddrinfo:
    """Remember ``getaddrinfo`` answers for *ttl* seconds, per ``(host, port)``.

    Use: ``sock = await start_connection(await cache.addr_infos(host, port))``. The
    clock and the lookup are parameters so that a test can drive them.
    """

    def __init__(
        self,
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        lookup: Lookup | None = None,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lookup = lookup
        self._entries: dict[tuple[str, int], tuple[float, list[AddrInfoType]]] = {}

    async def addr_infos(self, host: str, port: int) -> list[AddrInfoType]:
        """The cached answer if it is fresh, else a new lookup (then cached)."""
        entry = self._entries.get((host, port))
        if entry is not None and self._clock() < entry[0]:
            return entry[1]
        lookup = self._lookup or asyncio.get_running_loop().getaddrinfo
        answer: list[AddrInfoType] = list(await lookup(host, port, type=socket.SOCK_STREAM))
        self._entries[host, port] = (self._clock() + self.ttl, answer)
        return answer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def _localhost_port() -> Iterator[int]:
    """A listening port on every loopback address "localhost" may resolve to."""
    if machine_has(has_ipv6_loopback(), "no IPv6 loopback"):
        with dual_stack_port() as port:
            yield port
    else:  # pragma: no cover - machines without IPv6 loopback
        with listening("127.0.0.1") as srv:
            yield srv.getsockname()[1]


def test_cached_getaddrinfo_feeds_start_connection(run: Runner[Any]) -> None:
    clock = FakeClock()
    lookups: list[tuple[str, int]] = []

    async def main() -> None:
        real = asyncio.get_running_loop().getaddrinfo

        async def counting(host: str, port: int, **kwargs: Any) -> list[Any]:
            lookups.append((host, port))
            return await real(host, port, **kwargs)

        cache = CachedGetaddrinfo(ttl=30, clock=clock, lookup=counting)
        events: list[TraceEvent] = []
        with _localhost_port() as port:
            for _ in range(2):
                addr_infos = await cache.addr_infos("localhost", port)
                sock = await start_connection(
                    addr_infos, happy_eyeballs_delay=0.05, trace=events.append
                )
                sock.close()
            assert lookups == [("localhost", port)]  # the second connect used the cache

            clock.now += 29.9
            sock = await start_connection(await cache.addr_infos("localhost", port))
            sock.close()
            assert len(lookups) == 1

            clock.now += 0.2  # past the TTL: looked up again
            sock = await start_connection(await cache.addr_infos("localhost", port))
            sock.close()
            assert lookups == [("localhost", port)] * 2

            # A different key is a different entry.
            with refusing("127.0.0.1") as other:
                await cache.addr_infos("localhost", other)
            assert len(lookups) == 3

        # localhost: every attempt went to a loopback address.
        started = [e.addr_info[4][0] for e in events if isinstance(e, AttemptStarted)]
        assert started
        assert set(started) <= {"127.0.0.1", "::1"}

    run(main)


def test_cached_getaddrinfo_uses_the_loops_getaddrinfo(run: Runner[Any]) -> None:
    async def main() -> None:
        cache = CachedGetaddrinfo(ttl=30)
        with _localhost_port() as port:
            first = await cache.addr_infos("localhost", port)
            assert first
            assert await cache.addr_infos("localhost", port) is first
            sock = await start_connection(first, happy_eyeballs_delay=0.05)
            sock.close()

    run(main)


# ---------------------------------------------------------------------------
# Handing the winner to TLS
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def contexts(certificate: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    return server_ctx, client_ctx


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        writer.write(await reader.read(100))
        await writer.drain()
    except (ConnectionError, ssl.SSLError):  # pragma: no cover - a client that went away
        pass
    finally:
        writer.close()


async def open_tls(
    addr_infos: list[AddrInfoType], ctx: ssl.SSLContext, server_hostname: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The recipe: race, then hand the socket to asyncio; close it if that fails."""
    sock = await start_connection(addr_infos, happy_eyeballs_delay=0.25)
    try:
        return await asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=server_hostname)
    except BaseException:
        # asyncio and uvloop close it themselves after a failed TLS handshake, but not
        # when the protocol factory fails or a cancellation comes first: close it here.
        sock.close()
        raise


async def _tls_server(server_ctx: ssl.SSLContext) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=server_ctx)
    port: int = server.sockets[0].getsockname()[1]
    return server, port


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()
    await settle()


def test_open_connection_with_tls_on_the_winner(
    run: Runner[Any], contexts: tuple[ssl.SSLContext, ssl.SSLContext], no_fd_leak: None
) -> None:
    server_ctx, client_ctx = contexts

    async def main() -> None:
        server, port = await _tls_server(server_ctx)
        with refusing("127.0.0.3") as refused:
            addr_infos = [ai("127.0.0.3", refused), ai("127.0.0.1", port)]
            reader, writer = await open_tls(addr_infos, client_ctx, "localhost")
        assert writer.get_extra_info("peername") == ("127.0.0.1", port)
        assert writer.get_extra_info("ssl_object") is not None
        writer.write(b"over tls")
        assert await reader.read(100) == b"over tls"
        writer.close()
        await writer.wait_closed()
        await _close_server(server)

    run(main)


def test_create_connection_with_tls_on_the_winner(
    run: Runner[Any], contexts: tuple[ssl.SSLContext, ssl.SSLContext], no_fd_leak: None
) -> None:
    server_ctx, client_ctx = contexts

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server, port = await _tls_server(server_ctx)
        received: asyncio.Future[bytes] = loop.create_future()
        lost: asyncio.Future[None] = loop.create_future()

        class Client(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                # uvloop's TLS transport is no asyncio.Transport subclass: cast, not check.
                cast("asyncio.WriteTransport", transport).write(b"hello")

            def data_received(self, data: bytes) -> None:
                if not received.done():
                    received.set_result(data)

            def connection_lost(self, exc: Exception | None) -> None:
                if exc is None:
                    lost.set_result(None)
                else:  # pragma: no cover - the connection breaking is a test failure
                    lost.set_exception(exc)

        sock = await start_connection([ai("127.0.0.1", port)], happy_eyeballs_delay=0.25)
        transport, _ = await loop.create_connection(
            Client, sock=sock, ssl=client_ctx, server_hostname="localhost"
        )
        assert await received == b"hello"
        cert = transport.get_extra_info("peercert")
        assert cert is not None
        assert dict(x[0] for x in cert["subject"])["commonName"] == "localhost"
        transport.close()
        await asyncio.wait_for(lost, 5)  # the TLS shutdown is over
        await _close_server(server)

    run(main)


@pytest.mark.parametrize("failure", ["untrusted certificate", "wrong host name"])
def test_failed_tls_handoff_closes_the_socket(
    run: Runner[Any],
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    no_fd_leak: None,
    failure: str,
) -> None:
    server_ctx, client_ctx = contexts
    if failure == "untrusted certificate":
        client_ctx, host_name = ssl.create_default_context(), "localhost"
    else:
        host_name = "example.org"

    async def main() -> None:
        server, port = await _tls_server(server_ctx)
        with pytest.raises(ssl.SSLCertVerificationError):
            await open_tls([ai("127.0.0.1", port)], client_ctx, host_name)
        await _close_server(server)

    run(main)


def test_failed_plain_handoff_closes_the_socket(run: Runner[Any], no_fd_leak: None) -> None:
    # The protocol factory fails before a transport exists: asyncio does not close
    # the socket then (nor does uvloop); the recipe's except clause does.
    def broken() -> asyncio.Protocol:
        raise ZeroDivisionError

    async def main() -> None:
        with listening("127.0.0.1") as srv:
            port = srv.getsockname()[1]
            sock = await start_connection([ai("127.0.0.1", port)])
            try:
                await asyncio.get_running_loop().create_connection(broken, sock=sock)
            except ZeroDivisionError:
                sock.close()
            else:  # pragma: no cover - the factory always raises
                pytest.fail("create_connection succeeded")
            assert sock.fileno() == -1

    run(main)
