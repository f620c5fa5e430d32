"""Section 4: time to connect in the network lab, against the RFC 8305 ideal.

The lab is the test suite's (``tests/lab``): two network namespaces joined by a userspace
relay that delays or drops packets per server address, and an authoritative DNS server
with per-name, per-type answer delays. Every implementation runs in its own client
process inside the client namespace (``bench/lab_client.py``), so what is timed is a real
kernel's SYNs and the C library's real ``getaddrinfo``.

*Ideal*: what a client following RFC 8305 exactly would take on this lab: the schedule's
own waits (attempt delays, the resolution delay) plus the lab's path times. The path
times are measured, not assumed: a *floor* client (a bare ``loop.sock_connect``, a bare
single-family ``loop.getaddrinfo``) runs in every round, and the ideal uses its medians.
The relay releases packets on a millisecond poll, which adds 1-2 ms to every
connection; that belongs to the lab, not to any client, and the measured floor
includes it. The nominal ideal (the configured RTTs and delays) is shown too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import Config, SectionReport, Target, median, table

REPO = Path(__file__).resolve().parent.parent
TITLE = "Time to connect in the network lab vs the RFC 8305 ideal"

DELAY = 0.25  # happy_eyeballs_delay, RFC 8305's recommendation
RESOLUTION_DELAY = 0.05
PRE_RTT = 0.04  # pre-resolved scenarios: ideals of 40 ms and more
HOST_RTT = 0.02  # host-name scenarios
SLOW_RTT = 0.6  # "only the reachable address is slow"
STALLED_RTT = 0.7  # "IPv6 slow": never worth waiting for
DNS_FAST = 0.01
DNS_SLOW = 2.0
PRE_LIMIT = 1.05
HOST_LIMIT = 1.10

PRE_IMPLS = ("happydial", "aiohappyeyeballs")
HOST_IMPLS = ("happydial", "asyncio", "trio", "anyio", "async_stagger")
PEER_PACKAGES = ("aiohappyeyeballs", "trio", "anyio", "async-stagger", "dnspython")
IMPORT_NAMES = {"async_stagger": "async_stagger", "trio": "trio", "anyio": "anyio"}
IMPORT_NAMES |= {"aiohappyeyeballs": "aiohappyeyeballs", "happydial": "happydial"}

# Path times the ideals are made of: nominal seconds (the measured floor replaces them).
FLOORS = {
    "connect 40 ms": PRE_RTT,
    "connect 600 ms": SLOW_RTT,
    "connect 20 ms": HOST_RTT,
    "dns 10 ms": DNS_FAST,
}


@dataclass
class Scenario:
    """One situation: the client spec, the expected winner and how the ideal is made."""

    name: str
    kind: str  # "addrs" or "host"
    spec: dict[str, Any]
    winner: str
    schedule: float  # the RFC 8305 waits in the ideal (attempt and resolution delays)
    floors: tuple[str, ...]  # the path times in the ideal (keys of FLOORS)
    quick: bool = False  # also run in --quick mode

    def ideal(self, floor: dict[str, float]) -> float:
        return self.schedule + sum(floor[name] for name in self.floors)

    def nominal(self) -> float:
        return self.schedule + sum(FLOORS[name] for name in self.floors)


@dataclass
class Results:
    """Every timing: (scenario, implementation) -> elapsed seconds of each round."""

    elapsed: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    other_winners: list[str] = field(default_factory=list)

    def add(self, scenario: str, impl: str, value: float) -> None:
        self.elapsed.setdefault((scenario, impl), []).append(value)

    def finite_max(self, scenario: str) -> float:
        """The largest finite median of *scenario* over the implementations (0 if none)."""
        medians = [median(v) for (name, _), v in self.elapsed.items() if name == scenario]
        return max([m for m in medians if m != float("inf")], default=0.0)

    def median(self, scenario: str, impl: str) -> float | None:
        values = self.elapsed.get((scenario, impl))
        return median(values) if values else None


WARM_UP = "warm-up"
WARM_UP_HOST = "warm-up.bench.lab.test"


def _triples(addresses: Sequence[str], port: int) -> list[list[Any]]:
    return [[socket.AF_INET6 if ":" in a else socket.AF_INET, a, port] for a in addresses]


@dataclass
class Plan:
    """Everything the lab is configured with, and what the clients will run."""

    lab: Any
    rules: dict[str, Any] = field(default_factory=dict)
    live: list[str] = field(default_factory=list)
    zone: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    scenarios: list[Scenario] = field(default_factory=list)
    floor_specs: list[dict[str, Any]] = field(default_factory=list)
    warm_ups: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per client kind, an untimed first call: the first call in a process pays for lazy
    imports, the C library's first lookup (reading nsswitch.conf, resolv.conf) and so on."""

    def pair(self, v6_rule: Any, v4_rule: Any, *, listen_v6: bool = True) -> tuple[str, str]:
        """A fresh IPv6 and IPv4 address with these relay rules, listening on PORT."""
        (v6,), (v4,) = self.lab.allocate(v6=1, v4=1)
        self.rules |= {v6: v6_rule, v4: v4_rule}
        self.live += [v6, v4] if listen_v6 else [v4]
        return v6, v4

    def addrs(
        self,
        name: str,
        order: list[str],
        schedule: float,
        floors: tuple[str, ...],
        *,
        winner: int = -1,
        interleave: int | None = None,
        quick: bool = False,
    ) -> None:
        """A pre-resolved scenario; ``order[winner]`` must win."""
        from tests.lab.netns import PORT

        spec = {"addr_infos": _triples(order, PORT), "delay": DELAY, "interleave": interleave}
        scenario = Scenario(name, "addrs", spec, order[winner], schedule, floors, quick)
        self.scenarios.append(scenario)

    def named(
        self,
        name: str,
        v6: str,
        v4: str,
        *,
        aaaa: float,
        a: float,
        winner: str,
        schedule: float,
        quick: bool = False,
        https: str | None = None,
    ) -> None:
        """A host-name scenario: AAAA answers *v6* after *aaaa* s, A answers *v4* after *a*.

        With *https*, the name also has that HTTPS record (RFC 9460 presentation format),
        answered after 10 ms, and happydial asks for it (``DnspythonResolver(https=True)``);
        the peers cannot.
        """
        from tests.lab.netns import PORT

        host = name.lower().replace(" ", "-") + ".bench.lab.test"
        self.zone[host] = {
            "AAAA": {"addresses": [v6], "delay": aaaa},
            "A": {"addresses": [v4], "delay": a},
        }
        spec = {"host": host, "port": PORT, "delay": DELAY, "resolution_delay": RESOLUTION_DELAY}
        if https is not None:
            self.zone[host]["HTTPS"] = {"records": [https], "delay": DNS_FAST}
            spec["https"] = True
        floors = ("dns 10 ms", "connect 20 ms")
        self.scenarios.append(Scenario(name, "host", spec, winner, schedule, floors, quick))

    def floor_and_warm_ups(self) -> None:
        """The floor's specs (what the lab's paths cost with no logic), and the warm-ups."""
        from tests.lab.netns import PORT, Rule

        (f40, w6), (f20, f600) = self.lab.allocate(v6=2, v4=2)
        self.rules |= {f40: Rule(rtt=PRE_RTT), f20: Rule(rtt=HOST_RTT), w6: Rule(rtt=HOST_RTT)}
        self.rules[f600] = Rule(rtt=SLOW_RTT)
        self.live += [f40, f20, f600, w6]
        self.zone["floor.bench.lab.test"] = {"A": {"addresses": [f20], "delay": DNS_FAST}}
        self.zone[WARM_UP_HOST] = {
            "AAAA": {"addresses": [w6], "delay": DNS_FAST},
            "A": {"addresses": [f20], "delay": DNS_FAST},
        }
        self.warm_ups = {
            "addrs": {"kind": "addrs", "addr_infos": _triples([w6], PORT), "delay": DELAY},
            "host": {"kind": "host", "host": WARM_UP_HOST, "port": PORT, "delay": DELAY},
            "floor": {"kind": "connect-floor", "address": w6, "port": PORT},
        }
        self.warm_ups["addrs"]["interleave"] = None
        self.warm_ups["host"]["resolution_delay"] = RESOLUTION_DELAY
        for kind, spec in self.warm_ups.items():
            spec["name"] = f"{WARM_UP} ({kind})"
        connect = {"kind": "connect-floor", "port": PORT}
        self.floor_specs = [
            self.warm_ups["floor"],
            {
                "name": f"{WARM_UP} (dns)",
                "kind": "dns-floor",
                "host": WARM_UP_HOST,
                "family": socket.AF_INET,
            },
            {"name": "connect 40 ms", "address": f40, **connect},
            {"name": "connect 20 ms", "address": f20, **connect},
            {"name": "connect 600 ms", "address": f600, **connect},
            {
                "name": "dns 10 ms",
                "kind": "dns-floor",
                "host": "floor.bench.lab.test",
                "family": socket.AF_INET,
            },
        ]


