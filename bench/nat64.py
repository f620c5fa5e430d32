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
The peers (here ``asyncio.open_connection``) get no further than the kernel's
"Network is unreachable".
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

PEER = """
import asyncio, json, time
async def main():
    start = time.monotonic()
    try:
        _, writer = await asyncio.open_connection({host!r}, {port})
    except OSError as exc:
        return {{"error": str(exc), "elapsed": time.monotonic() - start}}
    writer.close()
    return {{"error": None, "elapsed": time.monotonic() - start}}
print(json.dumps(asyncio.run(main())))
"""


def _peer(lab: Any, host: str, port: int) -> dict[str, Any]:
    """``asyncio.open_connection(host, port)`` in the client namespace: its outcome."""
    command = [*lab.exec_prefix(lab.client_ns), "-c", PEER.format(host=host, port=port)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _no_pause(label: str) -> None:
    raise RuntimeError(f"unexpected pause {label!r}")


def measure(lab: Any, rounds: int) -> tuple[dict[str, list[float]], str | None]:
    """Seconds per call kind, over *rounds* rounds; and the peer's error."""
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
        peer = _peer(lab, v4, PORT)
    return times, peer["error"]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def render(times: dict[str, list[float]], rounds: int, peer_error: str | None) -> SectionReport:
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
        f"`asyncio.open_connection` to the same literal: {peer_error or 'connected (?)'}.",
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
        times, peer_error = measure(lab, rounds)
    finally:
        lab.close()
    return render(times, rounds, peer_error)
