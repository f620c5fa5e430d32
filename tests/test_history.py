"""AddressHistory: ordering, cooldown, adaptive delay, eviction, export; and in a race."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import math
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import happydial
from happydial import AddressHistory, AddrInfoType, connect, start_connection
from happydial._history import failure_kind
from happydial.testing import FakeNetwork

from .conftest import Runner

V6, V4 = socket.AF_INET6, socket.AF_INET
A6, B6 = "2001:db8::a", "2001:db8::b"
A4, B4 = "192.0.2.1", "192.0.2.2"


def ai(host: str, port: int = 80) -> AddrInfoType:
    if ":" in host:
        return (V6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
    return (V4, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hosts(addr_infos: list[AddrInfoType]) -> list[str]:
    return [a[4][0] for a in addr_infos]


# ---------------------------------------------------------------------------
# Pure behaviour
# ---------------------------------------------------------------------------


def test_known_good_first_fastest_first_unknown_kept_failed_last() -> None:
    clock = Clock()
    history = AddressHistory(clock=clock, cooldown=30)
    history.record_success(ai(B4)[4], 0.050)
    history.record_success(ai(A4)[4], 0.010)
    history.record_failure(ai(A6)[4], "timeout")
    order, reasons = history.sort([ai(A6), ai(A4), ai(B6), ai(B4), ai("2001:db8::c")])
    assert hosts(order) == [A4, B4, B6, "2001:db8::c", A6]
    assert reasons == [
        "2001:db8::a failed (timeout) 0.0 s ago",
        "192.0.2.1 connected in 10.0 ms",
        "192.0.2.2 connected in 50.0 ms",
    ]


def test_cooldown_expires_and_a_repaired_path_is_preferred_again() -> None:
    clock = Clock()
    history = AddressHistory(clock=clock, cooldown=30)
    history.record_success(ai(A6)[4], 0.010)
    history.record_success(ai(A4)[4], 0.020)
    history.record_failure(ai(A6)[4], "refused")
    assert hosts(history.sort([ai(A6), ai(A4)])[0]) == [A4, A6]
    clock.now += 29.9
    assert hosts(history.sort([ai(A6), ai(A4)])[0]) == [A4, A6]
    assert history.is_cooling(ai(A6)[4])
    clock.now += 0.2
    # The cooldown is over: the path is retried first, then ranked on its time again.
    assert not history.is_cooling(ai(A6)[4])
    assert history.connect_time(ai(A6)[4]) == 0.010
    order, reasons = history.sort([ai(A4), ai(A6)])
    assert hosts(order) == [A6, A4]
    assert "2001:db8::a failed (refused) 30.1 s ago: retried, the 30 s cooldown is over" in reasons
    history.record_success(ai(A6)[4], 0.5)  # slower now: smoothed to 71 ms
    assert hosts(history.sort([ai(A6), ai(A4)])[0]) == [A4, A6]
    assert not history.is_cooling(("printer.local", 80))


def test_unchanged_order_gives_no_reasons() -> None:
    history = AddressHistory(clock=Clock())
    history.record_success(ai(A6)[4], 0.01)
    order, reasons = history.sort([ai(A6), ai(A4)])
    assert hosts(order) == [A6, A4]
    assert reasons == []


def test_smoothing_follows_rfc_6298_gain() -> None:
    history = AddressHistory(clock=Clock())
    history.record_success(ai(A4)[4], 0.100)
    history.record_success(ai(A4)[4], 0.020)
    assert history.connect_time(ai(A4)[4]) == pytest.approx(0.100 + (0.020 - 0.100) / 8)


def test_spellings_and_zones_are_one_address() -> None:
    history = AddressHistory(clock=Clock())
    history.record_success(("2001:db8:0:0::a", 80, 0, 0), 0.01)
    assert history.connect_time(("2001:db8::a", 80)) == 0.01
    history.record_success(("fe80::1%lo", 80, 0, 0), 0.02)
    assert history.connect_time(("fe80::1", 80, 0, socket.if_nametoindex("lo"))) == 0.02
    assert history.connect_time(("2001:db8::a", 81)) is None  # another port, another entry
    history.record_success(("printer.local", 80), 0.01)  # not an IP: ignored
    history.record_failure(("printer.local", 80), "error")
    assert len(history) == 2


@pytest.mark.parametrize(
    ("measured", "expected"),
    [(None, 0.25), (0.001, 0.1), (0.030, 0.1), (0.080, 0.16), (0.5, 1.0), (5.0, 2.0)],
)
def test_adaptive_delay_is_clamped_to_rfc_8305_bounds(
    measured: float | None, expected: float
) -> None:
    history = AddressHistory(clock=Clock())
    if measured is not None:
        history.record_success(ai(A4)[4], measured)
    assert history.attempt_delay(ai(A4), 0.25) == pytest.approx(expected)


def test_eviction_forgets_the_least_recently_updated() -> None:
    history = AddressHistory(clock=Clock(), max_entries=2)
    history.record_success(ai(A4)[4], 0.01)
    history.record_success(ai(B4)[4], 0.01)
    history.record_success(ai(A4)[4], 0.01)  # A4 is fresh again
    history.record_failure(ai(A6)[4], "timeout")  # evicts B4
    assert len(history) == 2
    assert history.connect_time(ai(B4)[4]) is None
    assert history.connect_time(ai(A4)[4]) == 0.01


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (TimeoutError("x"), "timeout"),
        (OSError(errno.ETIMEDOUT, "x"), "timeout"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "x"), "refused"),
        (OSError(errno.ENETUNREACH, "x"), "unreachable"),
        (OSError(errno.EHOSTUNREACH, "x"), "unreachable"),
        (OSError(errno.EACCES, "x"), "error"),
        (RuntimeError("fd in use"), "error"),
    ],
)
def test_failure_kinds(error: BaseException, kind: str) -> None:
    assert failure_kind(error) == kind


def test_json_round_trip() -> None:
    clock = Clock()
    history = AddressHistory(clock=clock)
    history.record_success(ai(A4)[4], 0.01)
    history.record_failure(ai(A6)[4], "unreachable")
    history.record_success(("fe80::1%lo", 80), 0.002)
    data = json.loads(json.dumps(history.to_json()))
    rebuilt = AddressHistory.from_json(data, clock=clock, max_entries=10)
    assert rebuilt.to_json() == history.to_json()
    assert hosts(rebuilt.sort([ai(A6), ai(A4)])[0]) == [A4, A6]
    small = AddressHistory.from_json(data, clock=clock, max_entries=1)
    assert len(small) == 1


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (None, "not a happydial history export"),
        ({"version": 2, "entries": []}, "not a happydial history export"),
        ({"version": 1, "entries": {}}, "'entries' must be a list"),
        ({"version": 1, "entries": [{"address": "x"}]}, r"entries\[0\] is malformed"),
        (
            {
                "version": 1,
                "entries": [
                    _e := {
                        "address": "192.0.2.1",
                        "port": "80",
                        "scope": 0,
                        "connect_time": None,
                        "successes": 0,
                        "failures": 0,
                        "failure": None,
                        "failed_at": None,
                    }
                ],
            },
            r"entries\[0\] is malformed: port must be an int",
        ),
        (
            {"version": 1, "entries": [{**_e, "port": 80, "failure": "gone"}]},
            "unknown failure kind",
        ),
        ({"version": 1, "entries": [{**_e, "port": 80, "connect_time": "1"}]}, "expected a number"),
    ],
)
def test_from_json_rejects(data: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AddressHistory.from_json(data)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_entries": 0}, ValueError, "max_entries must be a positive int"),
        ({"cooldown": -1}, ValueError, "cooldown must be a finite number of seconds >= 0.0"),
        ({"cooldown": "1"}, TypeError, "cooldown must be a number of seconds"),
        ({"min_attempt_delay": 0.001}, ValueError, r"min_attempt_delay must be .* >= 0.01"),
        ({"max_attempt_delay": 0.05}, ValueError, r"min_attempt_delay \(0.1 s\) must not exceed"),
        ({"max_attempt_delay": 0.001}, ValueError, r"max_attempt_delay must be .* >= 0.01"),
        ({"delay_multiple": float("nan")}, ValueError, "delay_multiple must be a finite"),
        ({"clock": 3}, TypeError, "clock must be callable"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        AddressHistory(**kwargs)


_entries = st.lists(
    st.one_of(
        st.builds(lambda i: ai(f"192.0.2.{i}"), st.integers(0, 9)),
        st.builds(lambda i: ai(f"2001:db8::{i}"), st.integers(0, 9)),
    ),
    max_size=12,
)
_events = st.lists(
    st.tuples(st.integers(0, 9), st.booleans(), st.floats(0.0001, 3.0), st.floats(0, 100)),
    max_size=20,
)


@given(_entries, _events)
def test_history_only_ever_permutes(entries: list[AddrInfoType], events: list[Any]) -> None:
    clock = Clock()
    history = AddressHistory(clock=clock, cooldown=10, max_entries=5)
    for i, ok, rtt, advance in events:
        clock.now += advance
        target = ai(f"192.0.2.{i}" if i % 2 else f"2001:db8::{i}")[4]
        if ok:
            history.record_success(target, rtt)
        else:
            history.record_failure(target, "timeout")
    order, _ = history.sort(entries)
    assert sorted(order) == sorted(entries)

    failed = {e["address"] for e in history.to_json()["entries"] if e["failure"]}

    def category(entry: AddrInfoType) -> int:
        if history.is_cooling(entry[4]):
            return 3
        if str(ipaddress.ip_address(entry[4][0])) in failed:
            return 0  # an expired failure: retried first
        return 2 if history.connect_time(entry[4]) is None else 1

    assert [category(e) for e in order] == sorted(category(e) for e in order)
    for kept in (0, 2, 3):  # retried, unknown and cooling addresses keep their order
        assert [e for e in order if category(e) == kept] == [
            e for e in entries if category(e) == kept
        ]
    times = [history.connect_time(e[4]) or 0.0 for e in order if category(e) == 1]
    assert times == sorted(times)


# ---------------------------------------------------------------------------
# In a race (virtual clock)
# ---------------------------------------------------------------------------


async def timed_connection(
    net: FakeNetwork, history: AddressHistory, hosts: tuple[str, ...] = (A6, A4), **kwargs: Any
) -> float:
    """Connect (attempt delay 250 ms) through the fake network; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sock = await start_connection(
        [ai(host) for host in hosts],
        happy_eyeballs_delay=0.25,
        socket_factory=net.socket_factory,
        history=history,
        **kwargs,
    )
    sock.close()
    return loop.time() - start


