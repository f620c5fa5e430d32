"""CPU per connection of happydial.sync against socket.create_connection (issue 18).

One healthy loopback address, one connection after another, in batches: the
implementations take turns inside every round (the order rotating), and each batch
is timed with ``time.process_time`` (CPU, every thread) and ``time.perf_counter``.
As in ``percall.py``, the server does nothing while a batch is timed (the kernel
parks the handshakes in the accept queue; the harness accepts and closes them
between batches, untimed), winners are closed with ``SO_LINGER`` 0 after the batch,
untimed, and ``gc.collect()`` runs before each batch. The figure is the median over
rounds of each round's ratio to ``socket.create_connection``.

Target: at most 1.10x. Run from the repository root with the project venv::

    python bench/sync_percall.py [--rounds 30] [--batch 500]
"""

from __future__ import annotations

import argparse
import gc
import socket
import struct
import time
from collections.abc import Callable

from happydial import sync

LINGER_RST = struct.pack("ii", 1, 0)


def stdlib(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port))


def happy(port: int) -> socket.socket:
    return sync.create_connection(("127.0.0.1", port))


def happy_addr_infos(port: int) -> socket.socket:
    entry = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))
    return sync.start_connection([entry])


IMPLEMENTATIONS: dict[str, Callable[[int], socket.socket]] = {
    "socket.create_connection": stdlib,
    "sync.create_connection": happy,
    "sync.start_connection": happy_addr_infos,
}


def batch(connect: Callable[[int], socket.socket], port: int, size: int) -> tuple[float, float]:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    socks = [connect(port) for _ in range(size)]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        sock.close()
    return cpu, wall


def drain(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    names = list(IMPLEMENTATIONS)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        this: dict[str, float] = {}
        for name in order:
            used, _ = batch(IMPLEMENTATIONS[name], port, args.batch)
            drain(listener)
            this[name] = used / args.batch
            cpu[name].append(this[name])
        for name in names:
            ratios[name].append(this[name] / this[names[0]])
    listener.close()
    print(f"{args.rounds} rounds of {args.batch} connections to 127.0.0.1 (medians)")
    for name in names:
        per_call = sorted(cpu[name])[len(cpu[name]) // 2] * 1e6
        ratio = sorted(ratios[name])[len(ratios[name]) // 2]
        print(f"  {name:26} {per_call:7.1f} us CPU/connection  {ratio:5.2f}x")


if __name__ == "__main__":
    main()