def build_plan(lab: Any) -> Plan:
    """Allocate addresses and configure the lab once for every scenario."""
    from tests.lab.netns import DEAD, Rule

    plan = Plan(lab)
    pre, host = Rule(rtt=PRE_RTT), Rule(rtt=HOST_RTT)
    c40 = ("connect 40 ms",)
    # Pre-resolved (start_connection), RTT 40 ms: the scenarios of tests/test_lab.py.
    plan.addrs("IPv6 dead", [*plan.pair(DEAD, pre)], DELAY, c40, quick=True)
    plan.addrs("IPv6 RTT 700 ms", [*plan.pair(Rule(rtt=STALLED_RTT), pre)], DELAY, c40)
    # No listener on the IPv6 address: the kernel answers with a RST after one RTT.
    plan.addrs("first refused", [*plan.pair(pre, pre, listen_v6=False)], 0.0, c40 * 2)
    six, (v4,) = lab.allocate(v6=3, v4=1)
    plan.rules |= {**dict.fromkeys(six, DEAD), v4: pre}
    plan.live += [*six, v4]
    plan.addrs("3 dead IPv6, interleaved", [*six, v4], DELAY, c40)
    slow = Rule(rtt=SLOW_RTT)
    plan.addrs("only reachable is slow", [*plan.pair(DEAD, slow)], DELAY, ("connect 600 ms",))
    plan.addrs("healthy dual stack", [*plan.pair(pre, pre)], 0.0, c40, winner=0)
    six, four = lab.allocate(v6=3, v4=3)
    order = [six[0], four[0], six[1], four[1], six[2], four[2]]
    plan.rules |= {**dict.fromkeys(order[:-1], DEAD), order[-1]: pre}
    plan.live += order
    plan.addrs("last of 6 alive", order, 5 * DELAY, c40, interleave=0)
    # Host names (connect / create_connection / ...), RTT 20 ms, DNS answers after 10 ms.
    fast, late = DNS_FAST, DNS_SLOW
    v6, v4 = plan.pair(host, host)
    plan.named("both fast", v6, v4, aaaa=fast, a=fast, winner=v6, schedule=0.0, quick=True)
    v6, v4 = plan.pair(DEAD, host)
    plan.named("AAAA dead", v6, v4, aaaa=fast, a=fast, winner=v4, schedule=DELAY)
    v6, v4 = plan.pair(host, host)
    plan.named("A 2 s late", v6, v4, aaaa=fast, a=late, winner=v6, schedule=0.0)
    v6, v4 = plan.pair(host, host)
    plan.named("AAAA 2 s late", v6, v4, aaaa=late, a=fast, winner=v4, schedule=RESOLUTION_DELAY)
    # Happy Eyeballs v3's early hints: A and AAAA 1 s late, the HTTPS record's hints at once.
    v6, v4 = plan.pair(host, host)
    hints = f"1 . alpn=h2 ipv6hint={v6} ipv4hint={v4}"
    plan.named("HTTPS early hints", v6, v4, aaaa=1.0, a=1.0, winner=v6, schedule=0.0, https=hints)
    plan.floor_and_warm_ups()
    lab.configure(rules=plan.rules, live=plan.live, zone=plan.zone)
    return plan


