"""Loopback endpoints and a certificate for the integration tests (aiohttp, zeroconf, recipes).

Every endpoint lives on the loopback interface: a test never sends a packet
anywhere else.

* :func:`listening`: a live listener.
* :func:`refusing`: a port that answers a SYN with a reset. The socket stays bound
  (without ``listen``), so no other process can take the port during the test.
* :func:`dead`: a listener whose accept queue is full, so the kernel drops further
  SYNs and a connect hangs, as it would towards a black-holed host.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from happydial import AddrInfoType


def ai(host: str, port: int) -> AddrInfoType:
    """The addr_info aiohttp builds for *host*: IPv6 sockaddrs padded to 4 fields."""
    if ":" in host:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def has_ipv6_loopback() -> bool:
    """Whether ``::1`` can be bound here (containers sometimes disable IPv6)."""
    if not socket.has_ipv6:  # pragma: no cover - depends on the machine
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:  # pragma: no cover - depends on the machine
        return False
    return True


@contextlib.contextmanager
def listening(host: str = "127.0.0.1", port: int = 0) -> Iterator[socket.socket]:
    """A listening socket on *host*; the caller may ``accept`` on it."""
    with socket.socket(_family(host)) as srv:
        srv.bind((host, port))
        srv.listen(64)
        yield srv


@contextlib.contextmanager
def refusing(host: str) -> Iterator[int]:
    """A port on *host* that refuses connections, held for the duration."""
    with socket.socket(_family(host)) as holder:
        holder.bind((host, 0))
        yield holder.getsockname()[1]


@contextlib.contextmanager
def dead(host: str = "127.0.0.2") -> Iterator[int]:
    """A port on *host* that never answers: its listener's accept queue is full."""
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(socket.socket(_family(host)))
        srv.bind((host, 0))
        srv.listen(0)
        port: int = srv.getsockname()[1]
        for _ in range(4):  # fill the accept queue and the SYN backlog
            filler = stack.enter_context(socket.socket(_family(host)))
            filler.setblocking(False)
            filler.connect_ex((host, port))
        yield port


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` (and 127.0.0.1): ``(cert, key)``."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(  # noqa: S603 - fixed arguments
        [  # noqa: S607 - openssl from PATH, as a user would run it
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def settle() -> None:
    """Let server-side handler tasks finish (bounded: 2 s), then pending callbacks run."""
    for _ in range(200):
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if not others:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)  # connection_lost() and friends, scheduled by the closes


@contextlib.contextmanager
def dual_stack_port(*, v4_listens: bool = True, v6_listens: bool = True) -> Iterator[int]:
    """Sockets on 127.0.0.1 and ::1 sharing one port number, listening or refusing.

    A socket that is bound but not listening refuses connections, and keeps the port
    from being taken by anything else meanwhile.
    """
    for _ in range(20):
        with contextlib.ExitStack() as stack:
            v6 = stack.enter_context(socket.socket(socket.AF_INET6))
            v6.bind(("::1", 0))
            port: int = v6.getsockname()[1]
            v4 = stack.enter_context(socket.socket(socket.AF_INET))
            try:
                v4.bind(("127.0.0.1", port))
            except OSError:  # pragma: no cover - the port is taken on IPv4; try another
                continue
            if v6_listens:
                v6.listen(8)
            if v4_listens:
                v4.listen(8)
            yield port
            return
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")  # pragma: no cover
