"""Section 1: CPU and wall time per connection on loopback, against the bare floor.

Each implementation opens ``per_batch`` connections one after another to a listener
in this process, and the batch is timed with ``time.perf_counter`` (wall) and
``time.process_time`` (CPU, user + system, every thread). The implementations take
turns inside every round (their order rotates round to round), so a noisy neighbour
hits them all alike; figures are medians over the rounds, and ratios are the
median of each round's ratio to the floor measured in that same round.

What keeps the figures on the client's cost:

* The server does nothing while a batch is timed. The kernel completes loopback
  handshakes on its own and parks them in the listener's accept queue (backlog
  4096 > ``per_batch``); the harness accepts and closes them between batches,
  untimed. So the server's share is the kernel's handshake work, which is the
  same for every implementation.
* Winners are closed after the batch, untimed, with ``SO_LINGER`` 0 (an RST: no
  TIME_WAIT, so ports never run out over many rounds).
* ``gc.collect()`` runs before each batch, so a collection that one implementation's
  garbage triggered is not charged to the next one.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohappyeyeballs

import happydial
from bench import plot
from bench.common import (
    AddrInfo,
    Config,
    SectionReport,
    Target,
    addr_info,
    loop_factories,
    median,
    micros,
    raise_nofile,
    ratio,
    table,
)

Connect = Callable[[list[AddrInfo]], Awaitable[socket.socket]]

FLOOR = "floor"
DELAY = 0.25
SCENARIOS = ("single address", "two addresses, first wins")
TARGETS = {"single address": 1.02, "two addresses, first wins": 1.10}
_LINGER_RST = struct.pack("ii", 1, 0)


@dataclass
class Samples:
    """Per-connection seconds, one value per round."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


Key = tuple[str, str, str]  # (loop, scenario, implementation)


def _connectors(loop: asyncio.AbstractEventLoop) -> dict[str, Connect]:
    async def floor(addr_infos: list[AddrInfo]) -> socket.socket:
        # asyncio's own sock_connect on a fresh non-blocking socket: the least any
        # implementation must do. It tries the first address only.
        family, type_, proto, _, address = addr_infos[0]
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock

    # The delay aiohttp passes by default, with a single address too.
    return {
        FLOOR: floor,
        "happydial": functools.partial(happydial.start_connection, happy_eyeballs_delay=DELAY),
        "aiohappyeyeballs": functools.partial(
            aiohappyeyeballs.start_connection, happy_eyeballs_delay=DELAY
        ),
    }


async def _batch(
    connect: Connect, addr_infos: list[AddrInfo], count: int
) -> tuple[float, float, list[socket.socket]]:
    socks: list[socket.socket] = []
    append = socks.append
    gc.collect()
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    for _ in range(count):
        append(await connect(addr_infos))
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return wall / count, cpu / count, socks


def _clean_up(socks: list[socket.socket], listener: socket.socket) -> None:
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        sock.close()
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.close()


async def _rounds(loop_name: str, cfg: Config, samples: dict[Key, Samples]) -> None:
    loop = asyncio.get_running_loop()
    connectors = _connectors(loop)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        # The second address is never tried (the first connects well within DELAY).
        inputs = {
            SCENARIOS[0]: [addr_info("127.0.0.1", port)],
            SCENARIOS[1]: [addr_info("127.0.0.1", port), addr_info("127.0.0.2", port)],
        }
        names = list(connectors)
        for warm in range(-1, cfg.rounds):
            for scenario, addr_infos in inputs.items():
                shift = warm % len(names)
                for name in names[shift:] + names[:shift]:
                    count = max(cfg.per_batch // 5, 5) if warm < 0 else cfg.per_batch
                    wall, cpu, socks = await _batch(connectors[name], addr_infos, count)
                    _clean_up(socks, listener)
                    if warm >= 0:
                        entry = samples.setdefault((loop_name, scenario, name), Samples())
                        entry.wall.append(wall)
                        entry.cpu.append(cpu)


def measure(cfg: Config) -> dict[Key, Samples]:
    """Run every round on every loop; per-connection samples by key."""
    raise_nofile(cfg.per_batch + 256)
    samples: dict[Key, Samples] = {}
    factories = loop_factories()
    for loop_name in cfg.loops:
        with asyncio.Runner(loop_factory=factories[loop_name]) as runner:
            runner.run(_rounds(loop_name, cfg, samples))
    return samples


def _ratio_to_floor(samples: dict[Key, Samples], key: Key, what: str) -> float:
    floor = getattr(samples[(key[0], key[1], FLOOR)], what)
    mine = getattr(samples[key], what)
    return median([m / f for m, f in zip(mine, floor, strict=True)])


def run(cfg: Config) -> SectionReport:
    """Section 1."""
    samples = measure(cfg)
    rows: list[list[str]] = []
    targets: list[Target] = []
    cpu_ratios: dict[str, dict[str, float]] = {}
    for loop_name in cfg.loops:
        for scenario in SCENARIOS:
            for name in (FLOOR, "happydial", "aiohappyeyeballs"):
                key = (loop_name, scenario, name)
                cpu_r = _ratio_to_floor(samples, key, "cpu")
                wall_r = _ratio_to_floor(samples, key, "wall")
                rows.append(
                    [
                        loop_name,
                        scenario,
                        name,
                        micros(median(samples[key].cpu)),
                        ratio(cpu_r),
                        micros(median(samples[key].wall)),
                        ratio(wall_r),
                    ]
                )
                if name != FLOOR:
                    cpu_ratios.setdefault(name, {})[f"{loop_name}\n{scenario}"] = cpu_r
                if name == "happydial":
                    limit = TARGETS[scenario]
                    label = f"{loop_name}, {scenario}: happydial vs floor"
                    targets.append(Target(f"{label} (CPU)", cpu_r, limit))
                    targets.append(Target(f"{label} (wall)", wall_r, limit))
    header = ["loop", "addresses", "implementation", "CPU µs/conn", "CPU vs floor"]
    header += ["wall µs/conn", "wall vs floor"]
    text = [
        (
            f"{cfg.rounds} interleaved rounds x {cfg.per_batch} sequential connections per"
            f" implementation and scenario; happy_eyeballs_delay={DELAY} for both libraries"
            " (aiohttp's default); medians over the rounds. The floor is"
            " `loop.sock_connect` on a fresh non-blocking socket."
        ),
        "",
        table(header, rows),
    ]
    chart = plot.grouped_bars(
        cfg.out / "per_connection_cpu.png",
        cpu_ratios,
        title="CPU per connection, relative to bare sock_connect (lower is better)",
        ylabel="CPU time / floor",
        baseline=1.0,
        limits={group: TARGETS[group.split("\n")[1]] for group in next(iter(cpu_ratios.values()))},
    )
    return SectionReport(
        "Per-connection cost on loopback", "\n".join(text), targets, charts=[chart]
    )