def run_client(lab: Any, impl: str, scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    """Run ``bench.lab_client`` for *impl* over *scenarios* in the client namespace."""
    spec = {"impl": impl, "parent": os.getpid(), "scenarios": scenarios}
    command = ["ip", "netns", "exec", lab.client_ns, sys.executable, "-m", "bench.lab_client"]
    proc = subprocess.run(
        [*command, json.dumps(spec)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"lab client {impl} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    results: dict[str, Any] = json.loads(proc.stdout)["results"]
    return results


def _impls_for(kind: str, installed: Sequence[str]) -> list[str]:
    return [i for i in (PRE_IMPLS if kind == "addrs" else HOST_IMPLS) if i in installed]


def measure(plan: Plan, installed: Sequence[str], rounds: int) -> Results:
    """Every implementation over its scenarios, *rounds* times, the order rotating."""
    results = Results()
    impls = ["floor", *dict.fromkeys(installed)]
    for r in range(rounds):
        shift = r % len(impls)
        for impl in impls[shift:] + impls[:shift]:
            if impl == "floor":
                todo = plan.floor_specs
            else:
                mine = [sc for sc in plan.scenarios if impl in _impls_for(sc.kind, installed)]
                if not mine:
                    continue
                kinds = dict.fromkeys(sc.kind for sc in mine)
                todo = [plan.warm_ups[kind] for kind in kinds]
                todo += [{"name": sc.name, "kind": sc.kind, **sc.spec} for sc in mine]
            winners = {sc.name: sc.winner for sc in plan.scenarios}
            for name, outcome in run_client(plan.lab, impl, todo).items():
                if name.startswith(WARM_UP):
                    continue
                if outcome["error"] is not None:
                    results.problems.append(f"{impl}, {name}: {outcome['error']}")
                    results.add(name, impl, float("inf"))
                    continue
                if name in winners and outcome["peer"][0] != winners[name]:
                    results.other_winners.append(
                        f"{impl}, {name}: connected to {outcome['peer'][0]},"
                        f" the ideal client to {winners[name]}"
                    )
                results.add(name, impl, outcome["elapsed"])
    return results


def _available(impls: Sequence[str]) -> tuple[list[str], list[str]]:
    """The implementations importable here (in order, once each), and the others."""
    unique = list(dict.fromkeys(impls))
    have = [i for i in unique if importlib.util.find_spec(IMPORT_NAMES.get(i, "asyncio"))]
    return have, [i for i in unique if i not in have]


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds == float("inf"):
        return "failed"
    return f"{seconds * 1000:.1f}"


def _cell(seconds: float | None, ideal: float) -> str:
    if seconds is None or seconds == float("inf"):
        return _ms(seconds)
    return f"{seconds * 1000:.1f} ({seconds / ideal:.2f}x)"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def chart(
    path: Path,
    scenarios: list[Scenario],
    results: Results,
    floor: dict[str, float],
    installed: Sequence[str],
) -> Path:
    """Two panels (pre-resolved, host names): grouped bars per scenario, log scale, ideal."""
    import matplotlib.pyplot as plt

    from bench.plot import COLOURS  # also selects the headless backend

    colours = COLOURS | {
        "asyncio": "#2166ac",
        "trio": "#d6604d",
        "anyio": "#f4a582",
        "async_stagger": "#4393c3",
    }
    panels = [
        ("pre-resolved: start_connection", "addrs", _impls_for("addrs", installed)),
        ("host names: connect / create_connection / ...", "host", _impls_for("host", installed)),
    ]
    panels = [p for p in panels if p[2] and any(sc.kind == p[1] for sc in scenarios)]
    groups = max(sum(sc.kind == kind for sc in scenarios) for _, kind, _ in panels)
    size = (max(6.0, 1.4 * groups + 1.5), 4.2 * len(panels))
    fig, axes = plt.subplots(len(panels), 1, figsize=size, squeeze=False)
    for ax, (title, kind, impls) in zip(axes[:, 0], panels, strict=True):
        mine = [sc for sc in scenarios if sc.kind == kind]
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            xs, heights, labels = [], [], []
            for g, sc in enumerate(mine):
                value = results.median(sc.name, impl)
                if value is not None and value != float("inf"):
                    xs.append(g + (i - (len(impls) - 1) / 2) * width)
                    heights.append(value * 1000)
                    labels.append(f"{value / sc.ideal(floor):.2f}x")
            bars = ax.bar(xs, heights, width, label=impl, color=colours.get(impl))
            ax.bar_label(bars, labels, fontsize=7, padding=1)
        for g, sc in enumerate(mine):
            label = "RFC 8305 ideal" if g == 0 else "_nolegend_"
            ideal = sc.ideal(floor) * 1000
            ax.hlines(ideal, g - 0.45, g + 0.45, colors="black", linewidth=1.5, label=label)
        ax.set_yscale("log")
        tallest = max(
            [sc.ideal(floor) for sc in mine] + [results.finite_max(sc.name) for sc in mine]
        )
        ax.set_ylim(10, tallest * 1000 * 4)  # from 10 ms; room for the labels and the legend
        ax.set_xticks(range(len(mine)), [sc.name for sc in mine], fontsize=8)
        ax.set_ylabel("time to connect, ms (log)")
        ax.set_title(f"{title} (labels: ratio to the ideal)", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Time to connect in the network lab (median per scenario)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(
    cfg: Config,
    scenarios: list[Scenario],
    results: Results,
    rounds: int,
    installed: Sequence[str],
    missing: Sequence[str],
) -> SectionReport:
    """The tables, the targets and the chart."""
    floor = {name: results.median(name, "floor") or nominal for name, nominal in FLOORS.items()}
    targets: list[Target] = []
    text = [
        (
            f"Median of {rounds} round(s); in every round each implementation runs all its"
            " scenarios in one fresh process in the client namespace, the order of the"
            " implementations rotating. Time: `time.monotonic()` around the call only."
            f" happy_eyeballs_delay {DELAY * 1000:.0f} ms everywhere, resolution delay"
            f" {RESOLUTION_DELAY * 1000:.0f} ms where the implementation has one."
            " *ideal*: the RFC 8305 schedule's own waits plus the lab's path times as the"
            " floor measured them (nominal values in brackets); *excess*: happydial minus"
            " ideal. Ratios are to the ideal; the targets judge the ratio."
        ),
        "",
        "Lab path floor (bare `sock_connect` / single-family `getaddrinfo`, median): "
        + ", ".join(
            f"{name}: {_ms(results.median(name, 'floor'))} ms"
            for name in FLOORS
            if results.median(name, "floor") is not None
        )
        + ". The relay adds 1-2 ms per connection on top of the configured RTT.",
        "",
    ]
    for kind, limit, heading in (
        ("addrs", PRE_LIMIT, "Pre-resolved addresses (`start_connection`)"),
        ("host", HOST_LIMIT, "Host names"),
    ):
        impls = _impls_for(kind, installed)
        mine = [sc for sc in scenarios if sc.kind == kind]
        if not mine:
            continue
        rows = []
        for sc in mine:
            ideal = sc.ideal(floor)
            ours = results.median(sc.name, "happydial")
            excess = "n/a" if ours is None or ours == float("inf") else _ms(ours - ideal)
            row = [sc.name, f"{_ms(ideal)} ({_ms(sc.nominal())})", excess]
            row += [_cell(results.median(sc.name, impl), ideal) for impl in impls]
            rows.append(row)
            if sc.spec.get("https"):
                # Issue 15's own target (one RTT + the resolution delay + 10%) is judged
                # in the hints section, beside the peers; this row shows the excess
                # over the floor, DNS client and HTTPS record included.
                row[0] += " (target: the hints section)"
            elif ours is not None:
                name = f"lab: happydial time to connect / ideal, {sc.name}"
                targets.append(Target(name, ours / ideal, limit))
        text += [
            f"**{heading}**: ms (ratio to ideal); target happydial <= {limit:.2f}x.",
            "",
            table(["scenario", "ideal ms", "excess ms", *[f"{i}" for i in impls]], rows),
            "",
        ]
    text.append(
        "Host-name peers: `asyncio` is `loop.create_connection(host=..., happy_eyeballs_delay="
        "0.25)`, `trio` `trio.open_tcp_stream`, `anyio` `anyio.connect_tcp` (asyncio backend),"
        " `async_stagger` `create_connected_sock(delay=0.25)`. The first three resolve with one"
        " `getaddrinfo(AF_UNSPEC)`, which returns only when both the A and the AAAA answers"
        " are in."
    )
    text += [
        "",
        "Versions: " + ", ".join(f"{p} {_version(p)}" for p in PEER_PACKAGES) + ".",
    ]
    if missing:
        text += ["", f"Not installed, so not measured: {', '.join(missing)}."]
    if results.other_winners:
        text += [
            "",
            (
                "Winners other than the ideal client's (a peer that waited for both DNS"
                " answers rightly prefers IPv6; anything else is a problem):"
            ),
            "",
            *[f"- {w} ({n} of {rounds})" for w, n in Counter(results.other_winners).items()],
        ]
    if results.problems:
        problems = Counter(results.problems).items()
        text += ["", "Problems:", "", *[f"- {p} ({n}x)" for p, n in list(problems)[:20]]]
    path = cfg.out / "lab_time_to_connect.png"
    charts = [chart(path, scenarios, results, floor, installed)]
    return SectionReport(TITLE, "\n".join(text), targets, charts)


def start_or_skip(title: str) -> tuple[Any, SectionReport | None]:
    """A started lab and None; or None and section *title*'s report saying why it is skipped."""
    from tests.lab.netns import Lab, LabUnavailableError

    try:
        return Lab.start(), None
    except LabUnavailableError as exc:
        return None, SectionReport(title, f"Skipped: the network lab is unavailable here ({exc}).")


def skipped(reason: str) -> SectionReport:
    return SectionReport(TITLE, f"Skipped: the network lab is unavailable here ({reason}).")


def run(cfg: Config) -> SectionReport:
    """Section 4."""
    try:
        from tests.lab.netns import Lab, LabUnavailableError
    except ImportError as exc:  # pragma: no cover - the harness runs from a checkout
        return skipped(f"cannot import tests.lab: {exc}")
    impls, missing = _available([*PRE_IMPLS, *HOST_IMPLS])
    try:
        lab = Lab.start()
    except LabUnavailableError as exc:
        return skipped(str(exc))
    try:
        plan = build_plan(lab)
        if cfg.quick:
            plan.scenarios = [sc for sc in plan.scenarios if sc.quick]
            used = {name for sc in plan.scenarios for name in sc.floors}
            plan.floor_specs = [
                spec
                for spec in plan.floor_specs
                if spec["name"] in used or spec["name"].startswith(WARM_UP)
            ]
        rounds = 1 if cfg.quick else 3
        results = measure(plan, impls, rounds)
    finally:
        try:
            lab.close()
        except RuntimeError as exc:  # a child wrote on stderr: report it, keep the figures
            teardown = str(exc)
        else:
            teardown = ""
    if teardown:
        results.problems.append(teardown[:2000])
    return render(cfg, plan.scenarios, results, rounds, impls, missing)
