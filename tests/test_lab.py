"""End-to-end Happy Eyeballs scenarios in a real network lab (see ``tests/lab/__init__.py``).

Each scenario runs one happydial call in the client namespace (on asyncio and on uvloop)
against server addresses that are live, refused, dead (the relay drops their packets) or
slow (the relay delays them), and asserts the winner and the time it took: between the
RFC 8305 ideal and the ideal plus :data:`MARGIN`. Needs root; skipped otherwise, except
that with ``CI=true`` an unavailable lab is a failure.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

import happydial

from .lab.netns import DEAD, PORT, Lab, LabUnavailableError, Rule

pytestmark = pytest.mark.lab

DELAY = 0.25  # happy_eyeballs_delay, RFC 8305's recommendation
RESOLUTION_DELAY = 0.05
RTT = 0.02  # a healthy address's round-trip time through the relay
FAST = Rule(rtt=RTT)
MARGIN = 0.15  # how late a noisy 2-core machine may be
EARLY = 0.005  # timer granularity: uvloop's timers tick in whole milliseconds
V6, V4 = socket.AF_INET6, socket.AF_INET


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    try:
        the_lab = Lab.start()
    except LabUnavailableError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the network lab must run in CI, but: {exc}")
        pytest.skip(f"network lab unavailable: {exc}")
    try:
        yield the_lab
    finally:
        the_lab.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    name: str = request.param
    return name


@pytest.fixture
def connect_available() -> None:
    # Guard until happydial.connect lands; remove once it exists.
    if not hasattr(happydial, "connect"):
        pytest.skip("happydial.connect not available yet")


# -- helpers --------------------------------------------------------------------------------


def start_connection(lab: Lab, loop_name: str, addresses: list[str], **spec: Any) -> dict[str, Any]:
    """Run start_connection over *addresses* (in this order) on port PORT."""
    kwargs = {"happy_eyeballs_delay": DELAY, **spec.pop("kwargs", {})}
    addr_infos = [[V6 if ":" in address else V4, address, PORT] for address in addresses]
    return lab.run_client(
        {
            "loop": loop_name,
            "call": "start_connection",
            "addr_infos": addr_infos,
            "kwargs": kwargs,
            **spec,
        }
    )


def connect(lab: Lab, loop_name: str, host: str, **spec: Any) -> dict[str, Any]:
    """Run happydial.connect(host, PORT) with the RFC 8305 delays."""
    kwargs = {
        "happy_eyeballs_delay": DELAY,
        "resolution_delay": RESOLUTION_DELAY,
        **spec.pop("kwargs", {}),
    }
    return lab.run_client(
        {"loop": loop_name, "call": "connect", "host": host, "port": PORT, "kwargs": kwargs, **spec}
    )


def show(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1)


def assert_timely(report: dict[str, Any], ideal: float) -> None:
    elapsed = report["elapsed"]
    print(f"elapsed {elapsed:.3f} s (ideal {ideal:.3f} s)")
    assert ideal - EARLY <= elapsed <= ideal + MARGIN, (
        f"took {elapsed:.3f} s, ideal {ideal:.3f} s\n{show(report)}"
    )


def assert_no_leak(report: dict[str, Any]) -> None:
    assert report["leaked"] == [], show(report)
    assert report["fds_after"] == report["fds_before"], show(report)


def assert_won(report: dict[str, Any], address: str, ideal: float) -> None:
    assert report["error"] is None, show(report)
    assert not report["cancelled"], show(report)
    assert report["peer"] == [address, PORT], show(report)
    assert report["blocking"] is False, show(report)
    assert_timely(report, ideal)
    assert_no_leak(report)


# -- pre-resolved addresses: start_connection -------------------------------------------------


def test_ipv6_dead_ipv4_fine(lab: Lab, loop_name: str) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    lab.configure(rules={v6: DEAD, v4: FAST}, live=[v6, v4])
    report = start_connection(lab, loop_name, [v6, v4])
    assert_won(report, v4, DELAY + RTT)


def test_ipv6_slow_ipv4_fast(lab: Lab, loop_name: str) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    lab.configure(rules={v6: Rule(rtt=0.7), v4: FAST}, live=[v6, v4])
    report = start_connection(lab, loop_name, [v6, v4])
    assert_won(report, v4, DELAY + RTT)


def test_first_address_refused_next_starts_at_once(lab: Lab, loop_name: str) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    lab.configure(rules={v6: FAST, v4: FAST}, live=[v4])  # no listener on v6: RST
    report = start_connection(lab, loop_name, [v6, v4])
    assert_won(report, v4, RTT + RTT)
    assert any("AttemptFailed" in event and "111" in event for event in report["trace"])


def test_three_dead_ipv6_then_ipv4_interleaved_second(lab: Lab, loop_name: str) -> None:
    six, (v4,) = lab.allocate(v6=3, v4=1)
    lab.configure(rules={**dict.fromkeys(six, DEAD), v4: FAST}, live=[*six, v4])
    report = start_connection(lab, loop_name, [*six, v4])  # interleave=1 puts v4 second
    assert_won(report, v4, DELAY + RTT)


def test_only_reachable_address_is_slow_and_not_abandoned(lab: Lab, loop_name: str) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    lab.configure(rules={v6: DEAD, v4: Rule(rtt=0.6)}, live=[v6, v4])
    report = start_connection(lab, loop_name, [v6, v4])
    assert_won(report, v4, DELAY + 0.6)


def test_healthy_dual_stack_ipv6_wins_at_once(lab: Lab, loop_name: str) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    lab.configure(rules={v6: FAST, v4: FAST}, live=[v6, v4])
    report = start_connection(lab, loop_name, [v6, v4])
    assert_won(report, v6, RTT)
    assert sum("AttemptStarted" in event for event in report["trace"]) == 1, show(report)


def test_only_the_last_of_six_alive(lab: Lab, loop_name: str) -> None:
    six, four = lab.allocate(v6=3, v4=3)
    order = [six[0], four[0], six[1], four[1], six[2], four[2]]
    lab.configure(rules={**dict.fromkeys(order[:-1], DEAD), order[-1]: FAST}, live=order)
    report = start_connection(lab, loop_name, order, kwargs={"interleave": 0})
    assert_won(report, order[-1], 5 * DELAY + RTT)


def test_everything_dead_with_attempt_timeout(lab: Lab, loop_name: str) -> None:
    six, (v4,) = lab.allocate(v6=2, v4=1)
    lab.configure(rules=dict.fromkeys([*six, v4], DEAD), live=[*six, v4])
    report = start_connection(lab, loop_name, [*six, v4], kwargs={"attempt_timeout": 0.3})
    # Interleaved: v6, v4, v6 start at 0, 0.25 and 0.5; the last times out at 0.8.
    assert_timely(report, 2 * DELAY + 0.3)
    assert_no_leak(report)
    error = report["error"]
    assert error is not None, show(report)
    assert "OSError" in error["mro"], show(report)
    assert error["cause_type"] == "ExceptionGroup", show(report)
    assert [member["type"] for member in error["members"]] == ["TimeoutError"] * 3, show(report)
    assert sorted(map(tuple, error["failed"])) == sorted((a, PORT) for a in [*six, v4])
    assert error["failed"] == [[six[0], PORT], [v4, PORT], [six[1], PORT]]
    # A clean message: one readable line, not a repr soup; the addresses are in the notes.
    message = error["message"]
    assert message, show(report)
    assert "\n" not in message, show(report)
    assert len(message) < 200, show(report)
    assert "timed out" in message, show(report)
    for member, address in zip(error["members"], [f"[{six[0]}]", v4, f"[{six[1]}]"], strict=True):
        assert any(address in note for note in member["notes"]), show(report)


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
def test_cancelled_mid_race_leaves_nothing_open(lab: Lab, loop_name: str, how: str) -> None:
    six, four = lab.allocate(v6=2, v4=2)
    order = [six[0], four[0], six[1], four[1]]
    lab.configure(rules=dict.fromkeys(order, DEAD), live=order)
    # At 0.6 s three attempts are in flight and one is still queued.
    key = "cancel_after" if how == "cancel" else "wait_for"
    report = start_connection(lab, loop_name, order, **{key: 0.6})
    if how == "cancel":
        assert report["cancelled"], show(report)
        assert report["error"] is None, show(report)
    else:
        assert report["error"] is not None, show(report)
        assert report["error"]["type"] == "TimeoutError", show(report)
    assert report["peer"] is None, show(report)
    assert_timely(report, 0.6)
    assert_no_leak(report)
    assert sum("AttemptStarted" in event for event in report["trace"]) == 3, show(report)


# -- host names: happydial.connect through the C library's getaddrinfo and the lab's DNS ----


def test_lab_dns_answers_each_type_on_its_own_schedule(lab: Lab) -> None:
    # The lab itself: glibc resolves through the lab's server, and the A and AAAA
    # queries glibc sends together over one socket (AF_UNSPEC) are answered independently.
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    host = "selftest.lab.test"
    lab.configure(
        zone={
            host: {
                "A": {"addresses": [v4], "delay": 0.3},
                "AAAA": {"addresses": [v6], "delay": 0.6},
            }
        }
    )
    spec = {"loop": "asyncio", "call": "getaddrinfo", "host": host, "families": [V6, V4, 0]}
    result = lab.run_client(spec)["result"]
    six, four, both = result[str(V6)], result[str(V4)], result["0"]
    print(f"A {four['elapsed']:.3f} s, AAAA {six['elapsed']:.3f} s, both {both['elapsed']:.3f} s")
    assert six["addresses"] == [v6], result
    assert four["addresses"] == [v4], result
    assert sorted(both["addresses"]) == sorted([v4, v6]), result
    assert 0.3 <= four["elapsed"] <= 0.3 + MARGIN, result
    assert 0.6 <= six["elapsed"] <= 0.6 + MARGIN, result
    assert 0.6 <= both["elapsed"] <= 0.6 + MARGIN, result  # not 0.9: not one after the other


def dual_stack_zone(
    host: str,
    v6: str,
    v4: str,
    *,
    aaaa: dict[str, Any] | None = None,
    a: dict[str, Any] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        host: {"AAAA": {"addresses": [v6], **(aaaa or {})}, "A": {"addresses": [v4], **(a or {})}}
    }


@pytest.mark.usefixtures("connect_available")
def test_aaaa_slow_a_fast_ipv4_after_resolution_delay(lab: Lab, loop_name: str) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    host = f"aaaa-slow-{loop_name}.lab.test"
    zone = dual_stack_zone(host, v6, v4, aaaa={"delay": 2.0})
    lab.configure(rules={v6: FAST, v4: FAST}, live=[v6, v4], zone=zone)
    report = connect(lab, loop_name, host, settle_until=2.3)
    assert_won(report, v4, RESOLUTION_DELAY + RTT)


@pytest.mark.usefixtures("connect_available")
def test_a_slow_aaaa_fast_ipv6_at_once(lab: Lab, loop_name: str) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    host = f"a-slow-{loop_name}.lab.test"
    zone = dual_stack_zone(host, v6, v4, a={"delay": 2.0})
    lab.configure(rules={v6: FAST, v4: FAST}, live=[v6, v4], zone=zone)
    report = connect(lab, loop_name, host, settle_until=2.3)
    assert_won(report, v6, RTT)


@pytest.mark.usefixtures("connect_available")
def test_aaaa_dead_address_ipv4_after_delay(lab: Lab, loop_name: str) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    host = f"aaaa-dead-{loop_name}.lab.test"
    lab.configure(rules={v6: DEAD, v4: FAST}, live=[v6, v4], zone=dual_stack_zone(host, v6, v4))
    report = connect(lab, loop_name, host)
    assert_won(report, v4, DELAY + RTT)


@pytest.mark.usefixtures("connect_available")
def test_both_families_fast_ipv6_wins(lab: Lab, loop_name: str) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    host = f"both-fast-{loop_name}.lab.test"
    lab.configure(rules={v6: FAST, v4: FAST}, live=[v6, v4], zone=dual_stack_zone(host, v6, v4))
    report = connect(lab, loop_name, host)
    assert_won(report, v6, RTT)


@pytest.mark.usefixtures("connect_available")
@pytest.mark.parametrize(
    ("failing", "answer"),
    [("AAAA", "NXDOMAIN"), ("AAAA", "empty"), ("A", "NXDOMAIN"), ("A", "empty")],
)
def test_one_family_fails_to_resolve_the_other_wins(
    lab: Lab, loop_name: str, failing: str, answer: str
) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    host = f"no-{failing}-{answer}-{loop_name}.lab.test".lower()
    failed = {"addresses": []} if answer == "empty" else {"addresses": [], "rcode": answer}
    zone = dual_stack_zone(host, v6, v4)
    zone[host][failing] = failed
    lab.configure(rules={v6: FAST, v4: FAST}, live=[v6, v4], zone=zone)
    report = connect(lab, loop_name, host)
    assert_won(report, v4 if failing == "AAAA" else v6, RTT)


@pytest.mark.usefixtures("connect_available")
@pytest.mark.parametrize("answer", ["NXDOMAIN", "empty"])
def test_both_families_fail_to_resolve(lab: Lab, loop_name: str, answer: str) -> None:
    host = f"nothing-{answer}-{loop_name}.lab.test".lower()
    failed = {"addresses": []} if answer == "empty" else {"addresses": [], "rcode": answer}
    lab.configure(zone={host: {"AAAA": failed, "A": failed}})
    report = connect(lab, loop_name, host)
    error = report["error"]
    assert error is not None, show(report)
    assert "gaierror" in error["mro"], show(report)
    assert report["peer"] is None, show(report)
    print(f"elapsed {report['elapsed']:.3f} s (ideal 0.000 s)")
    assert report["elapsed"] <= MARGIN, show(report)
    assert_no_leak(report)


@pytest.mark.usefixtures("connect_available")
def test_hosts_file_name_ipv6_dead_ipv4_after_delay(lab: Lab, loop_name: str) -> None:
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    host = f"hosts-file-{loop_name}.lab.test"
    lab.write_hosts({host: [v6, v4]})  # no DNS record: only /etc/hosts knows it
    lab.configure(rules={v6: DEAD, v4: FAST}, live=[v6, v4])
    report = connect(lab, loop_name, host)
    assert_won(report, v4, DELAY + RTT)
