"""Section 2: N concurrent races whose first address is dead and second is live.

The dead address is a listener with ``listen(0)`` whose accept queue a filler
connection has filled: Linux then drops further SYNs, so a connect to it hangs (as
to a black-holed IPv6 address) until the implementation gives up on it. The live
address is another loopback address (127.0.0.x) with a large backlog. Every race
therefore waits ``delay``, starts its second attempt, wins with it and must cancel
and close the first.

Both listeners live in this (the parent) process, with a thread accepting on the
live one; each implementation runs in its own child process (``race_child.py``), so
its CPU time, peak RSS (``VmHWM``) and descriptor count are its alone. Runs of
the two implementations alternate, and each gets fresh listeners (fresh ports, so
no TIME_WAIT from an earlier run gets in the way). A third run, ``floor``, is a
minimal hand-written race in the child, to show how much of the cost no
implementation can avoid.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from bench import plot
from bench.common import IMPLS, Config, SectionReport, Target, median, raise_nofile, ratio, table

DEAD_HOST = "127.0.0.2"
LIVE_HOST = "127.0.0.3"
REPO = Path(__file__).resolve().parent.parent
TARGET_CPU = 0.5
TARGET_WALL = 0.5
TARGET_RSS = 0.6
TARGET_SIZE = 5_000  # the size the targets are stated for; smaller N are shown for scale
FLOOR = "floor"
RUNS = (FLOOR, *IMPLS)
"""``floor`` is race_child's minimal hand-written race: a scale, not a competitor."""


