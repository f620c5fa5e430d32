"""``python -m happydial``: connect once and show the race's timeline, or run the demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from collections.abc import Sequence
from typing import TextIO

from . import _trace
from ._connect import connect
from ._errors import format_sockaddr
from ._racer import start_connection
from ._trace import TraceEvent

__all__ = ["main"]


class Timeline:
    """Collects trace events and renders them with milliseconds since the start."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.events: list[TraceEvent] = []

    def __call__(self, event: TraceEvent) -> None:
        self.events.append(event)

    def describe(self, event: TraceEvent) -> tuple[str, dict[str, object]]:
        """One line of text and a JSON-able record for *event*."""
        record: dict[str, object] = {"event": type(event).__name__, "ms": self.ms(event.time)}
        if isinstance(event, _RESOLUTION_EVENTS):
            record["family"], record["host"] = _fam(event.family), event.host
        if isinstance(event, _trace.ResolutionStarted):
            text = f"lookup {_fam(event.family)} {event.host} started"
        elif isinstance(event, _trace.ResolutionFinished):
            addrs = [a[4][0] for a in event.addr_infos]
            record["addresses"] = addrs
            text = f"lookup {_fam(event.family)} answered: {', '.join(addrs)}"
        elif isinstance(event, _trace.ResolutionFailed):
            record["error"] = str(event.error)
            text = f"lookup {_fam(event.family)} failed: {event.error}"
        elif isinstance(event, _trace.HistoryReordered):
            record["order"] = [format_sockaddr(a[4]) for a in event.after]
            record["reasons"] = list(event.reasons)
            text = "history reordered: " + "; ".join(event.reasons)
        elif isinstance(event, _trace.DelayAdjusted):
            record["attempt"], record["delay_ms"] = event.attempt, round(event.delay * 1000, 1)
            text = f"next attempt in {event.delay * 1000:.0f} ms (measured connect time)"
        else:
            where = format_sockaddr(event.addr_info[4])
            record["attempt"], record["address"] = event.attempt, where
            verb = {
                _trace.AttemptStarted: "started",
                _trace.AttemptFailed: "failed",
                _trace.AttemptSucceeded: "connected",
                _trace.AttemptCancelled: "cancelled",
            }[type(event)]
            text = f"attempt {event.attempt} {where} {verb}"
            if isinstance(event, _trace.AttemptFailed):
                record["error"] = str(event.error).splitlines()[0]
                text += f": {record['error']}"
        return text, record

    def ms(self, time: float) -> float:
        """Milliseconds since the start, rounded to 0.1."""
        return round((time - self.start) * 1000, 1)

    def render(self, out: TextIO) -> None:
        """Print one line per event."""
        for event in self.events:
            text, record = self.describe(event)
            out.write(f"{record['ms']:>9.1f} ms  {text}\n")


_RESOLUTION_EVENTS = (
    _trace.ResolutionStarted,
    _trace.ResolutionFinished,
    _trace.ResolutionFailed,
)


def _fam(family: int) -> str:
    return "AAAA" if family == socket.AF_INET6 else "A"


async def _connect_once(args: argparse.Namespace, out: TextIO) -> int:
    loop = asyncio.get_running_loop()
    timeline = Timeline(loop.time())
    family = {None: socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}[args.family]
    try:
        sock = await connect(
            args.host,
            args.port,
            family=family,
            happy_eyeballs_delay=args.delay,
            attempt_timeout=args.timeout,
            trace=timeline,
        )
    except OSError as exc:
        error = str(exc).splitlines()[0]
        if args.json:
            records = [timeline.describe(e)[1] for e in timeline.events]
            out.write(json.dumps({"ok": False, "error": error, "timeline": records}) + "\n")
        else:
            timeline.render(out)
        sys.stderr.write(f"happydial: cannot connect to {args.host} port {args.port}: {error}\n")
        return 1
    peer = sock.getpeername()
    elapsed = timeline.ms(loop.time())
    sock.close()
    if args.json:
        records = [timeline.describe(e)[1] for e in timeline.events]
        result = {"ok": True, "peer": format_sockaddr(peer), "ms": elapsed, "timeline": records}
        out.write(json.dumps(result) + "\n")
    else:
        timeline.render(out)
        out.write(f"connected to {format_sockaddr(peer)} in {elapsed:.1f} ms\n")
    return 0


async def _demo(out: TextIO, delay: float) -> int:
    """Race a dead local address against a live one and show the fallback."""
    live = socket.create_server(("127.0.0.1", 0), backlog=16)
    dead, fillers = _dead_listener()
    try:
        dead_addr, live_addr = dead.getsockname(), live.getsockname()
        addr_infos = [
            (dead.family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", dead_addr),
            (live.family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", live_addr),
        ]
        out.write(
            "happydial demo: two local listeners. The first has a full accept queue, so\n"
            "its SYNs are dropped and connecting to it hangs, like a dead IPv6 path.\n"
            f"The second is live. Attempt delay: {delay * 1000:.0f} ms.\n\n"
        )
        loop = asyncio.get_running_loop()
        timeline = Timeline(loop.time())
        sock = await start_connection(addr_infos, happy_eyeballs_delay=delay, trace=timeline)
        elapsed = timeline.ms(loop.time())
        peer = sock.getpeername()
        sock.close()
        timeline.render(out)
        out.write(
            f"\nconnected to {format_sockaddr(peer)} in {elapsed:.1f} ms: the dead address cost "
            "one attempt delay, not a connect timeout.\n"
        )
    finally:
        for filler in fillers:
            filler.close()
        dead.close()
        live.close()
    return 0


def _dead_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener on [::1] (or 127.0.0.2) whose accept queue is full."""
    try:
        dead = socket.create_server(("::1", 0), family=socket.AF_INET6, backlog=0)
    except OSError:  # pragma: no cover - a machine without IPv6 loopback
        dead = socket.create_server(("127.0.0.2", 0), backlog=0)
    fillers = []
    for _ in range(4):
        filler = socket.socket(dead.family, socket.SOCK_STREAM)
        filler.setblocking(False)  # noqa: FBT003 - the socket API's own signature
        filler.connect_ex(dead.getsockname())
        fillers.append(filler)
    return dead, fillers


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m happydial",
        description="Connect to HOST PORT with Happy Eyeballs (RFC 8305) and print the timeline;"
        " or 'demo' to see a race on this machine, offline.",
    )
    parser.add_argument("host", help="host name or IP address, or 'demo'")
    parser.add_argument("port", nargs="?", type=int, help="TCP port")
    parser.add_argument("--delay", type=float, default=0.25, help="attempt delay in seconds")
    parser.add_argument("--timeout", type=float, default=None, help="per-attempt timeout, s")
    parser.add_argument("--family", choices=["4", "6"], default=None, help="only IPv4 / IPv6")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """The command line entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    stream = out if out is not None else sys.stdout
    if args.host == "demo" and args.port is None:
        return asyncio.run(_demo(stream, args.delay))
    if args.port is None:
        parser.error("PORT is required")
    return asyncio.run(_connect_once(args, stream))
