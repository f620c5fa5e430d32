"""Section 9: ``happydial.sync`` (Happy Eyeballs for blocking code) against the stdlib.

Issue 18's three targets, each against ``socket.create_connection``:

1. *CPU per connection*, one healthy loopback address: the implementations take turns
   inside every round (the order rotating), each opening a batch of connections one
   after the other, timed with ``time.process_time`` (CPU, every thread) and
   ``time.perf_counter``. As in ``percall.py`` nothing serves while a batch is timed
   (the kernel parks the handshakes in the accept queue; the harness accepts and
   closes them between batches), winners are closed with ``SO_LINGER`` 0 after the
   batch, untimed, and ``gc.collect()`` runs before each batch. The figure is the
   median over rounds of each round's ratio to ``socket.create_connection``.
2. *Threads*: 200 threads each opening 50 connections with
   ``sync.create_connection(("localhost", port))`` (a listener on 127.0.0.1 only:
   where ``::1`` exists its attempt is refused and 127.0.0.1 wins, so every call
   races and closes a loser). Descriptors (``/proc/self/fd``) and threads
   (``/proc/self/task``) before and after: anything left is a leak.
3. *Dead IPv6 first, live IPv4*, in the network lab (section 4's; root only): the
   time to connect against the RFC 8305 ideal, and ``socket.create_connection``'s,
   which waits for its whole timeout on the dead address (bounded at 2 s here).
"""

from __future__ import annotations

import gc
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Config, SectionReport, Target, median, micros, ratio, table
from happydial import sync

TITLE = "Blocking code: happydial.sync against socket.create_connection"
CPU_LIMIT = 1.10
LAB_LIMIT = 1.05  # issue 18: the RFC ideal plus 5 %
DELAY = sync.DEFAULT_DELAY
LAB_RTT = 0.04
STDLIB_TIMEOUT = 2.0  # the stdlib's connect timeout in the lab: it waits for all of it
LINGER_RST = struct.pack("ii", 1, 0)

Connect = Callable[[int], socket.socket]


def _stdlib(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port))


def _create(port: int) -> socket.socket:
    return sync.create_connection(("127.0.0.1", port))


def _start(port: int) -> socket.socket:
    entry = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))
    return sync.start_connection([entry])


IMPLS: dict[str, Connect] = {
    "socket.create_connection": _stdlib,
    "sync.create_connection": _create,
    "sync.start_connection": _start,
}


def _close_rst(sock: socket.socket) -> None:
    """Close without TIME_WAIT, so that thousands of connections never run out of ports."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    sock.close()


def _batch(connect: Connect, port: int, size: int) -> tuple[float, float]:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    socks = [connect(port) for _ in range(size)]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    for sock in socks:
        _close_rst(sock)
    return cpu / size, wall / size


def _drain(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        _close_rst(conn)


def per_connection(rounds: int, size: int) -> dict[str, dict[str, list[float]]]:
    """Per implementation: ``cpu`` and ``wall`` seconds per connection, ``ratio`` (CPU)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    names = list(IMPLS)
    out: dict[str, dict[str, list[float]]] = {
        name: {"cpu": [], "wall": [], "ratio": []} for name in names
    }
    try:
        for round_ in range(rounds):
            shift = round_ % len(names)
            this: dict[str, float] = {}
            for name in names[shift:] + names[:shift]:
                cpu, wall = _batch(IMPLS[name], port, size)
                _drain(listener)
                this[name] = cpu
                out[name]["cpu"].append(cpu)
                out[name]["wall"].append(wall)
            for name in names:
                out[name]["ratio"].append(this[name] / this[names[0]])
    finally:
        listener.close()
    return out


def _count(folder: str) -> int:
    return sum(1 for _ in Path(folder).iterdir())


