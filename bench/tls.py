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
import json
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import happydial
from bench.common import Config, SectionReport, Target, loop_factories, median, table

REPO = Path(__file__).resolve().parent.parent
TITLE = "TLS inside the race: a wrong certificate first (Happy Eyeballs v3)"
LIMIT = 1.05
NAME = "tls.test"  # tests/tls_helpers.py's: the name the good certificate is for
IDEAL = "ideal (no race)"
OURS = "happydial tls_in_race"
LAB_RTT = 0.02
LAB_PORT = 443
Call = Callable[[], Awaitable[Any]]


def serve(directory: str) -> None:
    """The child: make the certificates in *directory*, print the port, serve until EOF."""
    from tests.tls_helpers import listeners, make_certificates

    certs = make_certificates(Path(directory))
    with listeners(certs, "wrong", "good") as opened:
        sys.stdout.write(f"{opened[0].port}\n")
        sys.stdout.flush()
        sys.stdin.read()


@dataclass(frozen=True)
class Servers:
    """Where the wrong and the good server are (one port), and a context trusting their CA."""

    context: ssl.SSLContext
    port: int
    wrong: str = "127.0.0.1"
    good: str = "127.0.0.2"

    def addr_infos(self) -> list[tuple[Any, ...]]:
        """The two addresses, the wrong one first, as a lookup of NAME answers them."""
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, self.port))
            for host in (self.wrong, self.good)
        ]

    async def resolve(self, host: str, port: int, family: int) -> list[tuple[Any, ...]]:  # noqa: ARG002 - the resolver's signature
        """happydial's resolver: no AAAA; the two addresses for A."""
        if family == socket.AF_INET6:
            raise socket.gaierror(socket.EAI_NODATA, "no AAAA")
        return self.addr_infos()


@contextlib.contextmanager
def loopback_servers() -> Iterator[Servers]:
    """The loopback listeners in a child process (made and stopped here)."""
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
            yield Servers(ssl.create_default_context(cafile=str(Path(directory) / "ca.pem")), port)
        finally:
            child.stdin.close()
            child.wait(timeout=30)
            child.stdout.close()


def contenders(where: Servers, loop_name: str) -> dict[str, Call]:
    """Each contender's call, returning ``(anything, transport or writer)``."""
    loop = asyncio.get_running_loop()
    ctx, port = where.context, where.port

    async def ideal() -> Any:
        with contextlib.suppress(ssl.SSLError):
            await asyncio.open_connection(where.wrong, port, ssl=ctx, server_hostname=NAME)
        return await asyncio.open_connection(where.good, port, ssl=ctx, server_hostname=NAME)

    async def aiohappyeyeballs_then_tls() -> Any:
        import aiohappyeyeballs

        sock = await aiohappyeyeballs.start_connection(
            where.addr_infos(), happy_eyeballs_delay=0.25
        )
        # On a failed handshake asyncio closes the transport, and with it the socket.
        return await loop.create_connection(
            asyncio.Protocol, sock=sock, ssl=ctx, server_hostname=NAME
        )

    calls: dict[str, Call] = {
        IDEAL: ideal,
        OURS: lambda: happydial.open_connection(
            NAME, port, ssl=ctx, tls_in_race=True, resolver=where.resolve
        ),
        "happydial, TLS after the race": lambda: happydial.open_connection(
            NAME, port, ssl=ctx, resolver=where.resolve
        ),
        "aiohappyeyeballs start_connection + create_connection(sock, ssl)": (
            aiohappyeyeballs_then_tls
        ),
    }
    if loop_name == "asyncio":
        calls["asyncio.open_connection"] = lambda: asyncio.open_connection(NAME, port, ssl=ctx)
    return calls


@contextlib.contextmanager
def patched_lookup(where: Servers) -> Iterator[None]:
    """asyncio's own lookup of NAME answers the two addresses (the others go through)."""
    loop = asyncio.get_running_loop()
    original = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == NAME:
            return where.addr_infos()
        return await original(host, port, *args, **kwargs)

    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign,assignment,unused-ignore]
    try:
        yield
    finally:
        del loop.getaddrinfo  # the class's method again


def outcome_of(error: BaseException) -> str:
    """A short line for a failure: the type and the certificate's complaint."""
    reason = (getattr(error, "verify_message", None) or str(error)).rstrip(".")
    return f"{type(error).__name__}: {reason}"[:120]


@dataclass
class Samples:
    """One contender's runs on one loop: wall and client CPU seconds, and outcomes."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


async def _timed(call: Call, samples: Samples, good: str) -> None:
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
        failure = None if peer == good else f"connected to {peer}"
        transport.abort()
        await asyncio.sleep(0.001)  # the aborted transport's callbacks
    samples.outcomes[failure or "verified"] += 1


async def measure(runs: int, loop_name: str, where: Servers) -> dict[str, Samples]:
    """Each contender's samples, the contenders interleaved and their order rotating."""
    with contextlib.ExitStack() as stack:
        if loop_name == "asyncio":  # uvloop's lookup is its own, and its loop has no __dict__
            stack.enter_context(patched_lookup(where))
        calls = contenders(where, loop_name)
        names = list(calls)
        results = {name: Samples() for name in names}
        for run in range(runs):
            shift = run % len(names)
            for name in names[shift:] + names[:shift]:
                await _timed(calls[name], results[name], where.good)
    return results


async def measure_loopback(runs: int, loop_name: str) -> dict[str, Samples]:
    """:func:`measure` against loopback listeners of a child process."""
    with loopback_servers() as where:
        return await measure(runs, loop_name, where)


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


