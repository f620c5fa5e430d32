"""The tls section: a wrong certificate first, time to a verified TLS connection (issue 15).

Two addresses of one name on one port: 127.0.0.1 serves a valid certificate for another
name, 127.0.0.2 the right one (the test suite's throwaway CA and listeners,
``tests/tls_helpers.py``, run in a child process so that the servers' handshakes do not
share the GIL with the client under test). Compared, on each event loop, each run
interleaved with the order rotating:

* ``ideal``: a failed handshake with the wrong address, then one with the right address,
  back to back, with no lookup and no racing machinery: the least a client that tries
  the addresses in order (RFC 8305) and treats a failed handshake as a failed attempt
  (the Happy Eyeballs v3 draft) can take.
* ``happydial tls_in_race``: ``happydial.open_connection(..., ssl=ctx, tls_in_race=True)``
  (a resolver answering the two addresses at once). Target: at most the ideal + 5 %.
* The peers, which fail: ``happydial`` without ``tls_in_race`` (TCP wins on the first
  address, its handshake fails after the race), ``asyncio.open_connection(..., ssl=ctx)``
  (asyncio's own lookup patched to answer the same two addresses; on uvloop, whose lookup
  is not asyncio's, it is not run) and aiohappyeyeballs ``start_connection`` +
  ``loop.create_connection(sock=..., ssl=ctx)``, what aiohttp does.

Standalone: ``python -m bench.tls [--runs N]`` from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import happydial
from bench.common import Config, SectionReport, Target, loop_factories, median, table

REPO = Path(__file__).resolve().parent.parent
TITLE = "TLS inside the race: a wrong certificate first (Happy Eyeballs v3)"
LIMIT = 1.05
NAME = "tls.test"  # tests/tls_helpers.py's: the name the good certificate is for
WRONG, GOOD = "127.0.0.1", "127.0.0.2"
IDEAL = "ideal (no race)"
OURS = "happydial tls_in_race"
Call = Callable[[], Awaitable[Any]]


def serve(directory: str) -> None:
    """The child: make the certificates in *directory*, print the port, serve until EOF."""
    from tests.tls_helpers import listeners, make_certificates

    certs = make_certificates(Path(directory))
    with listeners(certs, "wrong", "good") as opened:
        sys.stdout.write(f"{opened[0].port}\n")
        sys.stdout.flush()
        sys.stdin.read()


@contextlib.contextmanager
def servers() -> Iterator[tuple[ssl.SSLContext, int]]:
    """The listeners' child process; a client context trusting their CA, and their port."""
    with tempfile.TemporaryDirectory() as directory:
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, bench.tls; bench.tls.serve(sys.argv[1])",
                directory,
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            port = int(child.stdout.readline())
            yield ssl.create_default_context(cafile=str(Path(directory) / "ca.pem")), port
        finally:
            child.stdin.close()
            child.wait(timeout=30)
            child.stdout.close()


def _addr_infos(port: int) -> list[tuple[Any, ...]]:
    return [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))
        for host in (WRONG, GOOD)
    ]


async def _resolve(host: str, port: int, family: int) -> list[tuple[Any, ...]]:  # noqa: ARG001 - the resolver's signature
    if family == socket.AF_INET6:
        raise socket.gaierror(socket.EAI_NODATA, "no AAAA")
    return _addr_infos(port)


def contenders(ctx: ssl.SSLContext, port: int, loop_name: str) -> dict[str, Call]:
    """Each contender's call, returning ``(anything, transport or writer)``."""
    loop = asyncio.get_running_loop()

    async def ideal() -> Any:
        with contextlib.suppress(ssl.SSLError):
            await asyncio.open_connection(WRONG, port, ssl=ctx, server_hostname=NAME)
        return await asyncio.open_connection(GOOD, port, ssl=ctx, server_hostname=NAME)

    async def aiohappyeyeballs_then_tls() -> Any:
        import aiohappyeyeballs

        sock = await aiohappyeyeballs.start_connection(_addr_infos(port), happy_eyeballs_delay=0.25)
        # On a failed handshake asyncio closes the transport, and with it the socket.
        return await loop.create_connection(
            asyncio.Protocol, sock=sock, ssl=ctx, server_hostname=NAME
        )

    calls: dict[str, Call] = {
        IDEAL: ideal,
        OURS: lambda: happydial.open_connection(
            NAME, port, ssl=ctx, tls_in_race=True, resolver=_resolve
        ),
        "happydial, TLS after the race": lambda: happydial.open_connection(
            NAME, port, ssl=ctx, resolver=_resolve
        ),
        "aiohappyeyeballs start_connection + create_connection(sock, ssl)": (
            aiohappyeyeballs_then_tls
        ),
    }
    if loop_name == "asyncio":
        calls["asyncio.open_connection"] = lambda: asyncio.open_connection(NAME, port, ssl=ctx)
    return calls


@contextlib.contextmanager
def patched_lookup(port: int) -> Iterator[None]:
    """asyncio's own lookup of NAME answers the two addresses (the others go through)."""
    loop = asyncio.get_running_loop()
    original = loop.getaddrinfo

    async def getaddrinfo(host: Any, port_: Any, *args: Any, **kwargs: Any) -> Any:
        if host == NAME:
            return _addr_infos(port)
        return await original(host, port_, *args, **kwargs)

    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign,assignment,unused-ignore]
    try:
        yield
    finally:
        del loop.getaddrinfo  # the class's method again