def threads(count: int, each: int) -> dict[str, Any]:
    """*count* threads, each opening *each* connections to ``localhost``; what is left."""
    gc.collect()
    fds, tasks = _count("/proc/self/fd"), _count("/proc/self/task")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.settimeout(0.05)
    port = listener.getsockname()[1]
    done = threading.Event()
    errors: list[str] = []
    made = [0] * count

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.close()  # gracefully: a reset could reach a client still in its connect

    def client(slot: int) -> None:
        try:
            for _ in range(each):
                _close_rst(sync.create_connection(("localhost", port), timeout=30))
                made[slot] += 1
        except Exception as exc:
            errors.append(repr(exc))

    server = threading.Thread(target=serve)
    server.start()
    started = time.perf_counter()
    clients = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    wall = time.perf_counter() - started
    done.set()
    server.join()
    listener.close()
    gc.collect()
    return {
        "connections": sum(made),
        "wall": wall,
        "fds_left": _count("/proc/self/fd") - fds,
        "tasks_left": _count("/proc/self/task") - tasks,
        "errors": errors,
    }


def lab_times(rounds: int) -> tuple[dict[str, list[float]], list[str]] | str:
    """Seconds per call in the lab, dead IPv6 and live IPv4; or why there is no lab."""
    from tests.lab.netns import DEAD, PORT, Lab, LabUnavailableError, Rule

    try:
        lab = Lab.start()
    except LabUnavailableError as exc:
        return str(exc)
    problems: list[str] = []
    times: dict[str, list[float]] = {}
    try:
        (v6,), (v4,) = lab.allocate(v6=1, v4=1)
        host = "sync-bench.lab.test"
        zone = {host: {"AAAA": {"addresses": [v6]}, "A": {"addresses": [v4]}}}
        lab.configure(rules={v6: DEAD, v4: Rule(rtt=LAB_RTT)}, live=[v6, v4], zone=zone)
        bounded = {"timeout": STDLIB_TIMEOUT}
        six, four = socket.AF_INET6, socket.AF_INET
        specs: dict[str, dict[str, Any]] = {
            "rtt": {"call": "stdlib", "host": v4, "port": PORT, "kwargs": {"timeout": 5.0}},
            "lookup": {"call": "getaddrinfo", "host": host, "families": [six]},
            "start": {"call": "sync", "addr_infos": [[six, v6, PORT], [four, v4, PORT]]},
            "create": {"call": "sync", "host": host, "port": PORT, "kwargs": bounded},
            "stdlib": {"call": "stdlib", "host": host, "port": PORT, "kwargs": bounded},
        }
        names = list(specs)
        times = {name: [] for name in names}
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                report = lab.run_client({"loop": "asyncio", **specs[name]})
                if report.get("error") is not None:
                    problems.append(f"{name}: {report['error']}")
                elif name != "lookup" and report.get("peer") != [v4, PORT]:
                    problems.append(f"{name}: connected to {report.get('peer')}, not {v4}")
                if report.get("leaked"):
                    problems.append(f"{name}: descriptors left open {report['leaked']}")
                times[name].append(report["elapsed"])
    finally:
        lab.close()
    return times, problems