def render(results: dict[str, dict[str, Samples]], runs: dict[str, int], lab: str) -> SectionReport:
    """One table per place and loop, and the target of each."""
    text = [
        (
            "Runs per contender interleaved, the order rotating every run; time:"
            " `time.perf_counter()` around the call until it returns the connection (or"
            " raises); *client CPU*: `time.thread_time()` of the loop's thread over the same"
            " span. Medians, and the 90th percentile of the wall time. *vs ideal*: in each"
            " run, the contender's time divided by the ideal's in that run; the median of"
            " those ratios (the target judges it). ECDSA P-256 certificates, TLS 1.3."
        ),
        "",
        (
            "*Loopback*: the servers in a child process, on 127.0.0.1 (a valid certificate"
            " for another name) and 127.0.0.2 (the right one), one port: every millisecond"
            " is CPU, so the ideal is as small as it gets and happydial's own work (the"
            " lookup, the race, the hand-over) weighs most."
            f" *Lab*: {lab}"
        ),
    ]
    targets = []
    for place, per_loop in results.items():
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
        heading = f"**{place}** ({runs[place.split(',')[0]]} runs):"
        text += ["", heading, "", table(header, rows)]
        name = f"tls: happydial tls_in_race / ideal, wrong certificate first ({place})"
        targets.append(Target(name, vs_ideal(per_loop[OURS], ideal), LIMIT))
    return SectionReport(TITLE, "\n".join(text), targets)


def measure_loops(
    runs: int, loops: Iterable[str], place: Callable[[int, str], Coroutine[Any, Any, Any]]
) -> dict[str, Any]:
    """``place(runs, loop_name)``'s samples on each loop, each a fresh event loop."""
    factories = loop_factories()
    results: dict[str, Any] = {}
    for loop_name in loops:
        with asyncio.Runner(loop_factory=factories[loop_name]) as runner:
            results[loop_name] = runner.run(place(runs, loop_name))
    return results


def lab_child(spec: str) -> None:
    """In the lab's client namespace: measure against the lab's servers; print JSON."""
    args = json.loads(spec)
    context = ssl.create_default_context(cafile=args["cafile"])
    where = Servers(context, args["port"], args["wrong"], args["good"])

    async def place(runs: int, loop_name: str) -> dict[str, Any]:
        samples = await measure(runs, loop_name, where)
        return {name: [s.wall, s.cpu, dict(s.outcomes)] for name, s in samples.items()}

    sys.stdout.write(json.dumps(measure_loops(args["runs"], args["loops"], place)) + "\n")


def measure_lab(runs: int, loops: tuple[str, ...]) -> tuple[dict[str, dict[str, Samples]], str]:
    """The scenario in the network lab, RTT LAB_RTT; the samples per loop, and what it was."""
    from tests.lab.netns import Lab, LabUnavailableError, Rule
    from tests.tls_helpers import make_certificates

    try:
        lab = Lab.start()
    except LabUnavailableError as exc:
        return {}, f"skipped: the network lab is unavailable here ({exc})."
    try:
        with tempfile.TemporaryDirectory() as directory:
            certs = make_certificates(Path(directory))
            _, (wrong, good) = lab.allocate(v4=2)
            lab.configure(rules={wrong: Rule(rtt=LAB_RTT), good: Rule(rtt=LAB_RTT)})
            assert lab.server is not None
            for address, (cert, key) in ((wrong, certs.wrong), (good, certs.good)):
                tls = {"cert": str(cert), "key": str(key)}
                lab.server.request("listen", addresses=[address], port=LAB_PORT, tls=tls)
            spec = {"cafile": str(certs.ca), "port": LAB_PORT, "wrong": wrong, "good": good}
            spec |= {"runs": runs, "loops": loops}
            code = "import sys, bench.tls; bench.tls.lab_child(sys.argv[1])"
            command = [*lab.exec_prefix(lab.client_ns), "-c", code, json.dumps(spec)]
            proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    finally:
        lab.close()
    if proc.returncode != 0:
        raise RuntimeError(f"the lab client failed ({proc.returncode}): {proc.stderr[-2000:]}")
    raw: dict[str, dict[str, Any]] = json.loads(proc.stdout)
    results = {
        loop_name: {
            name: Samples(wall, cpu, Counter(outcomes))
            for name, (wall, cpu, outcomes) in per_loop.items()
        }
        for loop_name, per_loop in raw.items()
    }
    what = (
        f"the same two servers (the lab's, `tests/lab/server.py`, serving TLS) on {wrong}"
        f" and {good}, relay RTT {LAB_RTT * 1000:.0f} ms to each, the client in the lab's"
        " client namespace: the ideal is four round trips (TCP and TLS, twice) plus the"
        " same CPU."
    )
    return results, what


def run(cfg: Config) -> SectionReport:
    """The tls section."""
    runs = {"loopback": 5 if cfg.quick else 200, "lab": 2 if cfg.quick else 30}
    results = {
        f"loopback, {loop_name}": samples
        for loop_name, samples in measure_loops(
            runs["loopback"], cfg.loops, measure_loopback
        ).items()
    }
    lab, what = measure_lab(runs["lab"], cfg.loops)
    results |= {f"lab, {loop_name}": samples for loop_name, samples in lab.items()}
    return render(results, runs, what)


def main() -> None:
    """Print the section's Markdown (loopback only)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    samples = measure_loops(args.runs, tuple(loop_factories()), measure_loopback)
    results = {f"loopback, {loop_name}": s for loop_name, s in samples.items()}
    report = render(results, {"loopback": args.runs}, "not run.")
    print(report.markdown)
    for target in report.targets:
        print(target.row())


if __name__ == "__main__":
    main()
