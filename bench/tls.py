"""Wrong certificate first, on loopback: time to a verified TLS connection (HEv3 part 1).

Two addresses of one name on one port: 127.0.0.1 serves a valid certificate for another
name, 127.0.0.2 the right one (the test suite's throwaway CA and listeners,
``tests/tls_helpers.py``; needs ``cryptography``). Compared, each run interleaved:

* ``happydial tls_in_race``: ``happydial.open_connection(..., tls_in_race=True)``.
* ``happydial, TLS after the race``: the same without ``tls_in_race`` (TCP wins on the
  first address, its handshake fails).
* ``asyncio.open_connection``: asyncio's own (first address, then its handshake fails).
* ``ideal``: a failed handshake with the wrong address then a good one with the right
  address, back to back, without any racing machinery: what RFC 8305 plus the draft's
  rule can at best achieve.

Run from the repository root with the project's venv::

    .venv/bin/python -m bench.tls [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import ssl
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.tls_helpers import NAME, Certificates, Listener, addr_info, listeners, make_certificates

import happydial


def _resolver(opened: list[Listener]) -> Callable[[str, int, int], Awaitable[list[Any]]]:
    async def resolve(host: str, port: int, family: int) -> list[Any]:  # noqa: ARG001 - the resolver's signature
        if family == socket.AF_INET6:
            raise socket.gaierror(socket.EAI_NODATA, "no AAAA")
        return [addr_info(listener.host, port) for listener in opened]

    return resolve


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, bool]:
    start = time.perf_counter()
    try:
        _, writer = await call()
    except OSError:
        return time.perf_counter() - start, False
    elapsed = time.perf_counter() - start
    writer.transport.abort()
    await asyncio.sleep(0.001)
    return elapsed, True


async def _ideal(ctx: ssl.SSLContext, port: int) -> tuple[Any, Any]:
    with contextlib.suppress(ssl.SSLError):
        await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=NAME)
    return await asyncio.open_connection("127.0.0.2", port, ssl=ctx, server_hostname=NAME)


async def measure(certs: Certificates, runs: int) -> dict[str, tuple[list[float], int]]:
    """Each contender's times (seconds) and how many of its runs connected."""
    ctx = certs.client_context()
    results: dict[str, tuple[list[float], int]] = {}
    with listeners(certs, "wrong", "good") as opened:
        port = opened[0].port
        resolve = _resolver(opened)
        loop = asyncio.get_running_loop()
        original = loop.getaddrinfo

        async def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
            if host == NAME:  # asyncio's own lookup sees the same two addresses
                return await resolve(host, port, socket.AF_INET)
            return await original(host, port, *args, **kwargs)

        loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign,assignment]
        contenders: dict[str, Callable[[], Awaitable[Any]]] = {
            "happydial tls_in_race": lambda: happydial.open_connection(
                NAME, port, ssl=ctx, tls_in_race=True, resolver=resolve
            ),
            "happydial, TLS after the race": lambda: happydial.open_connection(
                NAME, port, ssl=ctx, resolver=resolve
            ),
            "asyncio.open_connection": lambda: asyncio.open_connection(NAME, port, ssl=ctx),
            "ideal (no race)": lambda: _ideal(ctx, port),
        }
        for name in contenders:
            results[name] = ([], 0)
        for _ in range(runs):
            for name, call in contenders.items():
                elapsed, ok = await _timed(call)
                times, connected = results[name]
                times.append(elapsed)
                results[name] = (times, connected + ok)
    return results


def main() -> None:
    """Print one line per contender: median and p90 time, and how many runs connected."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    certs = make_certificates(Path(tempfile.mkdtemp()))
    results = asyncio.run(measure(certs, args.runs))
    ideal = statistics.median(results["ideal (no race)"][0])
    print(f"{'contender':32} {'median ms':>10} {'p90 ms':>8} {'vs ideal':>9}  verified")
    for name, (times, connected) in results.items():
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        print(
            f"{name:32} {median * 1000:10.2f} {p90 * 1000:8.2f} {median / ideal:8.2f}x"
            f"  {connected}/{len(times)}"
        )


if __name__ == "__main__":
    main()
