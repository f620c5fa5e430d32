"""Delay policies in the network lab (issue 16, part 3): a LAN, and the dead-IPv6 scenarios.

The lab of ``tests/test_lab.py`` carries only documentation prefixes, which
:class:`happydial.LanDelay` rightly treats as remote. :class:`LanLab` is the same lab with a
"LAN" pool besides: private IPv4 (192.168.77.0/24) and unique local IPv6 (fd00:77::/64)
server addresses, relayed like the others (the namespaces are isolated: nothing leaves
them). Its client runs ``tests/lab/delays_client.py``, which builds a policy from the JSON
spec. It is a lab of its own (other namespace and device names), so it can live next to
``test_lab.py``'s in one session.

The figures in ``docs/guides/delays.md`` come from these scenarios
(``pytest tests/test_lab_delays.py -s`` prints them). Needs root; skipped otherwise, except
that with ``CI=true`` an unavailable lab is a failure.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .lab.netns import CLIENT_V4, CLIENT_V6, DEAD, HERE, PORT, Lab, LabUnavailableError, Rule
from .test_lab import (
    DELAY,
    EARLY,
    FAST,
    MARGIN,
    RTT,
    assert_no_leak,
    assert_won,
    connect,
    connection,
    dual_stack_zone,
    run_sequence,
    show,
    start_connection,
    started,
)

pytestmark = pytest.mark.lab


LAN_V4 = ipaddress.ip_network("192.168.77.0/24")
LAN_V6 = ipaddress.ip_network("fd00:77::/64")
LAN_POOL = 40
LAN_RTT = 0.0005  # a wired LAN's round trip; the relay releases packets on whole milliseconds
LAN = Rule(rtt=LAN_RTT)
# LanDelay's bound is 110 ms (issue 16): 100 ms and the live address's connect. On top of
# it, what the 2-core test machine (shared with other test runs) may add: the relay is a
# Python process polling in whole milliseconds, and the client's timers are late by up to a
# loop iteration. 30 ms is a fifth of test_lab's MARGIN, and well under the 250 ms saved.
LAN_MARGIN = 0.03
RUNS = 3  # LanDelay's runs in the LAN scenario, at most: see there
DELAYS_CLIENT = Path(__file__).resolve().parent / "lab" / "delays_client.py"

# The policies compared, as delays_client.py builds them.
POLICIES: dict[str, object] = {
    "250 ms (a number)": DELAY,
    "ConstantDelay()": {"policy": "constant"},
    "ExponentialDelay()": {"policy": "exponential"},
    "LanDelay()": {"policy": "lan"},
}


class LanLab(Lab):
    """The lab, plus a pool of private and unique local server addresses."""

    def __init__(self) -> None:
        super().__init__()
        pid = os.getpid()
        # Not hd-<pid>-*: test_lab.py's lab may exist at the same time.
        self.client_ns = f"hdlan-{pid}-c"
        self.server_ns = f"hdlan-{pid}-s"
        self.client_tun = f"hlc{pid}"[:15]
        self.server_tun = f"hls{pid}"[:15]
        self._next_lan = 1

    def _relay_command(self) -> list[str]:
        return [*super()._relay_command(), "--server-net", str(LAN_V4), "--server-net", str(LAN_V6)]

    def _client_config(self) -> str:
        tun = self.client_tun
        return (
            super()._client_config()
            + f"route add {LAN_V4} dev {tun} src {CLIENT_V4}\n"
            + f"route add {LAN_V6} dev {tun} src {CLIENT_V6}\n"
        )

    def _server_config(self) -> str:
        lines = [super()._server_config()]
        for i in range(1, LAN_POOL + 1):
            lines.append(f"addr add {LAN_V4[i]}/32 dev lo\n")
            lines.append(f"addr add {LAN_V6[i]}/128 dev lo\n")
        return "".join(lines)

    def _client_args(self, spec: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        command, env = super()._client_args(spec)
        command[command.index(str(HERE / "client.py"))] = str(DELAYS_CLIENT)
        return command, env

    def allocate_lan(self, v6: int = 0, v4: int = 0) -> tuple[list[str], list[str]]:
        """Fresh LAN server addresses, never handed out before in this lab."""
        first = self._next_lan
        if first + max(v6, v4) > LAN_POOL + 1:
            raise RuntimeError("the lab's LAN pool is exhausted")
        self._next_lan += max(v6, v4)
        six = [str(LAN_V6[i]) for i in range(first, first + v6)]
        four = [str(LAN_V4[i]) for i in range(first, first + v4)]
        return six, four


@pytest.fixture(scope="module")
def lan_lab() -> Iterator[LanLab]:
    """A LanLab for this module; as test_lab.py's lab, it must run in CI (``CI=true``)."""
    try:
        the_lab = LanLab.start()
    except LabUnavailableError as exc:
        required = os.environ.get("CI") == "true"
        (pytest.fail if required else pytest.skip)(f"network lab unavailable: {exc}")
    with the_lab:  # closed (namespaces, relay, server) whatever the tests did
        yield the_lab