def _spread(values: list[float]) -> str:
    """The middle half of *values* (quartiles), as ratios."""
    if len(values) < 4:
        return "-"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:.3f}-{q3:.3f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def render_cpu(data: dict[str, dict[str, list[float]]], rounds: int, size: int) -> list[str]:
    rows = [
        [
            f"`{name}`",
            micros(median(values["cpu"])),
            micros(median(values["wall"])),
            ratio(median(values["ratio"])),
            _spread(values["ratio"]),
        ]
        for name, values in data.items()
    ]
    return [
        "### CPU per connection, one healthy loopback address",
        "",
        (
            f"{rounds} rounds of {size} connections to 127.0.0.1 per implementation, the order"
            " rotating; medians. *vs stdlib*: the median of each round's CPU ratio;"
            " *spread*: its quartiles (the machine is shared: expect a few percent of noise)."
        ),
        "",
        table(["call", "CPU µs/conn", "wall µs/conn", "vs stdlib (CPU)", "spread"], rows),
    ]


def render_threads(result: dict[str, Any], count: int, each: int) -> list[str]:
    rows = [
        ["connections made", f"{result['connections']} of {count * each}"],
        ["wall s", f"{result['wall']:.2f}"],
        ["descriptors left open", str(result["fds_left"])],
        ["threads left behind", str(result["tasks_left"])],
        ["errors", "; ".join(sorted(set(result["errors"]))[:3]) or "none"],
    ]
    return [
        "### Threads",
        "",
        (
            f'{count} threads, each making {each} `sync.create_connection(("localhost", port))`'
            " calls one after the other (each races ::1, refused, and 127.0.0.1)."
        ),
        "",
        table(["", ""], rows),
    ]


def render_lab(times: dict[str, list[float]], problems: list[str], rounds: int) -> list[str]:
    rtt, lookup = median(times["rtt"]), median(times["lookup"])
    ideal_start = DELAY + rtt
    ideal_create = lookup + DELAY + rtt
    rows = [
        [
            "`sync.start_connection([dead v6, v4])`",
            _ms(median(times["start"])),
            _ms(ideal_start),
            ratio(median(times["start"]) / ideal_start),
        ],
        [
            "`sync.create_connection((name, port), timeout=2)`",
            _ms(median(times["create"])),
            _ms(ideal_create),
            ratio(median(times["create"]) / ideal_create),
        ],
        [
            "`socket.create_connection((name, port), timeout=2)`",
            _ms(median(times["stdlib"])),
            _ms(ideal_create),
            ratio(median(times["stdlib"]) / ideal_create),
        ],
        ["floor: `socket.create_connection` to the IPv4 literal (one RTT)", _ms(rtt), "", ""],
        ["floor: one AAAA `getaddrinfo` of the name", _ms(lookup), "", ""],
    ]
    text = [
        "### Dead IPv6 first, live IPv4 (network lab)",
        "",
        (
            f"The IPv6 address drops every packet, the IPv4 one answers after {LAB_RTT * 1000:.0f}"
            " ms; the name has both (AAAA first, as glibc sorts it). Each call in a fresh client"
            f" process in the lab's client namespace, {rounds} round(s), medians;"
            " `time.monotonic()` around the call. *Ideal*: an exact RFC 8305 client,"
            f" the {DELAY * 1000:.0f} ms delay plus the floors measured in the same rounds"
            " (plus the lookup for a name). The stdlib tries the dead address first and waits"
            f" for its whole timeout ({STDLIB_TIMEOUT:.0f} s here; the OS default is minutes)."
        ),
        "",
        table(["call", "ms", "ideal ms", "vs ideal"], rows),
    ]
    if problems:
        text += ["", "Problems:", "", *(f"- {p}" for p in problems)]
    return text


def run(cfg: Config) -> SectionReport:
    """Section 9."""
    rounds, size = cfg.rounds, cfg.per_batch
    count, each, lab_rounds = (20, 5, 1) if cfg.quick else (200, 50, 5)
    cpu = per_connection(rounds, size)
    storm = threads(count, each)
    measured = median(cpu["sync.create_connection"]["ratio"])
    load = f"{count} threads x {each}"
    targets = [
        Target("sync: create_connection CPU / socket.create_connection", measured, CPU_LIMIT),
        # Counts, not ratios: 1 + what was left, against 1 (nothing left).
        Target(f"sync: 1 + descriptors left ({load})", 1 + storm["fds_left"], 1.0),
        Target(f"sync: 1 + threads left ({load})", 1 + storm["tasks_left"], 1.0),
    ]
    text = [*render_cpu(cpu, rounds, size), "", *render_threads(storm, count, each), ""]
    lab = lab_times(lab_rounds)
    if isinstance(lab, str):
        text += ["### Dead IPv6 first, live IPv4 (network lab)", "", f"Skipped: {lab}."]
    else:
        times, problems = lab
        text += render_lab(times, problems, lab_rounds)
        rtt, lookup = median(times["rtt"]), median(times["lookup"])
        targets += [
            Target(
                "sync: dead IPv6 first, pre-resolved / RFC ideal",
                median(times["start"]) / (DELAY + rtt),
                LAB_LIMIT,
            ),
            Target(
                "sync: dead IPv6 first, by name / RFC ideal",
                median(times["create"]) / (lookup + DELAY + rtt),
                LAB_LIMIT,
            ),
        ]
    return SectionReport(TITLE, "\n".join(text), targets)