def outcome_of(error: BaseException) -> str:
    """A short line for a failure: the type and the certificate's complaint."""
    reason = getattr(error, "verify_message", None) or str(error)
    return f"{type(error).__name__}: {reason}"[:120]


@dataclass
class Samples:
    """One contender's runs on one loop: wall and client CPU seconds, and outcomes."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


async def _timed(call: Call, samples: Samples) -> None:
    """Time *call* into *samples*: the connection verified (then aborted), or its failure.

    CPU is ``time.thread_time()``: the loop's thread alone (the servers are elsewhere).
    """
    failure = None
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        _, last = await call()
    except OSError as exc:
        failure = outcome_of(exc)
        last = None
    samples.wall.append(time.perf_counter() - wall)
    samples.cpu.append(time.thread_time() - cpu)
    if last is not None:
        transport = last.transport if isinstance(last, asyncio.StreamWriter) else last
        peer = transport.get_extra_info("peername")[0]
        failure = None if peer == GOOD else f"connected to {peer}"
        transport.abort()
        await asyncio.sleep(0.001)  # the aborted transport's callbacks
    samples.outcomes[failure or "verified"] += 1


async def measure(runs: int, loop_name: str) -> dict[str, Samples]:
    """Each contender's samples, the contenders interleaved and their order rotating."""
    with servers() as (ctx, port), contextlib.ExitStack() as stack:
        if loop_name == "asyncio":  # uvloop's lookup is its own, and its loop has no __dict__
            stack.enter_context(patched_lookup(port))
        calls = contenders(ctx, port, loop_name)
        names = list(calls)
        results = {name: Samples() for name in names}
        for run in range(runs):
            shift = run % len(names)
            for name in names[shift:] + names[:shift]:
                await _timed(calls[name], results[name])
    return results


def _outcome(outcomes: Counter[str], runs: int) -> str:
    parts = []
    for what, n in outcomes.most_common():
        parts.append(
            f"{what}, {n} of {runs}" if what == "verified" else f"fails: {what}, {n} of {runs}"
        )
    return "; ".join(parts)


def vs_ideal(samples: Samples, ideal: Samples) -> float:
    """The median over the runs of the run's time divided by the ideal's in the same run."""
    return median([ours / best for ours, best in zip(samples.wall, ideal.wall, strict=True)])


def render(results: dict[str, dict[str, Samples]], runs: int) -> SectionReport:
    """One table per loop and the target per loop."""
    text = [
        (
            f"{runs} runs per contender and loop, interleaved (the order rotating every run);"
            " time: `time.perf_counter()` around the call until it returns the connection"
            " (or raises); *client CPU*: `time.thread_time()` of the loop's thread over the"
            " same span. Medians, and the 90th percentile of the wall time. *vs ideal*: in"
            " each run, the contender's time divided by the ideal's in that run; the median"
            " of those ratios (the target judges it). Servers in a child process, on"
            " 127.0.0.1 (a valid certificate for another name) and 127.0.0.2 (the right one),"
            " one port; ECDSA P-256 certificates, TLS 1.3."
        ),
    ]
    targets = []
    for loop_name, per_loop in results.items():
        ideal = per_loop[IDEAL]
        rows = []
        for name, samples in per_loop.items():
            wall = samples.wall
            p90 = statistics.quantiles(wall, n=10)[-1] if len(wall) > 1 else wall[0]
            rows.append(
                [
                    name,
                    f"{median(wall) * 1000:.2f}",
                    f"{p90 * 1000:.2f}",
                    f"{median(samples.cpu) * 1000:.2f}",
                    f"{vs_ideal(samples, ideal):.2f}x",
                    _outcome(samples.outcomes, len(wall)),
                ]
            )
        header = ["contender", "median ms", "p90 ms", "client CPU ms", "vs ideal", "outcome"]
        text += ["", f"**{loop_name}**:", "", table(header, rows)]
        name = f"tls: happydial tls_in_race / ideal, wrong certificate first ({loop_name})"
        targets.append(Target(name, vs_ideal(per_loop[OURS], ideal), LIMIT))
    return SectionReport(TITLE, "\n".join(text), targets)


def run_all(runs: int, loops: tuple[str, ...]) -> dict[str, dict[str, Samples]]:
    """:func:`measure` on each loop, each in a fresh event loop."""
    factories = loop_factories()
    results = {}
    for loop_name in loops:
        with asyncio.Runner(loop_factory=factories[loop_name]) as runner:
            results[loop_name] = runner.run(measure(runs, loop_name))
    return results


def run(cfg: Config) -> SectionReport:
    """The tls section."""
    runs = 5 if cfg.quick else 200
    return render(run_all(runs, cfg.loops), runs)


def main() -> None:
    """Print the section's Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    report = render(run_all(args.runs, tuple(loop_factories())), args.runs)
    print(report.markdown)
    for target in report.targets:
        print(target.row())


if __name__ == "__main__":
    main()
