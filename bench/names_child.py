"""Section 5's child: connect by host name with one implementation, print one JSON line.

Usage: ``python -m bench.names_child '<spec>'``, from the repository root; ``bench/names.py``
runs it in a mount namespace whose ``/etc/hosts`` is a private file, or in the network
lab's client namespace. The spec is a JSON object:

* ``impl``: ``happydial`` (``connect`` with the default resolver), ``happydial-aiodns``,
  ``happydial-dnspython`` (``connect`` with that resolver), ``aiohappyeyeballs``
  (``loop.getaddrinfo`` then ``start_connection``, what aiohttp does) or ``asyncio``
  (``asyncio.open_connection``);
* ``hosts``: the names, connected to in this order (``seq``) or all at once (``conc``);
* ``port``, ``mode`` (``seq`` or ``conc``), ``warmup``: names connected to first, untimed.

It imports the standard library and the implementation under test only (and
``bench.race_child``'s stdlib-only RSS probe), so the process's peak RSS and thread count
are the implementation's. Output: ``wall`` and ``cpu`` seconds for the timed part,
``threads``: the most threads the process had at once while timed (sampled every
millisecond, main thread included), ``base_threads`` before the warm-up, ``rss_kib`` (peak),
``errors`` and ``families`` (how many winners were IPv6 / IPv4).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.race_child import _peak_rss_kib

LINGER_0 = struct.pack("ii", 1, 0)
SAMPLE_EVERY = 0.001

Connect = Callable[[str, int], Awaitable[int]]
"""Connects by name, closes the connection at once (no TIME_WAIT), returns its family."""


def _threads() -> int:
    return sum(1 for _ in Path("/proc/self/task").iterdir())


def make_connect(impl: str) -> Connect:
    """The coroutine function that connects by name and returns the socket."""
    if impl.startswith("happydial"):
        import happydial

        resolver: Any = None
        if impl == "happydial-aiodns":
            resolver = happydial.AiodnsResolver()
        elif impl == "happydial-dnspython":
            resolver = happydial.DnspythonResolver()

        async def call_happydial(host: str, port: int) -> int:
            return close(await happydial.connect(host, port, resolver=resolver))

        return call_happydial
    if impl == "aiohappyeyeballs":
        import aiohappyeyeballs

        async def call_aiohappyeyeballs(host: str, port: int) -> int:
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            sock = await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=0.25)
            return close(sock)

        return call_aiohappyeyeballs
    if impl == "asyncio":

        async def call_asyncio(host: str, port: int) -> int:
            _, writer = await asyncio.open_connection(host, port)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            family: int = sock.family
            writer.transport.abort()
            return family

        return call_asyncio
    raise SystemExit(f"unknown implementation {impl!r}")


def close(sock: socket.socket) -> int:
    family: int = sock.family
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)  # no TIME_WAIT
    sock.close()
    return family


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    base = _threads()
    connect = make_connect(spec["impl"])
    port = spec["port"]
    families: Counter[str] = Counter()
    errors: Counter[str] = Counter()

    async def one(host: str) -> None:
        try:
            family = await connect(host, port)
        except OSError as exc:
            errors[f"{type(exc).__name__}: {exc}".replace(host, "<host>")[:200]] += 1
        else:
            families["IPv6" if family == socket.AF_INET6 else "IPv4"] += 1

    for host in spec["warmup"]:
        await one(host)
    families.clear()
    peak = [_threads()]

    def sample() -> None:
        peak[0] = max(peak[0], _threads())
        handle[0] = loop.call_later(SAMPLE_EVERY, sample)

    handle = [loop.call_later(SAMPLE_EVERY, sample)]
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    if spec["mode"] == "seq":
        for host in spec["hosts"]:
            await one(host)
    else:
        await asyncio.gather(*(one(host) for host in spec["hosts"]))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    handle[0].cancel()
    peak[0] = max(peak[0], _threads())
    return {
        "wall": wall,
        "cpu": cpu,
        "threads": peak[0],
        "base_threads": base,
        "rss_kib": _peak_rss_kib(),
        "errors": dict(errors),
        "families": dict(families),
    }


if __name__ == "__main__":
    result = asyncio.run(main(json.loads(sys.argv[1])))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # do not wait for anything an implementation left running