class Listeners:
    """A dead listener (full accept queue) and a live one drained by a thread."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._stop = threading.Event()
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.dead = self._listener(DEAD_HOST, 0)
        self.live = self._listener(LIVE_HOST, 4096)

    def _listener(self, host: str, backlog: int) -> socket.socket:
        sock = self._stack.enter_context(socket.socket())
        sock.bind((host, 0))
        sock.listen(backlog)
        return sock

    def address(self, sock: socket.socket) -> str:
        host, port = sock.getsockname()
        return f"{host}:{port}"

    def __enter__(self) -> Self:
        # listen(0) admits one connection to the accept queue; two fillers make sure
        # it is full, so the kernel drops every later SYN to this port.
        for _ in range(2):
            filler = self._stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(self.dead.getsockname())
        self.live.settimeout(0.05)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        # Accepted sockets stay open until the child has exited: closing them first
        # could turn a client's fresh connection into a reset one.
        while not self._stop.is_set():
            try:
                conn, _ = self.live.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._accepted.append(conn)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._accepted:
            conn.close()
        self._stack.close()


@dataclass(frozen=True)
class ChildResult:
    wall: float
    cpu: float
    maxrss_kib: int
    rss_growth_kib: int
    fds_at_return: int
    fds_settled: int
    errors: int
    wins_live: int


def run_child(impl: str, count: int, delay: float, loop: str = "asyncio") -> ChildResult:
    """One implementation, *count* concurrent races, in a fresh child process."""
    with Listeners() as servers:
        args = [sys.executable, "-m", "bench.race_child", impl, str(count), str(delay)]
        args += [servers.address(servers.dead), servers.address(servers.live), "--loop", loop]
        proc = subprocess.run(
            args, cwd=REPO, capture_output=True, text=True, check=False, timeout=600
        )
    if proc.returncode != 0:
        raise RuntimeError(f"race child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    if data["errors"]:
        print(f"  {impl} N={count}: {data['errors']} races failed: {data['error_kinds']}")
    fields = ChildResult.__dataclass_fields__
    return ChildResult(**{k: v for k, v in data.items() if k in fields})


def measure(cfg: Config) -> dict[tuple[str, int], list[ChildResult]]:
    """Every size, ``race_reps`` times per implementation, implementations alternating."""
    raise_nofile(2 * max(cfg.race_sizes) + 1024)  # the accepted live connections
    results: dict[tuple[str, int], list[ChildResult]] = {}
    for count in cfg.race_sizes:
        for rep in range(cfg.race_reps):
            shift = rep % len(RUNS)
            for impl in RUNS[shift:] + RUNS[:shift]:
                results.setdefault((impl, count), []).append(run_child(impl, count, cfg.race_delay))
    return results


def _ratio_row(
    count: int, mine: dict[str, float], other: dict[str, float], name: str, delay: float
) -> list[str]:
    return [
        f"{count:,}",
        f"**happydial / {name}**",
        ratio(mine["cpu"] / other["cpu"]),
        ratio(mine["wall"] / other["wall"]),
        ratio((mine["wall"] - delay) / (other["wall"] - delay)),
        ratio(mine["rss"] / other["rss"]),
        ratio(mine["growth"] / max(other["growth"], 1)),
        "",
        "",
    ]


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def run(cfg: Config) -> SectionReport:
    """Section 2."""
    results = measure(cfg)
    rows: list[list[str]] = []
    targets: list[Target] = []
    panels: dict[str, dict[str, list[float]]] = {
        "CPU time (s)": {},
        "wall time (s)": {},
        "peak RSS (MiB)": {},
        "RSS growth during the races (MiB)": {},
    }
    for count in cfg.race_sizes:
        med: dict[str, dict[str, float]] = {}
        for impl in RUNS:
            runs = results[(impl, count)]
            med[impl] = {
                "wall": median([r.wall for r in runs]),
                "cpu": median([r.cpu for r in runs]),
                "rss": median([r.maxrss_kib for r in runs]),
                "growth": median([r.rss_growth_kib for r in runs]),
            }
            worst_fds = max(r.fds_at_return for r in runs)
            worst_settled = max(r.fds_settled for r in runs)
            live = min(r.wins_live for r in runs)
            rows.append(
                [
                    f"{count:,}",
                    impl,
                    f"{med[impl]['cpu']:.3f}",
                    f"{med[impl]['wall']:.3f}",
                    f"{med[impl]['wall'] - cfg.race_delay:.3f}",
                    _mib(med[impl]["rss"]),
                    _mib(med[impl]["growth"]),
                    f"{worst_fds} / {worst_settled}",
                    f"{live:,}/{count:,}",
                ]
            )
            for panel, metric, scale in (
                ("CPU time (s)", "cpu", 1.0),
                ("wall time (s)", "wall", 1.0),
                ("peak RSS (MiB)", "rss", 1 / 1024),
                ("RSS growth during the races (MiB)", "growth", 1 / 1024),
            ):
                panels[panel].setdefault(impl, []).append(med[impl][metric] * scale)
        mine, peer = med["happydial"], med["aiohappyeyeballs"]
        rows.extend(
            _ratio_row(count, mine, med[other], other, cfg.race_delay)
            for other in ("aiohappyeyeballs", FLOOR)
        )
        if count != TARGET_SIZE:
            continue  # the targets (issue: racer, Speed) are stated for 5,000 races
        label = f"N={count:,}: happydial vs aiohappyeyeballs"
        targets += [
            Target(f"{label}, CPU", mine["cpu"] / peer["cpu"], TARGET_CPU),
            Target(f"{label}, wall", mine["wall"] / peer["wall"], TARGET_WALL),
            Target(f"{label}, peak RSS", mine["rss"] / peer["rss"], TARGET_RSS),
        ]
    header = ["races", "implementation", "CPU s", "wall s", "wall - delay s", "peak RSS MiB"]
    header += ["RSS growth MiB", "fds left (return / +0.1 s)", "won by live address"]
    text = [
        (
            f"N concurrent `start_connection([dead, live], happy_eyeballs_delay={cfg.race_delay})`"
            f" calls under one `asyncio.gather`, each implementation in its own child process;"
            f" medians of {cfg.race_reps} run(s), the implementations taking turns. CPU and wall"
            " cover the gather only"
            " (not interpreter start-up or imports). Peak RSS is the child's high-water mark"
            " (`VmHWM`, the interpreter and the imported library included); RSS growth is that"
            " mark after the races minus before them (the races' own"
            " memory, without the interpreter's). fds left: descriptors open beyond the"
            " pre-race count after every winner was closed (worst run), right at return and"
            " 0.1 s later. *floor* is a minimal hand-written race (two sockets, two"
            " connects, one timer; no validation, no error handling): what any"
            " implementation must pay, shown for scale."
        ),
        "",
        table(header, rows),
    ]
    chart = plot.lines_by_size(
        cfg.out / "concurrent_races.png",
        cfg.race_sizes,
        panels,
        title=f"Concurrent races, first address dead (delay {cfg.race_delay} s; lower is better)",
    )
    return SectionReport(
        "Concurrent races, first address dead", "\n".join(text), targets, charts=[chart]
    )
