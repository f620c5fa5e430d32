"""The lab section's client: one implementation's time to connect, inside the client namespace.

Run by ``bench/lab.py`` from the repository root as ``ip netns exec <client namespace>
python -m bench.lab_client '<spec>'``. It imports the standard library and the one
implementation under test, nothing else (not even the rest of ``bench``). The spec is a JSON
object:

* ``impl``: ``happydial``, ``aiohappyeyeballs`` (host names: ``loop.getaddrinfo`` first, as
  aiohttp does), ``asyncio`` (``loop.create_connection``), ``asyncio-open``
  (``asyncio.open_connection``), ``trio``, ``anyio``, ``async_stagger``, or ``floor`` (a bare
  ``loop.sock_connect`` / ``loop.getaddrinfo``: what the lab's path itself costs, with no
  Happy Eyeballs logic at all);
* ``parent``: the harness's pid; this process is killed when that one dies;
* ``scenarios``: run one after the other (the first ones are untimed warm-ups, for the
  harness), each a JSON object with a ``name`` and a ``kind``:
  ``addrs`` (pre-resolved ``addr_infos`` as ``[family, host, port]`` triples, ``delay``,
  ``interleave``), ``host`` (``host``, ``port``, ``delay``, ``resolution_delay``),
  ``connect-floor`` (``address``, ``port``) or ``dns-floor`` (``host``, ``family``).

One JSON object on stdout: ``{"results": {name: {"elapsed": s, "peer": [...], "error": ...}}}``.
``elapsed`` is ``time.monotonic()`` around the call alone: the winner's socket is closed
afterwards, and the interpreter's start-up and imports are not included.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

TIMEOUT = 15.0  # no scenario takes more than a few seconds; a hang must not stall the run
GAP = 0.02  # between scenarios: let the previous call's cleanup callbacks run

Scenario = dict[str, Any]
Peer = list[Any]
Stamp = list[float]
"""Where a call appends ``time.monotonic()`` the moment it has its connection."""


def addr_infos(triples: list[list[Any]]) -> list[tuple[Any, ...]]:
    """getaddrinfo 5-tuples from ``[family, host, port]`` triples."""
    return [
        (
            family,
            socket.SOCK_STREAM,
            socket.IPPROTO_TCP,
            "",
            (host, port, 0, 0) if family == socket.AF_INET6 else (host, port),
        )
        for family, host, port in triples
    ]


def peer_of(sock: socket.socket) -> Peer:
    """The connected socket's peer (address, port); closes the socket."""
    try:
        return list(sock.getpeername()[:2])
    finally:
        sock.close()


# -- one call per implementation; each returns the winner's peer, its socket closed ---------


async def call_happydial(sc: Scenario, stamp: Stamp) -> Peer:
    import happydial

    if sc["kind"] == "addrs":
        sock = await happydial.start_connection(
            addr_infos(sc["addr_infos"]),
            happy_eyeballs_delay=sc["delay"],
            interleave=sc["interleave"],
        )
    else:
        sock = await happydial.connect(
            sc["host"],
            sc["port"],
            happy_eyeballs_delay=sc["delay"],
            resolution_delay=sc["resolution_delay"],
            resolver=HTTPS_RESOLVERS[0] if sc.get("https") else None,
        )
    stamp.append(time.monotonic())
    return peer_of(sock)


async def call_aiohappyeyeballs(sc: Scenario, stamp: Stamp) -> Peer:
    import aiohappyeyeballs

    if sc["kind"] == "addrs":
        infos = addr_infos(sc["addr_infos"])
    else:  # a host name: what aiohttp does, the loop's getaddrinfo (AF_UNSPEC) first
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(sc["host"], sc["port"], type=socket.SOCK_STREAM)
    sock = await aiohappyeyeballs.start_connection(
        infos, happy_eyeballs_delay=sc["delay"], interleave=sc.get("interleave")
    )
    stamp.append(time.monotonic())
    return peer_of(sock)


async def call_asyncio(sc: Scenario, stamp: Stamp) -> Peer:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(
        asyncio.Protocol, sc["host"], sc["port"], happy_eyeballs_delay=sc["delay"]
    )
    stamp.append(time.monotonic())
    peer = list(transport.get_extra_info("peername")[:2])
    transport.abort()
    return peer


async def call_asyncio_open(sc: Scenario, stamp: Stamp) -> Peer:
    _, writer = await asyncio.open_connection(sc["host"], sc["port"])
    stamp.append(time.monotonic())
    peer = list(writer.get_extra_info("peername")[:2])
    writer.transport.abort()
    return peer


