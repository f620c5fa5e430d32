"""Section 2's child: run N concurrent races with one implementation, print one JSON line.

Usage: ``python -m bench.race_child IMPL N DELAY DEAD_HOST:PORT LIVE_HOST:PORT [--loop L]``.

IMPL is happydial, aiohappyeyeballs, or floor (a minimal hand-written race, for scale).
It imports the standard library and the one implementation under test, nothing else
(not even ``bench.common``), so its peak RSS is that implementation's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Start = Callable[..., Awaitable[socket.socket]]


def _fds() -> int:
    folder = "/proc/self/fd" if Path("/proc/self/fd").is_dir() else "/dev/fd"
    return sum(1 for _ in Path(folder).iterdir())


def _peak_rss_kib() -> int:
    """This process's peak resident set size, KiB.

    Linux: ``VmHWM`` of this process's own memory map. Not ``ru_maxrss``: that one
    survives ``exec``, and the parent's ``subprocess`` starts us with ``vfork``, so it
    would start at the *parent's* peak (the harness, matplotlib and all).
    """
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return value // 1024 if os.uname().sysname == "Darwin" else value  # bytes there
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _addr_info(spec: str) -> tuple[int, int, int, str, tuple[str, int]]:
    host, _, port = spec.rpartition(":")
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, int(port)))


async def _floor_race(
    addr_infos: list[tuple[int, int, int, str, tuple[str, int]]], *, happy_eyeballs_delay: float
) -> socket.socket:
    """The least a two-address race must do: two sockets, two connects, one timer.

    No validation, no error handling (the harness knows the second address answers),
    just the kernel and event-loop work any implementation has to pay for.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()
    socks: list[socket.socket] = []

    def on_writable(sock: socket.socket) -> None:
        loop.remove_writer(sock.fileno())
        if not done.done() and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            done.set_result(sock)

    def attempt(index: int) -> None:
        family, type_, proto, _, address = addr_infos[index]
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        socks.append(sock)
        sock.connect_ex(address)
        loop.add_writer(sock.fileno(), on_writable, sock)

    attempt(0)
    timer = loop.call_later(happy_eyeballs_delay, attempt, 1)
    try:
        winner = await done
    finally:
        timer.cancel()
        won = done.result() if done.done() and not done.cancelled() else None
        for sock in socks:
            if sock is not won:
                loop.remove_writer(sock.fileno())
                sock.close()
    return winner


def _importer(impl: str) -> Start:
    if impl == "floor":
        return _floor_race
    if impl == "happydial":
        import happydial

        start: Start = happydial.start_connection
        return start
    if impl == "aiohappyeyeballs":
        import aiohappyeyeballs

        return aiohappyeyeballs.start_connection
    raise SystemExit(f"unknown implementation {impl!r}")


async def _races(start: Start, count: int, delay: float, dead: str, live: str) -> dict[str, Any]:
    addr_infos = [_addr_info(dead), _addr_info(live)]
    live_host = addr_infos[1][4][0]
    gc.collect()
    fds0 = _fds()
    rss0 = _peak_rss_kib()
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    results = await asyncio.gather(
        *(start(addr_infos, happy_eyeballs_delay=delay) for _ in range(count)),
        return_exceptions=True,
    )
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    rss1 = _peak_rss_kib()
    socks = [r for r in results if isinstance(r, socket.socket)]
    errors = sorted({repr(r) for r in results if not isinstance(r, socket.socket)})
    wins_live = sum(1 for s in socks if s.getpeername()[0] == live_host)
    for sock in socks:
        sock.close()
    fds_at_return = _fds() - fds0
    await asyncio.sleep(0.1)
    return {
        "wall": wall,
        "cpu": cpu,
        "maxrss_kib": rss1,
        "rss_growth_kib": rss1 - rss0,
        "fds_at_return": fds_at_return,
        "fds_settled": _fds() - fds0,
        "errors": len(results) - len(socks),
        "error_kinds": errors[:5],
        "wins_live": wins_live,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("impl")
    parser.add_argument("count", type=int)
    parser.add_argument("delay", type=float)
    parser.add_argument("dead")
    parser.add_argument("live")
    parser.add_argument("--loop", default="asyncio")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 3 * args.count + 256
    if soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    start = _importer(args.impl)
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(_races(start, args.count, args.delay, args.dead, args.live))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
