"""Section 6: an IPv4 literal through NAT64 from the lab's IPv6-only client (issue 14).

The lab's client namespace is made IPv6-only (no IPv4 address or route; DNS over IPv6),
its DNS server answers as a DNS64 with 64:ff9b:1::/96 and a NAT64 in the server
namespace carries the synthesised address over to the IPv4 listener (see
``tests/lab/netns.py``). Each round is one fresh client process making ``CALLS``
``happydial.connect(ipv4_literal)`` calls in a row: the first pays the RFC 7050
discovery (one ``ipv4only.arpa`` AAAA lookup), the later ones find the prefix cached.

Floors, measured in the same rounds: *one RTT* is ``start_connection`` straight to the
synthesised address (what any client pays on this path), *lookup* a single-family
``getaddrinfo("ipv4only.arpa", AF_INET6)``. The issue's targets: the first call within
one RTT plus the lookup, later calls within one RTT (ratios, with 10 % for noise).
The peers (asyncio, aiohappyeyeballs, async_stagger, trio, anyio) get no further
than the kernel's "Network is unreachable".
"""

from __future__ import annotations

import json
import socket
import subprocess
from typing import Any

from bench.common import Config, SectionReport, Target, median, table

TITLE = "An IPv4 literal through NAT64 from an IPv6-only client"
RTT = 0.02
CALLS = 5
LIMIT = 1.10

PEERS = """
import asyncio, json, socket, sys
HOST, PORT = {host!r}, {port}

def outcome(run):
    try:
        run()
    except ImportError as exc:
        return f"not installed ({{exc.name}})"
    except BaseException as exc:  # OSError, or a group of them (trio, anyio)
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        return f"{{type(exc).__name__}}: {{exc}}"
    return None

def with_asyncio():
    async def main():
        _, writer = await asyncio.open_connection(HOST, PORT)
        writer.close()
    asyncio.run(main())

def with_aiohappyeyeballs():
    import aiohappyeyeballs
    async def main():
        infos = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (HOST, PORT))]
        sock = await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=0.25)
        sock.close()
    asyncio.run(main())

def with_async_stagger():
    import async_stagger
    async def main():
        _, writer = await async_stagger.open_connection(HOST, PORT)
        writer.close()
    asyncio.run(main())

def with_trio():
    import trio
    async def main():
        stream = await trio.open_tcp_stream(HOST, PORT)
        await stream.aclose()
    trio.run(main)

def with_anyio():
    import anyio
    async def main():
        stream = await anyio.connect_tcp(HOST, PORT)
        await stream.aclose()
    anyio.run(main)

print(json.dumps({{
    "asyncio.open_connection": outcome(with_asyncio),
    "aiohappyeyeballs.start_connection": outcome(with_aiohappyeyeballs),
    "async_stagger.open_connection": outcome(with_async_stagger),
    "trio.open_tcp_stream": outcome(with_trio),
    "anyio.connect_tcp": outcome(with_anyio),
}}))
"""


def _peers(lab: Any, host: str, port: int) -> dict[str, str | None]:
    """Each peer's connect to *host* in the client namespace: its error, or None."""
    command = [*lab.exec_prefix(lab.client_ns), "-c", PEERS.format(host=host, port=port)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    result: dict[str, str | None] = json.loads(proc.stdout)
    return result


def _no_pause(label: str) -> None:
    raise RuntimeError(f"unexpected pause {label!r}")


def measure(lab: Any, rounds: int) -> tuple[dict[str, list[float]], dict[str, str | None]]:
    """Seconds per call kind, over *rounds* rounds; and each peer's error."""
    from tests.lab.netns import PORT, Rule

    _, (v4,) = lab.allocate(v4=1)
    [v6] = lab.nat64([v4])
    lab.configure(rules={v6: Rule(rtt=RTT)}, live=[v4])
    times: dict[str, list[float]] = {"first": [], "later": [], "rtt": [], "lookup": []}
    step = {"call": "connect", "host": v4, "port": PORT, "kwargs": {}}
    floor = {"call": "start_connection", "addr_infos": [[socket.AF_INET6, v6, PORT]]}
    lookup = {"call": "getaddrinfo", "host": "ipv4only.arpa", "families": [socket.AF_INET6]}
    with lab.ipv6_only():
        for _ in range(rounds):
            spec = {"loop": "asyncio", "steps": [step] * CALLS}
            reports = lab.run_client_sequence(spec, _no_pause)["steps"]
            for i, report in enumerate(reports):
                if report["error"] is not None or report["peer"] != [v6, PORT]:
                    raise RuntimeError(f"call {i} did not reach {v6}: {report}")
                times["first" if i == 0 else "later"].append(report["elapsed"])
            times["rtt"].append(lab.run_client({"loop": "asyncio", **floor})["elapsed"])
            times["lookup"].append(lab.run_client({"loop": "asyncio", **lookup})["elapsed"])
        peers = _peers(lab, v4, PORT)
    return times, peers


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def render(
    times: dict[str, list[float]], rounds: int, peers: dict[str, str | None]
) -> SectionReport:
    """The table and the two targets."""
    rtt, lookup = median(times["rtt"]), median(times["lookup"])
    first, later = median(times["first"]), median(times["later"])
    rows = [
        [
            "first call (discovery + connect)",
            _ms(first),
            _ms(rtt + lookup),
            f"{first / (rtt + lookup):.2f}x",
        ],
        [f"later calls ({CALLS - 1} per round)", _ms(later), _ms(rtt), f"{later / rtt:.2f}x"],
        ["floor: one RTT (start_connection to the synthesised address)", _ms(rtt), "", ""],
        ["floor: ipv4only.arpa AAAA lookup", _ms(lookup), "", ""],
    ]
    text = [
        (
            f"Median of {rounds} round(s), each a fresh client process with {CALLS}"
            f" `connect(ipv4_literal)` calls in a row; relay RTT {RTT * 1000:.0f} ms to the"
            " NAT64, the DNS64 next door. Time: `time.monotonic()` around the call."
        ),
        "",
        table(["call", "ms", "ideal ms", "ratio"], rows),
        "",
        "The peers, connecting to the same IPv4 literal from the same client:",
        "",
        table(
            ["peer", "outcome"],
            [[f"`{name}`", error or "connected"] for name, error in peers.items()],
        ),
    ]
    targets = [
        Target("nat64: first call / (one RTT + discovery lookup)", first / (rtt + lookup), LIMIT),
        Target("nat64: later calls / one RTT", later / rtt, LIMIT),
    ]
    return SectionReport(TITLE, "\n".join(text), targets)


def run(cfg: Config) -> SectionReport:
    """Section 6."""
    from tests.lab.netns import Lab, LabUnavailableError

    try:
        lab = Lab.start()
    except LabUnavailableError as exc:
        return SectionReport(TITLE, f"Skipped: the network lab is unavailable here ({exc}).")
    rounds = 1 if cfg.quick else 7
    try:
        times, peers = measure(lab, rounds)
    finally:
        lab.close()
    return render(times, rounds, peers)