def test_dead_ipv6_costs_one_delay_once_then_nothing(vrun: Runner[Any]) -> None:
    # RTT of IPv4 is 20 ms. Stateless, every connection takes 250 + 20 ms (13.5x).
    # With history, from the second connection on it takes 20 ms (1.0x).
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A6, outcome="hang")
        net.script(A4, delay=0.020)
        history = AddressHistory(clock=loop.time)
        return [await timed_connection(net, history) for _ in range(3)]

    times = vrun(main)
    assert times[0] == pytest.approx(0.270)
    assert times[1] == pytest.approx(0.020)
    assert times[2] == pytest.approx(0.020)


def test_a_good_path_that_dies_costs_the_adaptive_delay(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A6, delay=0.030)
        net.script(A4, delay=0.040)
        history = AddressHistory(clock=loop.time, cooldown=60)
        for _ in range(2):  # learn both paths
            await timed_connection(net, history, (A4,))
            await timed_connection(net, history, (A6,))
        net.script(A6, outcome="hang")  # the IPv6 path dies
        events: list[happydial.TraceEvent] = []

        async def timed_race() -> float:
            return await timed_connection(net, history, trace=events.append)

        # IPv6 (30 ms) was tried first; the next attempt came after max(2 x 30 ms, 100 ms).
        assert await timed_race() == pytest.approx(0.100 + 0.040)
        adjusted = [e for e in events if isinstance(e, happydial.DelayAdjusted)]
        assert [e.attempt for e in adjusted] == [0]
        assert adjusted[0].delay == pytest.approx(0.1)
        # The overtaken IPv6 attempt now sits out its cooldown: IPv4 goes first.
        events.clear()
        assert await timed_race() == pytest.approx(0.040)
        reordered = [e for e in events if isinstance(e, happydial.HistoryReordered)]
        assert hosts(list(reordered[0].after)) == [A4, A6]
        assert "2001:db8::a failed (timeout)" in reordered[0].reasons[0]

    vrun(main)


