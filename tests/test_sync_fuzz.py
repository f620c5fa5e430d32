"""Property: the blocking racer and the asyncio racer run the same race.

Both drive the one schedule (``_schedule.Schedule``), so for any script of addresses
(how long each takes to answer, and how) and any options, ``happydial.sync`` on its
virtual clock and ``happydial.start_connection`` on the virtual-clock loop must start
the same attempts at the same times, pick the same winner (or fail with the same
errors), end at the same time, and close every loser exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import happydial
from happydial import sync
from happydial.testing import FakeNetwork, run_virtual

from .sync_fakes import FakeNet
from .test_racer import ai

HOSTS = ["2001:db8::1", "2001:db8::2", "2001:db8::3", "192.0.2.1", "192.0.2.2", "192.0.2.3"]
OUTCOMES = ["connect", "refuse", "unreachable", "reset", "hang"]

script = st.tuples(
    st.one_of(st.none(), st.sampled_from([0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.7, 1.5])),
    st.sampled_from(OUTCOMES),
)
options = st.fixed_dictionaries(
    {},
    optional={
        "happy_eyeballs_delay": st.sampled_from([None, 0, 0.1, 0.25]),
        "interleave": st.sampled_from([None, 0, 1, 2]),
        "attempt_timeout": st.sampled_from([None, 0.15, 1.0]),
        "max_in_flight": st.sampled_from([None, 1, 2, 6]),
        "timeout": st.sampled_from([None, 0.5, 2.0]),
        "all_errors": st.booleans(),
    },
)


def outcome_of(result: Any) -> Any:
    if isinstance(result, BaseException):
        group = result if isinstance(result, ExceptionGroup) else result.__cause__
        members = group.exceptions if isinstance(group, ExceptionGroup) else ()
        # The fakes word their errors differently; the drivers must agree on the rest.
        return (
            type(result).__name__,
            [(type(e).__name__, getattr(e, "errno", None)) for e in members],
        )
    return ("won", result)


def run_asyncio(scripts: Sequence[tuple[str, float | None, str]], kwargs: dict[str, Any]) -> Any:
    async def main() -> Any:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop, path="writer")  # connect_ex, as the blocking driver
        for host, delay, outcome in scripts:
            net.script(host, delay=delay or 0.0, outcome=outcome, at_once=delay is None)  # type: ignore[arg-type]
        try:
            sock: Any = await happydial.start_connection(
                [ai(h) for h, _, _ in scripts], socket_factory=net.socket_factory, **kwargs
            )
        except (OSError, ExceptionGroup) as exc:
            result = outcome_of(exc)
        else:
            result = ("won", sock.addr_info[4][0])
        closes = sorted(s.close_count for s in net.sockets)
        for s in net.sockets:
            if s.close_count == 0:
                s.close()
        return result, dict(net.start_times), loop.time(), closes

    return run_virtual(main)


def run_sync(scripts: Sequence[tuple[str, float | None, str]], kwargs: dict[str, Any]) -> Any:
    net = FakeNet()
    for host, delay, outcome in scripts:
        net.script(host, delay or 0.0, outcome, at_once=delay is None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sync, "BlockingRace", net.race_class())
        try:
            sock: Any = sync.start_connection(
                [ai(h) for h, _, _ in scripts], socket_factory=net.socket_factory, **kwargs
            )
        except (OSError, ExceptionGroup) as exc:
            result = outcome_of(exc)
        else:
            result = ("won", sock.addr_info[4][0])
    closes = sorted(s.close_count for s in net.sockets)
    return result, dict(net.start_times), net.now, closes, net.ties


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(script, min_size=1, max_size=6),
    options,
)
def test_both_drivers_run_the_same_race(
    scripts: list[tuple[float | None, str]], kwargs: dict[str, Any]
) -> None:
    # A hang never answers, whatever its delay (and never "at once").
    hosted = [
        (HOSTS[i], 0.0 if outcome == "hang" else delay, outcome)
        for i, (delay, outcome) in enumerate(scripts)
    ]
    if any(o == "hang" for _, _, o in hosted) and not (
        kwargs.get("attempt_timeout") or kwargs.get("timeout")
    ):
        # A hang and nothing to bound the race: both could wait forever.
        kwargs["timeout"] = 3.0
    kwargs.setdefault("happy_eyeballs_delay", None)  # the asyncio default, for both
    got = run_sync(hosted, kwargs)
    # Two events at one virtual instant (an outcome and a timer, say): which is handled
    # first is each driver's (and each fake's) own pick, not a rule of the schedule.
    assume(not got[4])
    expected = run_asyncio(hosted, kwargs)
    assert got[0] == expected[0]
    assert got[1] == pytest.approx(expected[1])
    assert got[2] == pytest.approx(expected[2])
    assert got[3] == expected[3]
    winners = 1 if got[0][0] == "won" else 0
    assert got[3].count(0) == winners  # every loser closed exactly once
    assert set(got[3]) <= {0, 1}


def test_an_example_by_hand() -> None:
    # A refused IPv6, a hanging IPv4, a slow IPv6 winner, capped at two in flight.
    hosted = [
        ("2001:db8::1", 0.1, "refuse"),
        ("192.0.2.1", 0.0, "hang"),
        ("2001:db8::2", 0.3, "connect"),
    ]
    kwargs = {"happy_eyeballs_delay": 0.25, "max_in_flight": 2}
    assert run_sync(hosted, kwargs)[:4] == run_asyncio(hosted, kwargs)
    result, starts, end, closes, ties = run_sync(hosted, kwargs)
    assert ties == 0
    assert result == ("won", "2001:db8::2")
    assert starts == pytest.approx({"2001:db8::1": 0, "192.0.2.1": 0.1, "2001:db8::2": 0.35})
    assert end == pytest.approx(0.65)
    assert closes == [0, 1, 1]
