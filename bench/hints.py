"""The hints section: HTTPS record hints before the A and AAAA answers (HEv3, issue 15).

In the network lab (section 4's, ``tests/lab``): a name whose A and AAAA answers come
1 s late, and whose HTTPS record (RFC 9460) carries ``ipv6hint``/``ipv4hint`` and is
answered after 10 ms (the lab's "fast" DNS answer). happydial asks for it with
``DnspythonResolver(https=True)`` and races the hints as provisional addresses; the
peers resolve with the C library's ``getaddrinfo(AF_UNSPEC)``, which returns when both
late answers are in.

Two scenarios: hints for both families (the IPv6 hint goes at once: one DNS answer and
one RTT) and an IPv4 hint only (it waits the resolution delay for IPv6 first, RFC 8305
section 3). The issue's target, per scenario: at most one RTT plus the resolution delay,
plus 10 %; the lookup the floor measures (a single-family ``getaddrinfo`` of a name
answered after 10 ms) is part of every ideal, as in section 4.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.common import Config, SectionReport, Target, median, table
from bench.lab import (
    DNS_FAST,
    HOST_RTT,
    RESOLUTION_DELAY,
    WARM_UP,
    Plan,
    Scenario,
    run_client,
    start_or_skip,
)

TITLE = "HTTPS record hints before A and AAAA (Happy Eyeballs v3)"
LATE = 1.0  # the A and AAAA answers' delay
LIMIT = 1.10
FLOORS = ("dns 10 ms", "connect 20 ms")
IMPLS = {
    "happydial": "happydial `connect`, `DnspythonResolver(https=True)`",
    "asyncio-open": "`asyncio.open_connection`",
    "aiohappyeyeballs": "`loop.getaddrinfo` + aiohappyeyeballs `start_connection`",
}


def build_plan(lab: Any) -> Plan:
    """The two names, the floor's addresses, configured at once."""
    from tests.lab.netns import Rule

    plan = Plan(lab)
    rule = Rule(rtt=HOST_RTT)
    v6, v4 = plan.pair(rule, rule)
    both = f"1 . alpn=h2 ipv6hint={v6} ipv4hint={v4}"
    plan.named(
        "hints for both families", v6, v4, aaaa=LATE, a=LATE, winner=v6, schedule=0.0, https=both
    )
    plan.scenarios[-1].quick = True
    v6, v4 = plan.pair(rule, rule)
    only = f"1 . alpn=h2 ipv4hint={v4}"
    plan.named(
        "IPv4 hint only",
        v6,
        v4,
        aaaa=LATE,
        a=LATE,
        winner=v4,
        schedule=RESOLUTION_DELAY,
        https=only,
    )
    plan.floor_and_warm_ups()
    lab.configure(rules=plan.rules, live=plan.live, zone=plan.zone)
    return plan


def measure(plan: Plan, rounds: int) -> tuple[dict[tuple[str, str], list[float]], list[str]]:
    """Seconds per (scenario or floor, implementation); and the problems seen."""
    times: dict[tuple[str, str], list[float]] = {}
    problems: list[str] = []
    impls = ["floor", *IMPLS]
    for r in range(rounds):
        for impl in impls[r % len(impls) :] + impls[: r % len(impls)]:
            if impl == "floor":
                todo = plan.floor_specs
            else:  # an untimed first call (with HTTPS records, for happydial) first
                todo = [{**plan.warm_ups["host"], "https": impl == "happydial"}]
                todo += [{"name": sc.name, "kind": sc.kind, **sc.spec} for sc in plan.scenarios]
            winners = {sc.name: sc.winner for sc in plan.scenarios}
            for name, outcome in run_client(plan.lab, impl, todo).items():
                if name.startswith(WARM_UP):
                    continue
                if outcome["error"] is not None:
                    problems.append(f"{impl}, {name}: {outcome['error']}")
                elif impl == "happydial" and outcome["peer"][0] != winners[name]:
                    problems.append(f"{impl}, {name}: connected to {outcome['peer'][0]}")
                else:
                    times.setdefault((name, impl), []).append(outcome["elapsed"])
    return times, problems


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def render(
    scenarios: Sequence[Scenario],
    times: dict[tuple[str, str], list[float]],
    problems: list[str],
    rounds: int,
) -> SectionReport:
    """The table (each implementation's median, and its ratio to the ideal) and the targets."""
    floor = {name: median(times.get((name, "floor"), [])) for name in FLOORS}
    path = sum(floor.values())  # one fast DNS answer and one RTT, as measured
    rows, targets = [], []
    for sc in scenarios:
        ideal = path + sc.schedule
        target = path + RESOLUTION_DELAY  # the issue's: one RTT + the resolution delay
        row = [sc.name, _ms(ideal), _ms(target)]
        for impl in IMPLS:
            values = times.get((sc.name, impl), [])
            row.append(f"{_ms(median(values))} ({median(values) / ideal:.2f}x)" if values else "-")
        rows.append(row)
        ours = times.get((sc.name, "happydial"))
        if ours:
            name = f"hints: happydial / (one RTT + resolution delay), {sc.name}"
            targets.append(Target(name, median(ours) / target, LIMIT))
    text = [
        (
            f"Median of {rounds} round(s), each implementation in a fresh client process per"
            " round (an untimed warm-up call first), the order rotating. A and AAAA answered"
            f" after {LATE:.0f} s, the HTTPS record after {DNS_FAST * 1000:.0f} ms; relay RTT"
            f" {HOST_RTT * 1000:.0f} ms; happy_eyeballs_delay 250 ms, resolution delay"
            f" {RESOLUTION_DELAY * 1000:.0f} ms. *ideal*: the lab's floor (one"
            f" {DNS_FAST * 1000:.0f} ms DNS answer and one RTT, measured:"
            f" {_ms(floor[FLOORS[0]])} + {_ms(floor[FLOORS[1]])} ms) plus the schedule's"
            " wait (the resolution delay when the only hint is IPv4); *target*: the issue's,"
            " one RTT + the resolution delay (after the same DNS answer); happydial must stay"
            f" within {LIMIT:.2f}x of it. Cells: ms (ratio to the ideal)."
        ),
        "",
        table(["scenario", "ideal ms", "target ms", *IMPLS], rows),
        "",
        "Columns: " + "; ".join(f"`{key}`: {what}" for key, what in IMPLS.items()) + ".",
    ]
    if problems:
        text += ["", "Problems:", "", *[f"- {p}" for p in problems[:20]]]
    return SectionReport(TITLE, "\n".join(text), targets)


def run(cfg: Config) -> SectionReport:
    """The hints section."""
    lab, skipped = start_or_skip(TITLE)
    if skipped is not None:
        return skipped
    rounds = 1 if cfg.quick else 5
    try:
        plan = build_plan(lab)
        if cfg.quick:
            plan.scenarios = [sc for sc in plan.scenarios if sc.quick]
        times, problems = measure(plan, rounds)
    finally:
        lab.close()
    return render(plan.scenarios, times, problems, rounds)