async def call_anyio(sc: Scenario, stamp: Stamp) -> Peer:
    import anyio
    from anyio.abc import SocketAttribute

    stream = await anyio.connect_tcp(sc["host"], sc["port"], happy_eyeballs_delay=sc["delay"])
    stamp.append(time.monotonic())
    peer = list(stream.extra(SocketAttribute.remote_address))[:2]  # noqa: S610 - not Django
    await stream.aclose()
    return peer


async def call_async_stagger(sc: Scenario, stamp: Stamp) -> Peer:
    import async_stagger  # type: ignore[import-untyped]

    sock: socket.socket = await async_stagger.create_connected_sock(
        sc["host"], sc["port"], delay=sc["delay"]
    )
    stamp.append(time.monotonic())
    return peer_of(sock)


async def call_floor(sc: Scenario, stamp: Stamp) -> Peer:
    loop = asyncio.get_running_loop()
    if sc["kind"] == "dns-floor":
        infos = await loop.getaddrinfo(sc["host"], 80, family=sc["family"], type=socket.SOCK_STREAM)
        stamp.append(time.monotonic())
        return [infos[0][4][0], 80]
    family = socket.AF_INET6 if ":" in sc["address"] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, (sc["address"], sc["port"]))
    except BaseException:
        sock.close()
        raise
    stamp.append(time.monotonic())
    return peer_of(sock)


ASYNCIO_CALLS: dict[str, Callable[[Scenario, Stamp], Awaitable[Peer]]] = {
    "happydial": call_happydial,
    "aiohappyeyeballs": call_aiohappyeyeballs,
    "asyncio": call_asyncio,
    "asyncio-open": call_asyncio_open,
    "anyio": call_anyio,
    "async_stagger": call_async_stagger,
    "floor": call_floor,
}


def failure(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


async def run_asyncio(impl: str, scenarios: list[Scenario]) -> dict[str, Any]:
    call = ASYNCIO_CALLS[impl]
    results: dict[str, Any] = {}
    for sc in scenarios:
        stamp: Stamp = []
        started = time.monotonic()
        peer: Peer | None = None
        error = None
        try:
            async with asyncio.timeout(TIMEOUT):
                peer = await call(sc, stamp)
        except Exception as exc:
            error = failure(exc)
        ended = stamp[0] if stamp else time.monotonic()
        results[sc["name"]] = {"elapsed": ended - started, "peer": peer, "error": error}
        await asyncio.sleep(GAP)
    return results


async def run_trio(scenarios: list[Scenario]) -> dict[str, Any]:
    import trio

    results: dict[str, Any] = {}
    for sc in scenarios:
        started = time.monotonic()
        peer: Peer | None = None
        error = None
        try:
            with trio.fail_after(TIMEOUT):
                stream = await trio.open_tcp_stream(
                    sc["host"], sc["port"], happy_eyeballs_delay=sc["delay"]
                )
            elapsed = time.monotonic() - started
            peer = list(stream.socket.getpeername()[:2])
            await stream.aclose()
        except Exception as exc:
            elapsed = time.monotonic() - started
            error = failure(exc)
        results[sc["name"]] = {"elapsed": elapsed, "peer": peer, "error": error}
        await trio.sleep(GAP)
    return results


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process if the harness dies first (a dead address's SYNs)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:
        sys.exit("the harness is gone")


MODULES = {"aiohappyeyeballs": "aiohappyeyeballs", "anyio": "anyio", "trio": "trio"}
MODULES |= {"happydial": "happydial", "async_stagger": "async_stagger"}


# happydial's HTTPS-record scenarios ask through DnspythonResolver(https=True), made (and
# dnspython imported) before anything is timed, as an application holds one resolver.
HTTPS_RESOLVERS: list[Any] = []


def main() -> None:
    spec = json.loads(sys.argv[1])
    if "parent" in spec:
        die_with_parent(spec["parent"])
    impl: str = spec["impl"]
    if impl in MODULES:  # imported here, so that no import is timed
        importlib.import_module(MODULES[impl])
    if impl == "happydial" and any(sc.get("https") for sc in spec["scenarios"]):
        import happydial

        HTTPS_RESOLVERS.append(happydial.DnspythonResolver(https=True))
    if impl == "trio":
        import trio

        results = trio.run(run_trio, spec["scenarios"])
    else:
        results = asyncio.run(run_asyncio(impl, spec["scenarios"]))
    sys.stdout.write(json.dumps({"results": results}) + "\n")


if __name__ == "__main__":
    main()
