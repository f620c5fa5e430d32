"""``happydial`` and ``python -m happydial``: connect once and show the race, or run the demo.

The output contract (documented in ``docs/cli.md``, checked by ``tests/test_cli.py``):

* Text (the default): one line per lookup and attempt event on stdout, printed as it
  happens, then ``connected to ADDRESS in N ms``. A failed connection prints the
  timeline on stdout and one line, ``happydial: ...``, on stderr.
* ``--json``: exactly one JSON object on stdout, for a success and for a failed or
  interrupted connection alike; nothing on stderr. Its ``"report"`` is the call's
  establishment report (``ConnectionReport.to_json()``, qlog-shaped).
* A bad argument is one line on stderr, ``happydial: error: ...``, and nothing runs.
* Exit status: 0 connected, 1 no connection, 2 bad arguments, 130 interrupted (Ctrl-C,
  after printing the timeline so far).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import re
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

from . import _trace
from ._addresses import AddrInfoType
from ._connect import connect
from ._delays import DelayPolicy, ExponentialDelay, LanDelay
from ._errors import format_sockaddr, is_deadline_error
from ._racer import start_connection
from ._report import Recording, first_line, recording, service_text
from ._trace import TraceEvent
from ._validate import DEFAULT_MAX_IN_FLIGHT
from ._version import __version__
from ._wrappers import create_connection

__all__ = ["Environment", "main"]

#: The whole connection (lookups included) is given up after this many seconds. An
#: unreachable host otherwise holds the prompt until the OS gives up, minutes later.
DEFAULT_TIMEOUT = 10.0
#: In the demo, how long the one-at-a-time connection waits for the dead address.
DEMO_TIMEOUT = 2.0
DEFAULT_DELAY = 0.25  # RFC 8305 section 8's recommended Connection Attempt Delay
POLICIES = ("constant", "exponential", "lan")  # --policy: see _attempt_delay

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class Environment:
    """What the command talks to; the tests replace parts of it.

    Attributes:
        stdout: Where the timeline and the JSON go.
        stderr: Where error lines go.
        run: Runs the command's coroutine to completion (``asyncio.run``).
        connect_options: Called on the running loop; returns extra keyword arguments
            for :func:`happydial.connect` (a resolver, a socket factory).
    """

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    run: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    connect_options: Callable[[], dict[str, Any]] = dict


class UsageError(Exception):
    """A bad command line: printed as ``happydial: error: ...``, exit status 2."""


class Timeline:
    """Collects trace events and renders them with milliseconds since the start."""

    def __init__(self, start: float, echo: TextIO | None = None) -> None:
        """Start the clock at *start*; print each event to *echo* as it comes."""
        self.start = start
        self.echo = echo
        self.events: list[TraceEvent] = []

    def __call__(self, event: TraceEvent) -> None:
        self.events.append(event)
        if self.echo is not None:
            self.echo.write(self.line(event))
            self.echo.flush()

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
        elif isinstance(event, _trace.AddressSynthesized):
            where, origin = format_sockaddr(event.addr_info[4]), format_sockaddr(event.origin[4])
            record["address"], record["origin"], record["prefix"] = where, origin, event.prefix
            text = f"synthesised {where} from {origin} (NAT64 prefix {event.prefix})"
        elif isinstance(event, _trace.DelayAdjusted):
            record["attempt"], record["delay_ms"] = event.attempt, round(event.delay * 1000, 1)
            record["reason"] = event.reason
            why = "measured connect time" if event.reason == "history" else f"{event.reason} policy"
            text = f"next attempt in {event.delay * 1000:.0f} ms ({why})"
        elif isinstance(event, (_trace.ServiceBindingsResolved, _trace.ServiceBindingChosen)):
            text = _describe_service(event, record)
        else:
            where = format_sockaddr(event.addr_info[4])
            record["attempt"], record["address"] = event.attempt, where
            verb = {
                _trace.AttemptStarted: "started",
                _trace.AttemptFailed: "failed",
                _trace.AttemptSucceeded: "connected",
                _trace.AttemptCancelled: "cancelled",
                _trace.TLSStarted: "TCP connected, TLS handshake started",
                _trace.TLSSucceeded: "TLS handshake done",
                _trace.TLSFailed: "TLS handshake failed",
            }[type(event)]
            text = f"attempt {event.attempt} {where} {verb}"
            if isinstance(event, (_trace.AttemptFailed, _trace.TLSFailed)):
                record["error"] = first_line(event.error)
                text += f": {record['error']}"
        return text, record

    def ms(self, time: float) -> float:
        """Milliseconds since the start, rounded to 0.1."""
        return round((time - self.start) * 1000, 1)

    def line(self, event: TraceEvent) -> str:
        """The text line for *event*, newline included."""
        text, record = self.describe(event)
        return f"{record['ms']:>9.1f} ms  {text}\n"

    def records(self) -> list[dict[str, object]]:
        """The JSON-able records of every event so far."""
        return [self.describe(event)[1] for event in self.events]

    def winner(self) -> str:
        """The address that connected (the race's last event says which)."""
        won = [e for e in self.events if isinstance(e, _trace.AttemptSucceeded)]
        return format_sockaddr(won[-1].addr_info[4])


_RESOLUTION_EVENTS = (
    _trace.ResolutionStarted,
    _trace.ResolutionFinished,
    _trace.ResolutionFailed,
)


def _fam(family: int) -> str:
    return "AAAA" if family == socket.AF_INET6 else "A"


def _describe_service(
    event: _trace.ServiceBindingsResolved | _trace.ServiceBindingChosen, record: dict[str, object]
) -> str:
    """The text (and *record* fields) of an HTTPS-record event."""
    record["host"] = event.host
    if isinstance(event, _trace.ServiceBindingsResolved):
        record["name"] = event.name
        texts = [service_text(b) for b in event.bindings]
        record["bindings"] = texts
        if event.error is not None:
            record["error"] = first_line(event.error)
            return f"lookup HTTPS failed: {record['error']}"
        return "lookup HTTPS answered: " + ("; ".join(texts) or "no record")
    record["address"] = format_sockaddr(event.addr_info[4])
    record["alpn"], record["ech"] = list(event.alpn), event.ech is not None
    ech = ", ECH config (not used)" if event.ech is not None else ""
    return f"HTTPS record {service_text(event.binding)} chosen: ALPN {','.join(event.alpn)}{ech}"


@dataclass
class _Run:
    """One invocation: its arguments, where it writes, and what it has seen so far."""

    args: argparse.Namespace
    env: Environment
    timeline: Timeline | None = None
    recorded: Recording | None = None

    def write_json(self, result: dict[str, object]) -> None:
        self.env.stdout.write(json.dumps(result) + "\n")

    def report(self) -> dict[str, object] | None:
        """The JSON of the latest call's establishment report, if a call was made."""
        reports = self.recorded.reports if self.recorded is not None else []
        return reports[-1].to_json() if reports else None

    def interrupted(self) -> int:
        """Ctrl-C: the timeline so far was printed (text) or goes into the JSON."""
        records = self.timeline.records() if self.timeline is not None else []
        if self.args.json:
            self.write_json(
                {"ok": False, "error": "interrupted", "timeline": records, "report": self.report()}
            )
        else:
            self.env.stderr.write("happydial: interrupted\n")
        return EXIT_INTERRUPTED


# ---------------------------------------------------------------------------
# The command line


class _Exit(Exception):  # noqa: N818 - not an error: --help and --version end here
    """``--help`` or ``--version`` was printed: exit with this status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, writing to the environment's streams, every error one line."""

    out: TextIO = sys.stdout

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:  # noqa: ARG002 - argparse's signature
        # argparse calls this only after --help or --version, with no message.
        raise _Exit(status)

    def _print_message(self, message: str, file: object = None) -> None:  # noqa: ARG002 - argparse's signature
        self.out.write(message)


def _seconds(*, allow_zero: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, > 0 (or >= 0 with *allow_zero*)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and (value > 0 or (allow_zero and value == 0)):
            return value
        bound = "0 or more" if allow_zero else "more than 0"
        raise argparse.ArgumentTypeError(f"must be a number of seconds, {bound}, got {text!r}")

    return parse


def _cap(text: str) -> int | None:
    """An argparse type: a count of at least 1, or ``none``."""
    if text.lower() == "none":
        return None
    if text.isascii() and text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(
        f"must be a number of attempts, 1 or more, or none, got {text!r}"
    )


def _parser(prog: str, out: TextIO) -> _Parser:
    parser = _Parser(
        prog=prog,
        usage=(
            f"{prog} [options] HOST PORT\n"
            f"       {prog} [options] HOST:PORT | [IPV6]:PORT\n"
            f"       {prog} [--delay S] [--policy P] [--deadline S] [--json] demo"
        ),
        description="Connect to HOST on TCP port PORT the Happy Eyeballs way (RFC 8305):"
        " look up IPv6 and IPv4 in parallel, race the addresses, and print each lookup and"
        " attempt with its time. 'demo' races a dead address against a live one on this"
        " machine, offline, and compares it with trying one address at a time.",
        epilog="Exit status: 0 connected, 1 no connection, 2 bad arguments, 130 interrupted."
        " With --json, stdout gets one JSON object and stderr nothing, success or not.",
    )
    parser.add_argument(
        "target", metavar="HOST", help="a host name or IP address, HOST:PORT, [IPV6]:PORT, or demo"
    )
    parser.add_argument("port", metavar="PORT", nargs="?", help="the TCP port (1-65535)")
    parser.add_argument(
        "--delay",
        metavar="S",
        type=_seconds(allow_zero=True),
        default=DEFAULT_DELAY,
        help=f"seconds between attempt starts (default: {DEFAULT_DELAY:g}; 0: all at once)",
    )
    parser.add_argument(
        "--policy",
        choices=list(POLICIES),
        default="constant",
        help="how the attempt delay is chosen (default: constant): constant, --delay"
        " every time; exponential, 50 ms doubling with each attempt in flight (HEv3);"
        " lan, 100 ms to loopback, link-local and private addresses, --delay to others",
    )
    parser.add_argument(
        "--deadline",
        "--timeout",
        dest="timeout",
        metavar="S",
        type=_seconds(allow_zero=False),
        default=None,
        help=f"give up after S seconds, lookups included (default: {DEFAULT_TIMEOUT:g});"
        f" in the demo, how long one-at-a-time waits for the dead address"
        f" (default: {DEMO_TIMEOUT:g})",
    )
    parser.add_argument(
        "--max-in-flight",
        metavar="N",
        type=_cap,
        default=DEFAULT_MAX_IN_FLIGHT,
        help=f"at most N attempts in flight; the oldest is dropped for the next"
        f" (default: {DEFAULT_MAX_IN_FLIGHT}; none: no cap)",
    )
    parser.add_argument(
        "--family", choices=["4", "6"], default=None, help="only IPv4 (4) or only IPv6 (6)"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS inside the race (Happy Eyeballs v3), verified with the default"
        " context: an attempt wins when its TLS handshake completes",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--version", action="version", version=f"happydial {__version__}")
    parser.out = out
    return parser


_BRACKETED = re.compile(r"\[(?P<host>[^\]]*)\](?::(?P<port>.*))?")


def _host_and_port(args: argparse.Namespace) -> tuple[str, int]:
    """HOST PORT, HOST:PORT or [IPV6]:PORT, checked; a bare IPv6 literal has no port."""
    target: str = args.target
    port_text: str | None = None
    bracketed = _BRACKETED.fullmatch(target)
    if bracketed is not None:
        host, port_text = bracketed["host"], bracketed["port"]
        if _ip_version(host) != 6:
            raise UsageError(f"{target!r}: brackets are only for IPv6 addresses, as in [::1]:443")
    elif target.startswith("[") or "]" in target:
        raise UsageError(f"{target!r}: write an IPv6 address and port as [::1]:443")
    elif target.count(":") == 1:
        host, port_text = target.split(":")
    else:
        host = target  # a name, an IPv4 address, or an IPv6 address without a port
    if not host:
        raise UsageError(f"HOST must not be empty, got {target!r}")
    if port_text is not None and args.port is not None:
        raise UsageError(f"the port is given twice: {target!r} and {args.port!r}")
    port_text = port_text if port_text is not None else args.port
    if port_text is None:
        joined = f"[IPV6]:PORT ('[{host}]:443')" if ":" in host else f"HOST:PORT ({host}:443)"
        raise UsageError(f"PORT is required: give HOST PORT ({_quote(host)} 443) or {joined}")
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"PORT must be a number from 1 to 65535, got {port_text!r}")
    return host, int(port_text)


def _quote(host: str) -> str:
    return host if re.fullmatch(r"[\w.:-]+", host) else f"'{host}'"


def _ip_version(host: str) -> int | None:
    """4 or 6 for an IP literal (``%zone`` allowed), ``None`` for a host name."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def _family(args: argparse.Namespace, host: str) -> int:
    if args.family is None:
        return socket.AF_UNSPEC
    version = _ip_version(host)
    if version is not None and str(version) != args.family:
        raise UsageError(
            f"{host} is an IPv{version} address, but --family {args.family}"
            f" asks for IPv{args.family} only"
        )
    return socket.AF_INET if args.family == "4" else socket.AF_INET6


def _attempt_delay(args: argparse.Namespace) -> float | DelayPolicy:
    """``--delay`` and ``--policy`` as ``happy_eyeballs_delay``.

    ``constant`` passes the number itself, so ``--delay 0`` keeps its meaning (all at
    once); the policies are clamped to RFC 8305's bounds.
    """
    policy: str = args.policy
    if policy == "exponential":
        return ExponentialDelay()
    if policy == "lan":
        return LanDelay(other=args.delay)
    return float(args.delay)


def _describe_delay(args: argparse.Namespace) -> str:
    policy: str = args.policy
    if policy == "exponential":
        return "attempt delay 50 ms, doubling with each attempt in flight"
    if policy == "lan":
        return f"attempt delay 100 ms on the LAN, {args.delay * 1000:.0f} ms elsewhere"
    return f"attempt delay {args.delay * 1000:.0f} ms"


# ---------------------------------------------------------------------------
# Connecting


async def _connect_once(run: _Run, host: str, port: int, family: int) -> int:
    args, env = run.args, run.env
    loop = asyncio.get_running_loop()
    timeline = run.timeline = Timeline(loop.time(), None if args.json else env.stdout)
    limit = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT
    try:
        with recording() as run.recorded:
            options = {
                "family": family,
                "happy_eyeballs_delay": _attempt_delay(args),
                "trace": timeline,
                "timeout": limit,
                "max_in_flight": args.max_in_flight,
            }
            sock: _Closer | socket.socket
            if args.tls:
                sock = await _connect_tls(host, port, {**options, **env.connect_options()})
            else:
                sock = await connect(host, port, **options, **env.connect_options())
    except OSError as exc:  # before ValueError: a certificate error is both
        if is_deadline_error(exc):  # connect()'s own deadline, not one attempt's timeout
            error = (
                f"cannot connect to {_quote(host)} port {port}: no connection within {limit:g} s"
            )
        elif isinstance(exc, socket.gaierror):
            # "cannot resolve 'HOST' ...": connect() names the families; say it once.
            error = exc.strerror or first_line(exc)
        else:
            error = f"cannot connect to {_quote(host)} port {port}: {first_line(exc)}"
        if args.json:
            run.write_json(
                {
                    "ok": False,
                    "error": error,
                    "timeline": timeline.records(),
                    "report": run.report(),
                }
            )
        else:
            env.stderr.write(f"happydial: {error}\n")
        return EXIT_FAILED
    except ValueError as exc:  # connect() checks its arguments first: a bad zone, say
        raise UsageError(str(exc)) from None
    sock.close()
    elapsed = timeline.ms(loop.time())
    if args.json:
        run.write_json(
            {
                "ok": True,
                "peer": timeline.winner(),
                "ms": elapsed,
                "timeline": timeline.records(),
                "report": run.report(),
            }
        )
    else:
        env.stdout.write(f"connected to {timeline.winner()} in {elapsed:.1f} ms\n")
    return EXIT_OK


class _Closer:
    """What ``--tls`` connected: closed at once (nothing was sent; no close_notify)."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def close(self) -> None:
        self.transport.abort()  # type: ignore[attr-defined]


async def _connect_tls(host: str, port: int, options: dict[str, Any]) -> _Closer:
    """``--tls``: TLS inside the race, with the default context (``ssl=True``)."""
    transport, _ = await create_connection(
        asyncio.Protocol, host, port, ssl=True, tls_in_race=True, **options
    )
    return _Closer(transport)


# ---------------------------------------------------------------------------
# The demo


async def _demo(run: _Run) -> int:
    """Race a dead local address against a live one, then try them one at a time."""
    args, out = run.args, run.env.stdout
    baseline_timeout = args.timeout if args.timeout is not None else DEMO_TIMEOUT
    live = socket.create_server(("127.0.0.1", 0), backlog=16)
    dead, fillers = _dead_listener()
    try:
        addr_infos: list[AddrInfoType] = [
            (dead.family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", dead.getsockname()),
            (live.family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", live.getsockname()),
        ]
        dead_at, live_at = (format_sockaddr(a[4]) for a in addr_infos)
        if not args.json:
            out.write(
                "happydial demo: two listeners on this machine, no network needed.\n"
                f"{dead_at} has a full accept queue: connecting to it hangs, like a dead"
                f" IPv6 path.\n{live_at} is live.\n\n"
                f"Happy Eyeballs ({_describe_delay(args)}):\n"
            )
        raced = await _demo_race(run, addr_infos, _attempt_delay(args), None)
        if not args.json:
            out.write(
                "\nOne address at a time, as socket.create_connection and"
                " asyncio.open_connection do\n"
                f"(here each attempt is given up after {baseline_timeout:g} s;"
                " without a timeout the OS waits minutes):\n"
            )
        one_by_one = await _demo_race(run, addr_infos, None, baseline_timeout)
    finally:
        for sock in (*fillers, dead, live):
            sock.close()
    if args.json:
        run.write_json(
            {"ok": True, "happy_eyeballs": raced.to_json(), "one_at_a_time": one_by_one.to_json()}
        )
    else:
        out.write(
            f"\n                 {'connected to':<22}{'after':>11}\n"
            f"  Happy Eyeballs {raced.peer:<22}{raced.ms:>8.1f} ms\n"
            f"  one at a time  {one_by_one.peer:<22}{one_by_one.ms:>8.1f} ms\n"
            f"The dead address cost {raced.ms:.0f} ms with Happy Eyeballs instead of"
            f" {one_by_one.ms:.0f} ms.\n"
        )
    return EXIT_OK


@dataclass(frozen=True)
class _Raced:
    """How one of the demo's two connections went."""

    peer: str
    ms: float
    timeline: Timeline

    def to_json(self) -> dict[str, object]:
        return {"peer": self.peer, "ms": self.ms, "timeline": self.timeline.records()}


async def _demo_race(
    run: _Run,
    addr_infos: list[AddrInfoType],
    delay: float | DelayPolicy | None,
    attempt_timeout: float | None,
) -> _Raced:
    loop = asyncio.get_running_loop()
    timeline = run.timeline = Timeline(loop.time(), None if run.args.json else run.env.stdout)
    sock = await start_connection(
        addr_infos, happy_eyeballs_delay=delay, attempt_timeout=attempt_timeout, trace=timeline
    )
    sock.close()
    return _Raced(timeline.winner(), timeline.ms(loop.time()), timeline)


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


# ---------------------------------------------------------------------------
# The entry point


def _prepare(run: _Run) -> Coroutine[Any, Any, int]:
    """Check the command line and return the coroutine to run; raise UsageError."""
    args = run.args
    if args.target == "demo":
        if args.port is not None:
            raise UsageError("demo takes no PORT (for a host named demo, write demo.)")
        if args.family is not None:
            raise UsageError("demo takes no --family: it races one IPv6 and one IPv4 address")
        return _demo(run)
    host, port = _host_and_port(args)
    return _connect_once(run, host, port, _family(args, host))


def main(
    argv: Sequence[str] | None = None, *, prog: str = "happydial", env: Environment | None = None
) -> int:
    """The command line entry point; returns the exit status.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
        prog: The program's name in the usage line (``python -m happydial`` for -m).
        env: Where to write, and how to run (the tests replace it).
    """
    env = env if env is not None else Environment()
    try:
        args = _parser(prog, env.stdout).parse_args(argv)
        run = _Run(args, env)
        coro = _prepare(run)
    except _Exit as exc:
        return exc.status
    except UsageError as exc:
        env.stderr.write(f"happydial: error: {exc}\n")
        return EXIT_USAGE
    try:
        return env.run(coro)
    except UsageError as exc:
        env.stderr.write(f"happydial: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return run.interrupted()
