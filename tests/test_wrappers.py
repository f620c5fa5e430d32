"""Real sockets: the default resolver, the asyncio-shaped wrappers, and TLS handoff."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import happydial
from happydial import connect, create_connection, getaddrinfo_resolver, open_connection

from .conftest import Runner
from .integration_helpers import make_certificate, settle


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read(100)
    writer.write(data)
    await writer.drain()
    writer.close()


def test_default_resolver_answers_per_family(run: Runner[Any]) -> None:
    async def main() -> None:
        v4 = await getaddrinfo_resolver("localhost", 80, socket.AF_INET)
        assert v4
        assert all(a[0] == socket.AF_INET and a[4][1] == 80 for a in v4)
        with pytest.raises(socket.gaierror):
            await getaddrinfo_resolver("no-such-host.invalid", 80, socket.AF_INET)

    run(main)


def test_open_connection_by_name(run: Runner[Any]) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await open_connection("localhost", port, happy_eyeballs_delay=0.05)
        writer.write(b"ping")
        assert await reader.read(100) == b"ping"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(main)


def test_abandoned_lookup_does_not_hold_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    # AAAA never answers (until released); A does. asyncio.run() must return at once,
    # not wait for the stuck lookup as it would for the loop's default executor.
    real = socket.getaddrinfo
    release = threading.Event()

    def stuck_aaaa(host: str, port: Any, family: int = 0, *args: Any) -> Any:
        if family == socket.AF_INET6:
            release.wait(10)
        return real(host, port, family, *args)

    monkeypatch.setattr(socket, "getaddrinfo", stuck_aaaa)
    srv = socket.create_server(("127.0.0.1", 0))

    async def main() -> None:
        sock = await connect("localhost", srv.getsockname()[1])
        sock.close()

    start = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - start
    release.set()
    srv.close()
    assert elapsed < 5, "the stuck AAAA lookup held asyncio.run()"


def test_a_late_answer_is_dropped(run: Runner[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo
    release = threading.Event()
    answered = threading.Event()

    def slow_aaaa(host: str, port: Any, family: int = 0, *args: Any) -> Any:
        if family == socket.AF_INET6:
            release.wait(10)
            answered.set()
        return real(host, port, family, *args)

    monkeypatch.setattr(socket, "getaddrinfo", slow_aaaa)

    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as srv:
            sock = await connect("localhost", srv.getsockname()[1])
            sock.close()
        release.set()  # the AAAA answer now arrives, after the race was won
        await asyncio.to_thread(answered.wait, 10)
        await asyncio.sleep(0.05)  # let the thread's delivery callback run

    run(main)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def test_tls_uses_the_host_name(run: Runner[Any], certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        # server_hostname defaults to "localhost", which the certificate names.
        reader, writer = await open_connection("localhost", port, ssl=client_ctx)
        writer.write(b"tls")
        assert await reader.read(100) == b"tls"
        writer.close()
        await writer.wait_closed()
        # A name the certificate does not carry fails, and the socket is closed.
        with pytest.raises(ssl.SSLCertVerificationError):
            await open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="example.org")
        server.close()
        await server.wait_closed()
        await settle()

    run(main)


def test_failed_handoff_closes_the_socket(run: Runner[Any], no_fd_leak: None) -> None:
    async def main() -> None:
        srv = socket.create_server(("127.0.0.1", 0))
        port = srv.getsockname()[1]

        def broken_protocol() -> asyncio.Protocol:
            raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await create_connection(broken_protocol, "127.0.0.1", port)
        srv.close()

    run(main)


def test_facade_exports_the_wrappers() -> None:
    assert happydial.open_connection is open_connection
    assert happydial.create_connection is create_connection


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"limit": "x"}, TypeError, "limit must be an int, got 'x'"),
        ({"limit": 0}, ValueError, "limit must be positive, got 0"),
        ({"ssl": object()}, TypeError, "ssl must be an ssl.SSLContext, a bool or None"),
        ({"server_hostname": "example.org"}, ValueError, "server_hostname is only meaningful"),
        ({"ssl": True, "server_hostname": 5}, TypeError, "server_hostname must be a str or None"),
    ],
)
def test_wrapper_arguments_fail_before_connecting(
    run: Runner[Any], kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    async def main() -> None:
        with pytest.raises(exc, match=match):
            await open_connection("127.0.0.1", 1, **kwargs)

    run(main)