def figure(scenario: str, policy: str, loop: str, report: dict[str, Any]) -> None:
    """Print one figure of the guide's table (``pytest -s`` shows them)."""
    print(f"FIGURE {scenario} | {policy} | {loop} | {report['elapsed'] * 1000:.1f} ms")


def delay_events(report: dict[str, Any]) -> list[str]:
    return [event for event in report["trace"] if "DelayAdjusted" in event]


# -- a LAN: 0.5 ms RTT, the first address black-holed -----------------------------------------


@pytest.mark.parametrize("pair", ["IPv4", "IPv6 ULA, then IPv4"])
def test_lan_rule_brings_a_dead_lan_address_from_250_to_110_ms(
    lan_lab: LanLab, loop_name: str, pair: str
) -> None:
    six, four = lan_lab.allocate_lan(v6=1, v4=2)
    dead, live = (four[0], four[1]) if pair == "IPv4" else (six[0], four[1])
    lan_lab.configure(rules={dead: DEAD, live: LAN}, live=[dead, live])
    # RFC 8305's constant 250 ms: the dead address costs all of it.
    constant = start_connection(lan_lab, loop_name, [dead, live], kwargs={"interleave": 0})
    figure(f"LAN, {pair}", "250 ms (a number)", loop_name, constant)
    assert_won(constant, live, DELAY + LAN_RTT)
    assert constant["elapsed"] >= DELAY
    # The LAN rule: 100 ms. The bound is on the best of up to RUNS runs: a load spike
    # on the shared machine (seen: +120 ms, to the constant delay's runs as much) must not
    # fail it, while a rule that did not work could never pass it (it would take 250 ms).
    spec = {"interleave": 0, "happy_eyeballs_delay": {"policy": "lan"}}
    times = []
    for _ in range(RUNS):
        lan = start_connection(lan_lab, loop_name, [dead, live], kwargs=spec)
        figure(f"LAN, {pair}", "LanDelay()", loop_name, lan)
        assert lan["error"] is None, show(lan)
        assert lan["peer"] == [live, PORT], show(lan)
        assert lan["elapsed"] >= 0.1 - EARLY, show(lan)
        assert_no_leak(lan)
        assert len(delay_events(lan)) == 1, show(lan)
        assert "delay=0.1," in delay_events(lan)[0], show(lan)
        assert "reason='lan'" in delay_events(lan)[0], show(lan)
        times.append(lan["elapsed"])
        if lan["elapsed"] <= 0.110 + LAN_MARGIN:
            break
    assert min(times) <= 0.110 + LAN_MARGIN, times