def test_a_dead_path_that_comes_back_is_preferred_after_the_cooldown(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A6, delay=0.05, outcome="refuse")
        net.script(A4, delay=0.02)
        history = AddressHistory(clock=loop.time, cooldown=30)
        await timed_connection(net, history)
        # During the cooldown IPv4 (known good) goes first, IPv6 last.
        assert hosts(history.sort([ai(A6), ai(A4)])[0]) == [A4, A6]
        net.script(A6, delay=0.01)  # repaired
        await asyncio.sleep(31)
        # After it, IPv6 is retried first although it never worked, and it wins.
        assert await timed_connection(net, history) == pytest.approx(0.01)
        assert hosts(history.sort([ai(A4), ai(A6)])[0]) == [A6, A4]

    vrun(main)


def test_failures_are_recorded_with_their_kind(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A6, delay=0.01, outcome="unreachable")
        net.script(A4, delay=0.01, outcome="refuse")
        history = AddressHistory(clock=loop.time)
        with pytest.raises(OSError):
            await start_connection(
                [ai(A6), ai(A4)], socket_factory=net.socket_factory, history=history
            )
        kinds = {e["address"]: e["failure"] for e in history.to_json()["entries"]}
        assert kinds == {A6: "unreachable", A4: "refused"}

    vrun(main)


