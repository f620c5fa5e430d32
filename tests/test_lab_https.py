"""HTTPS records (RFC 9460, Happy Eyeballs v3) end to end in the network lab.

The lab's DNS server answers HTTPS records (``tests/lab/server.py``) and the client asks
for them with ``DnspythonResolver(https=True)``. Needs root, as ``tests/test_lab.py``.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from .lab.netns import DEAD, Lab
from .test_lab import (
    DELAY,
    EARLY,
    FAST,
    MARGIN,
    RESOLUTION_DELAY,
    RTT,
    assert_no_leak,
    assert_won,
    connect,
    dual_stack_zone,
    show,
)

pytestmark = pytest.mark.lab


RESOLVER = "dnspython-https"
SLOW = 1.0  # the A and AAAA answers' delay in the early-hints scenarios
SERVICE_PORT = 8443


def https_zone(*records: str, delay: float = 0.0) -> dict[str, Any]:
    return {"HTTPS": {"records": list(records), "delay": delay}}


def chosen(report: dict[str, Any]) -> list[str]:
    return [line for line in report["trace"] if "ServiceBindingChosen(" in line]


def assert_won_on(report: dict[str, Any], address: str, port: int, ideal: float) -> None:
    assert report["error"] is None, show(report)
    assert report["peer"] == [address, port], show(report)
    elapsed = report["elapsed"]
    print(f"elapsed {elapsed:.3f} s (ideal {ideal:.3f} s)")
    assert ideal - EARLY <= elapsed <= ideal + MARGIN, show(report)
    assert_no_leak(report)


@pytest.mark.parametrize("hints", ["both", "ipv4"])
def test_early_hints_connect_before_a_and_aaaa(lab: Lab, loop_name: str, hints: str) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    host = f"hints-{hints}-{loop_name}.lab.test"
    zone = dual_stack_zone(host, v6, v4, aaaa={"delay": SLOW}, a={"delay": SLOW})
    hint = f"ipv6hint={v6} ipv4hint={v4}" if hints == "both" else f"ipv4hint={v4}"
    zone[host].update(https_zone(f"1 . alpn=h2 {hint}"))
    lab.configure(rules={v6: FAST, v4: FAST}, live=[v6, v4], zone=zone)
    report = connect(lab, loop_name, host, resolver=RESOLVER, settle_until=SLOW + 0.3)
    # An IPv6 hint goes at once; IPv4 hints alone wait the resolution delay for IPv6.
    winner, ideal = (v6, RTT) if hints == "both" else (v4, RESOLUTION_DELAY + RTT)
    assert_won(report, winner, ideal)
    assert ideal <= RTT + RESOLUTION_DELAY  # the target: one RTT plus the resolution delay
    assert len(chosen(report)) == 1, show(report)
    assert "alpn=('h2', 'http/1.1')" in chosen(report)[0], show(report)


def test_alias_mode_target_is_used_on_its_port(lab: Lab, loop_name: str) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    host, target = f"alias-{loop_name}.lab.test", f"pop-{loop_name}.lab.test"
    zone: dict[str, Any] = {host: https_zone(f"0 {target}.")}  # no A/AAAA of its own
    zone.update(dual_stack_zone(target, v6, v4))
    zone[target].update(https_zone(f"1 . port={SERVICE_PORT}"))
    lab.configure(rules={v6: FAST, v4: FAST}, zone=zone)
    assert lab.server is not None
    lab.server.request("listen", addresses=[v6, v4], port=SERVICE_PORT)
    report = connect(lab, loop_name, host, resolver=RESOLVER)
    assert_won_on(report, v6, SERVICE_PORT, RTT)


def test_dead_priority_1_lands_on_priority_2_within_one_attempt_delay(
    lab: Lab, loop_name: str
) -> None:
    (dead6, live6), (dead4, live4) = lab.allocate(v6=2, v4=2)
    host = f"prio-{loop_name}.lab.test"
    one, two = f"one-{loop_name}.lab.test", f"two-{loop_name}.lab.test"
    zone: dict[str, Any] = {host: https_zone(f"2 {two}.", f"1 {one}.")}
    zone.update(dual_stack_zone(one, dead6, dead4))
    zone.update(dual_stack_zone(two, live6, live4))
    rules = {dead6: DEAD, dead4: DEAD, live6: FAST, live4: FAST}
    lab.configure(rules=rules, live=[live6, live4], zone=zone)
    report = connect(lab, loop_name, host, resolver=RESOLVER, kwargs={"family": socket.AF_INET6})
    # one's IPv6 address, dead; then, one attempt delay later, two's.
    assert_won(report, live6, DELAY + RTT)
    assert f"'{one}'" not in chosen(report)[0]


@pytest.mark.parametrize("aaaa_delay", [0.0, 2.0])
def test_no_https_record_same_time_as_before(lab: Lab, loop_name: str, aaaa_delay: float) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    host = f"plain-{aaaa_delay:.0f}-{loop_name}.lab.test"
    zone = dual_stack_zone(host, v6, v4, aaaa={"delay": aaaa_delay})
    lab.configure(rules={v6: FAST, v4: FAST}, live=[v6, v4], zone=zone)
    settle = aaaa_delay + 0.3 if aaaa_delay else 0.0
    report = connect(lab, loop_name, host, resolver=RESOLVER, settle_until=settle)
    # Exactly what tests/test_lab.py expects of the same zones without HTTPS records.
    if aaaa_delay:
        assert_won(report, v4, RESOLUTION_DELAY + RTT)
    else:
        assert_won(report, v6, RTT)
    assert chosen(report) == []


def test_a_slow_https_answer_holds_the_race_at_most_the_resolution_delay(
    lab: Lab, loop_name: str
) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    host = f"https-slow-{loop_name}.lab.test"
    zone = dual_stack_zone(host, v6, v4)
    zone[host].update(https_zone(f"1 . port={SERVICE_PORT}", delay=SLOW))
    lab.configure(rules={v6: FAST, v4: FAST}, live=[v6, v4], zone=zone)
    report = connect(lab, loop_name, host, resolver=RESOLVER, settle_until=SLOW + 0.3)
    assert_won(report, v6, RESOLUTION_DELAY + RTT)  # on the caller's port: the record came late
    assert chosen(report) == []
