"""A storm of real races on loopback, on asyncio and uvloop (issue 9).

Thousands of concurrent start_connection calls against live listeners, dead ones
(a full accept queue: the kernel drops the SYNs, so a connect hangs as towards a
black hole) and refusing addresses (closed ports), over IPv4 and IPv6 loopback,
with random attempt delays and random cancellations. After every batch the process
has exactly the descriptors it had before, the loop holds nothing, and no socket
was left to the garbage collector (a ResourceWarning is an error).

The CI size is 10,000 races per loop; ``HAPPYDIAL_SOAK=1`` runs ten times more.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import resource
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from happydial import AddrInfoType, failed_addr_infos, start_connection

from .conftest import Runner, _leftovers, machine_has, open_fds
from .integration_helpers import has_ipv6_loopback

SOAK = os.environ.get("HAPPYDIAL_SOAK", "") not in ("", "0")
RACES_PER_LOOP = 10_000 * (10 if SOAK else 1)
BATCH = 250  # concurrent races; each may hold up to four sockets


def addr_info(host: str, port: int) -> AddrInfoType:
    if ":" in host:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


@dataclass
class Targets:
    live: list[AddrInfoType] = field(default_factory=list)
    dead: list[AddrInfoType] = field(default_factory=list)
    refused: list[AddrInfoType] = field(default_factory=list)
    listeners: list[socket.socket] = field(default_factory=list)
    fillers: list[socket.socket] = field(default_factory=list)

    def drain(self) -> int:
        """Accept and close what the live listeners queued; how many there were."""
        count = 0
        for srv in self.listeners[: len(self.live)]:
            while True:
                try:
                    conn, _ = srv.accept()
                except BlockingIOError:
                    break
                conn.close()
                count += 1
        return count


def _listener(family: int, host: str, backlog: int) -> socket.socket:
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(backlog)
    srv.setblocking(False)
    return srv


@pytest.fixture
def targets() -> Iterator[Targets]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < want:  # pragma: no cover - depends on the machine
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    families = [(socket.AF_INET, "127.0.0.1", "127.0.0.2", "127.0.0.3")]
    if machine_has(has_ipv6_loopback(), "no IPv6 loopback"):
        families.append((socket.AF_INET6, "::1", "::1", "::1"))
    t = Targets()
    live_listeners = []
    for family, live_host, _, _ in families:
        srv = _listener(family, live_host, 4096)
        live_listeners.append(srv)
        t.live.append(addr_info(live_host, srv.getsockname()[1]))
    t.listeners.extend(live_listeners)
    for family, _, dead_host, refused_host in families:
        srv = _listener(family, dead_host, 0)
        t.listeners.append(srv)
        port = srv.getsockname()[1]
        for _ in range(4):  # fill the accept queue and the SYN backlog
            filler = socket.socket(family, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex((dead_host, port))
            t.fillers.append(filler)
        t.dead.append(addr_info(dead_host, port))
        probe = socket.socket(family, socket.SOCK_STREAM)
        probe.bind((refused_host, 0))
        t.refused.append(addr_info(refused_host, probe.getsockname()[1]))
        probe.close()
    yield t
    for sock in t.fillers + t.listeners:
        sock.close()
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class Race:
    addrs: list[AddrInfoType]
    delay: float | None
    timeout: float | None
    cancel_after: float | None
    cancelled: bool = False
    task: asyncio.Task[socket.socket] | None = None

    def cancel(self) -> None:
        assert self.task is not None
        # Only a cancellation that reached a running call must come back out of it.
        self.cancelled = self.task.cancel()


def random_race(rng: random.Random, t: Targets) -> Race:
    pool = [("live", a) for a in t.live] + [("dead", a) for a in t.dead]
    pool += [("refused", a) for a in t.refused]
    picked = rng.sample(pool, rng.randint(1, min(4, len(pool))))
    kinds = {kind for kind, _ in picked}
    delay = rng.choice([0.0, 0.002, 0.01, 0.03, None])
    timeout = None
    if "live" not in kinds or (delay is None and "dead" in kinds):
        # Something must end a race whose live address may sit behind a dead one.
        timeout = rng.choice([0.01, 0.03])
    cancel_after = rng.choice([0.0, rng.uniform(0, 0.005), rng.uniform(0, 0.03)])
    return Race(
        [a for _, a in picked],
        delay,
        timeout,
        cancel_after if rng.random() < 0.3 else None,
    )


async def run_batch(loop: asyncio.AbstractEventLoop, races: list[Race]) -> dict[str, int]:
    handles = []
    for race in races:
        race.task = loop.create_task(
            start_connection(
                race.addrs, happy_eyeballs_delay=race.delay, attempt_timeout=race.timeout
            )
        )
        if race.cancel_after is not None:
            handles.append(loop.call_later(race.cancel_after, race.cancel))
    results = await asyncio.gather(*(r.task for r in races if r.task), return_exceptions=True)
    for handle in handles:
        handle.cancel()
    tally = {"connected": 0, "failed": 0, "cancelled": 0}
    for race, result in zip(races, results, strict=True):
        live = {a[4][:2] for a in race.addrs}
        if isinstance(result, socket.socket):
            assert not race.cancelled, "a cancelled call returned a socket"
            peer = result.getpeername()[:2]
            result.close()
            assert peer in live
            tally["connected"] += 1
        elif isinstance(result, asyncio.CancelledError):
            assert race.cancelled, "CancelledError without a cancellation"
            tally["cancelled"] += 1
        else:
            assert not race.cancelled, f"the caller's cancellation was lost: {result!r}"
            assert isinstance(result, OSError), repr(result)
            assert failed_addr_infos(result), repr(result)
            tally["failed"] += 1
    return tally


def storm(run: Runner[Any], t: Targets, total: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    totals = {"connected": 0, "failed": 0, "cancelled": 0}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)
        gc.collect()
        baseline = open_fds()
        done = 0
        while done < total:
            races = [random_race(rng, t) for _ in range(min(BATCH, total - done))]
            tally = await run_batch(loop, races)
            for key, value in tally.items():
                totals[key] += value
            done += len(races)
            await asyncio.sleep(0)
            assert not _leftovers(loop), _leftovers(loop)
            t.drain()
            gc.collect()  # a socket left to the collector warns (an error here)
            leaked = open_fds() - baseline
            assert not leaked, f"descriptors left open after {done} races: {sorted(leaked)}"

    run(main)
    t.drain()
    return totals


def test_storm(run: Runner[Any], targets: Targets) -> None:
    totals = storm(run, targets, RACES_PER_LOOP, seed=8305)
    # The mix really exercised every ending.
    assert all(count > RACES_PER_LOOP // 20 for count in totals.values()), totals