@pytest.mark.parametrize("policy", ["ConstantDelay()", "ExponentialDelay()"])
def test_lan_figures_of_the_other_policies(lan_lab: LanLab, loop_name: str, policy: str) -> None:
    _, four = lan_lab.allocate_lan(v4=2)
    dead, live = four
    lan_lab.configure(rules={dead: DEAD, live: LAN}, live=[dead, live])
    spec = {"interleave": 0, "happy_eyeballs_delay": POLICIES[policy]}
    report = start_connection(lan_lab, loop_name, [dead, live], kwargs=spec)
    figure("LAN, IPv4", policy, loop_name, report)
    assert_won(report, live, (0.25 if policy == "ConstantDelay()" else 0.05) + LAN_RTT)


# -- the dead-IPv6 scenarios of test_lab.py, with each policy -------------------------------

# The attempt delay each policy picks after the one dead IPv6 attempt to a remote address.
FIRST_DELAY = {
    "250 ms (a number)": DELAY,
    "ConstantDelay()": 0.25,
    "ExponentialDelay()": 0.05,
    "LanDelay()": 0.25,  # documentation addresses are not on the LAN
}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_ipv6_dead_ipv4_fine(lan_lab: LanLab, loop_name: str, policy: str) -> None:
    (v6,), (v4,) = lan_lab.allocate(v6=1, v4=1)
    lan_lab.configure(rules={v6: DEAD, v4: FAST}, live=[v6, v4])
    kwargs = {"happy_eyeballs_delay": POLICIES[policy]}
    report = start_connection(lan_lab, loop_name, [v6, v4], kwargs=kwargs)
    figure("dead IPv6, start_connection", policy, loop_name, report)
    assert_won(report, v4, FIRST_DELAY[policy] + RTT)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_aaaa_dead_address_ipv4_after_delay(lan_lab: LanLab, loop_name: str, policy: str) -> None:
    (v6,), (v4,) = lan_lab.allocate(v6=1, v4=1)
    host = f"aaaa-dead-{list(POLICIES).index(policy)}-{loop_name}.lab.test"
    zone = dual_stack_zone(host, v6, v4)
    lan_lab.configure(rules={v6: DEAD, v4: FAST}, live=[v6, v4], zone=zone)
    report = connect(lan_lab, loop_name, host, kwargs={"happy_eyeballs_delay": POLICIES[policy]})
    figure("dead IPv6, connect", policy, loop_name, report)
    assert_won(report, v4, FIRST_DELAY[policy] + RTT)
    assert report["elapsed"] <= FIRST_DELAY[policy] + RTT + MARGIN


def test_history_overrides_the_policy_once_it_knows_the_address(
    lan_lab: LanLab, loop_name: str
) -> None:
    # IPv6 answered in 30 ms three times, then dies: the history's adaptive delay,
    # max(2 x 30 ms, 100 ms), replaces ExponentialDelay's 50 ms for it (RFC 8305 s. 5).
    (v6,), (v4,) = lan_lab.allocate(v6=1, v4=1)
    ipv6, ipv4 = Rule(rtt=0.03), Rule(rtt=0.04)
    lan_lab.configure(rules={v6: ipv6, v4: ipv4}, live=[v6, v4])

    def on_pause(label: str) -> None:
        assert label == "ipv6 dies"
        lan_lab.configure(rules={v6: DEAD, v4: ipv4})

    step = connection([v6, v4], happy_eyeballs_delay={"policy": "exponential"})
    steps = [step, step, step, {"pause": "ipv6 dies"}, step]
    *healthy, dies = run_sequence(lan_lab, loop_name, steps, on_pause)
    for report in healthy:
        assert_won(report, v6, 0.03)
    figure("dead IPv6 after 3 good calls", "AddressHistory + ExponentialDelay()", loop_name, dies)
    assert_won(dies, v4, 0.1 + 0.04)
    assert started(dies) == [v6, v4], show(dies)
    delays = [e for e in dies["events"] if e["type"] == "DelayAdjusted"]
    assert [(e["address"], e["delay"], e["reason"]) for e in delays] == [
        (v6, pytest.approx(0.1), "history")
    ]