def test_connect_uses_history_for_late_answers(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A6, outcome="hang")
        net.script(A4, delay=0.02)

        async def resolver(host: str, port: int, family: int) -> list[AddrInfoType]:
            await asyncio.sleep(0.01)
            return [ai(A6 if family == V6 else A4, port)]

        history = AddressHistory(clock=loop.time)
        times = []
        for _ in range(2):
            start = loop.time()
            sock = await connect(
                "x.test", 80, resolver=resolver, history=history, socket_factory=net.socket_factory
            )
            times.append(loop.time() - start)
            sock.close()
        assert times == [pytest.approx(0.01 + 0.25 + 0.02), pytest.approx(0.01 + 0.02)]

    vrun(main)


def test_history_must_be_an_address_history(vrun: Runner[Any]) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="history must be an AddressHistory or None"):
            await start_connection([ai(A4)], history={})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="history must be an AddressHistory or None"):
            await connect("x.test", 80, history=[])  # type: ignore[arg-type]

    vrun(main)


def test_an_imported_entry_with_nothing_known_is_unknown() -> None:
    data = {
        "version": 1,
        "entries": [
            {
                "address": A4,
                "port": 80,
                "scope": 0,
                "connect_time": None,
                "successes": 0,
                "failures": 0,
                "failure": None,
                "failed_at": None,
            },
        ],
    }
    history = AddressHistory.from_json(data, clock=Clock())
    history.record_success(ai(B4)[4], 0.01)
    assert hosts(history.sort([ai(A4), ai(B4)])[0]) == [B4, A4]


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda h: h.record_success(("192.0.2.1", 80), "fast"), TypeError, "connect_time must be"),
        (lambda h: h.record_success(("192.0.2.1", 80), -1.0), ValueError, "connect_time must be"),
        (lambda h: h.record_success(("192.0.2.1", 80), float("nan")), ValueError, "connect_time"),
        (lambda h: h.record_failure(("192.0.2.1", 80), "bogus"), ValueError, "kind must be one of"),
        (lambda h: h.is_cooling(("192.0.2.1",)), TypeError, "sockaddr must be a"),
        (lambda h: h.record_success((1, 2), 1.0), TypeError, "sockaddr must be a"),
        (lambda h: h.connect_time(None), TypeError, "sockaddr must be a"),
        (lambda h: h.attempt_delay(ai(A4), "x"), TypeError, "default must be a number"),
        (lambda h: h.attempt_delay(("x",), 0.25), ValueError, r"addr_info\[0\] must be a 5-tuple"),
    ],
)
def test_methods_reject_bad_arguments(call: Any, exc: type[Exception], match: str) -> None:
    history = AddressHistory(clock=Clock())
    with pytest.raises(exc, match=match):
        call(history)
    assert history.to_json() == {"version": 1, "entries": []}


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("successes", math.inf, "successes and failures must be non-negative ints"),
        ("failures", -1, "successes and failures must be non-negative ints"),
        ("connect_time", math.nan, "expected a finite number"),
        ("connect_time", -0.5, "expected a finite number >= 0.0"),
        ("failed_at", math.inf, "expected a finite number"),
    ],
)
def test_from_json_rejects_bad_numbers(field: str, value: Any, match: str) -> None:
    entry: dict[str, Any] = {
        "address": A4,
        "port": 80,
        "scope": 0,
        "connect_time": None,
        "successes": 0,
        "failures": 0,
        "failure": None,
        "failed_at": None,
    }
    entry[field] = value
    with pytest.raises(ValueError, match=match):
        AddressHistory.from_json({"version": 1, "entries": [entry]})


def test_delay_zero_stays_zero_with_a_history(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A6, outcome="hang")
        net.script(A4, delay=0.040)
        history = AddressHistory(clock=loop.time)
        history.record_success(ai(A6)[4], 0.030)  # known: it would adapt a non-zero delay
        events: list[happydial.TraceEvent] = []
        start = loop.time()
        sock = await start_connection(
            [ai(A6), ai(A4)],
            happy_eyeballs_delay=0,
            socket_factory=net.socket_factory,
            history=history,
            trace=events.append,
        )
        sock.close()
        # Both started at once, and 0 ("all at once") was never adapted.
        assert loop.time() - start == pytest.approx(0.040)
        assert not [e for e in events if isinstance(e, happydial.DelayAdjusted)]

    vrun(main)


def test_without_a_history_no_start_times_are_kept(run: Runner[Any]) -> None:
    # A race without a history shares one never-filled list instead of making its own.
    from happydial import _racer

    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script("192.0.2.1", outcome="refuse")
        net.script("192.0.2.2")
        sock = await happydial.start_connection(
            [ai("192.0.2.1"), ai("192.0.2.2")], socket_factory=net.socket_factory
        )
        sock.close()

    run(main)
    assert _racer._NOT_KEPT == []
