"""happydial.sync.start_connection on a virtual clock: the asyncio racer's scenario table.

The blocking driver runs the same schedule as the asyncio one, so the same table of
scenarios (tests/test_racer.py ``SCENARIOS``) must give the same start times, the
same winner, the same end time, and every losing socket closed exactly once. The
clock and the selector are the driver's seams (``tests/sync_fakes.py``).
"""

from __future__ import annotations

import errno
import math
import socket
from collections.abc import Sequence
from typing import Any

import pytest

import happydial
from happydial import AddressHistory, failed_addr_infos, sync
from happydial._trace import (
    AttemptCancelled,
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    DelayAdjusted,
    HistoryReordered,
)

from .sync_fakes import FakeNet, FakeSock
from .test_racer import A4, A6, B4, B6, C6, HANG, NOW, SCENARIOS, Scenario, ai


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> FakeNet:
    fake = FakeNet()
    monkeypatch.setattr(sync, "BlockingRace", fake.race_class())
    return fake


def run(
    net: FakeNet, hosts: Sequence[tuple[str, float | None, str]], **kwargs: Any
) -> tuple[Any, float]:
    for host, delay, outcome in hosts:
        net.script(host, delay or 0.0, outcome, at_once=delay is NOW)
    kwargs.setdefault("happy_eyeballs_delay", None)  # the asyncio default, for the table
    try:
        sock = sync.start_connection(
            [ai(h) for h, _, _ in hosts], socket_factory=net.socket_factory, **kwargs
        )
    except (OSError, ExceptionGroup) as exc:
        return exc, net.now
    return sock, net.now


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(net: FakeNet, name: str) -> None:
    scenario: Scenario = SCENARIOS[name]
    result, end = run(net, scenario.hosts, **scenario.kwargs)
    assert net.start_times == pytest.approx(scenario.starts)
    assert end == pytest.approx(scenario.end)
    winners = [s for s in net.sockets if s.close_count == 0]
    if scenario.winner is None:
        assert isinstance(result, OSError)
        assert scenario.error is not None
        import re

        assert re.search(scenario.error, str(result)), str(result)
        assert [a[4][0] for a in failed_addr_infos(result)] == list(scenario.starts)
        assert winners == []
    else:
        assert isinstance(result, FakeSock)
        assert result.addr_info[4][0] == scenario.winner
        assert winners == [result]
        assert result.getblocking()
        assert result.gettimeout() is None
        result.close()
    assert all(s.close_count == 1 for s in net.sockets), "each socket closed exactly once"
    assert all(sel.closed for sel in net.selectors)


def test_default_delay_is_the_rfcs(net: FakeNet) -> None:
    net.script(A6, outcome="hang")
    net.script(A4, 0.05)
    sock = sync.start_connection([ai(A6), ai(A4)], socket_factory=net.socket_factory)
    assert sync.DEFAULT_DELAY == 0.25
    assert net.start_times == {A6: 0, A4: 0.25}
    assert net.now == pytest.approx(0.30)
    sock.close()


def test_max_in_flight_drops_the_oldest(net: FakeNet) -> None:
    hosts = [f"192.0.2.{i}" for i in range(1, 5)]
    for host in hosts[:-1]:
        net.script(host, outcome="hang")
    net.script(hosts[-1], 0.1)
    sock = sync.start_connection(
        [ai(h) for h in hosts], socket_factory=net.socket_factory, max_in_flight=2
    )
    assert net.start_times == pytest.approx({h: 0.25 * i for i, h in enumerate(hosts)})
    assert [s.close_count for s in net.sockets] == [1, 1, 1, 0]
    assert net.now == pytest.approx(0.85)
    sock.close()


def test_max_in_flight_with_delay_zero_waits_for_a_slot(net: FakeNet) -> None:
    net.script(A4, 0.3, "refuse")
    net.script(B4, 0.5, "refuse")
    net.script(A6, 0.1)
    sock = sync.start_connection(
        [ai(A4), ai(B4), ai(A6)],
        socket_factory=net.socket_factory,
        happy_eyeballs_delay=0,
        interleave=0,
        max_in_flight=2,
    )
    assert net.start_times == pytest.approx({A4: 0, B4: 0, A6: 0.3})
    assert net.now == pytest.approx(0.4)
    sock.close()


def test_dropped_attempt_fails_with_a_timeout(net: FakeNet) -> None:
    net.script(A4, outcome="hang")
    net.script(B4, 0.3, "refuse")
    with pytest.raises(ExceptionGroup) as info:
        sync.start_connection(
            [ai(A4), ai(B4)], socket_factory=net.socket_factory, max_in_flight=1, all_errors=True
        )
    group = info.value
    assert isinstance(group.exceptions[0], TimeoutError)
    assert "max_in_flight" in str(group.exceptions[0])
    assert isinstance(group.exceptions[1], ConnectionRefusedError)
    assert net.now == pytest.approx(0.55)


def test_overall_deadline(net: FakeNet) -> None:
    net.script(A6, outcome="hang")
    net.script(A4, 0.5, "refuse")
    with pytest.raises(TimeoutError, match=r"no connection within 0\.4 s \(2 attempts\)") as info:
        sync.start_connection([ai(A6), ai(A4)], socket_factory=net.socket_factory, timeout=0.4)
    assert net.now == pytest.approx(0.4)
    assert [a[4][0] for a in failed_addr_infos(info.value)] == [A6, A4]
    assert all(s.close_count == 1 for s in net.sockets)


def test_all_errors_raises_the_group(net: FakeNet) -> None:
    result, _ = run(net, [(A6, 0.1, "refuse"), (A4, 0.1, "reset")], all_errors=True)
    assert isinstance(result, ExceptionGroup)
    assert [type(e) for e in result.exceptions] == [ConnectionRefusedError, ConnectionResetError]


def test_errno_kept_when_all_agree(net: FakeNet) -> None:
    result, _ = run(net, [(A6, 0.1, "refuse"), (A4, 0.1, "refuse")])
    assert isinstance(result, ConnectionRefusedError)
    assert str(result).startswith("[Errno 111] Multiple exceptions: ")


def test_trace_sees_every_event(net: FakeNet) -> None:
    events: list[Any] = []
    run(
        net,
        [(A6, HANG, "hang"), (B6, 0.1, "refuse"), (A4, 0.3, "connect"), (C6, HANG, "hang")],
        happy_eyeballs_delay=0.25,
        interleave=0,
        trace=events.append,
    )
    kinds = [(type(e).__name__, e.addr_info[4][0], e.time) for e in events]
    assert kinds == [
        ("AttemptStarted", A6, 0),
        ("AttemptStarted", B6, 0.25),
        ("AttemptFailed", B6, pytest.approx(0.35)),
        ("AttemptStarted", A4, pytest.approx(0.35)),
        ("AttemptStarted", C6, pytest.approx(0.6)),
        ("AttemptSucceeded", A4, pytest.approx(0.65)),
        ("AttemptCancelled", A6, pytest.approx(0.65)),
        ("AttemptCancelled", C6, pytest.approx(0.65)),
    ]
    assert [type(e) for e in events] == [
        AttemptStarted,
        AttemptStarted,
        AttemptFailed,
        AttemptStarted,
        AttemptStarted,
        AttemptSucceeded,
        AttemptCancelled,
        AttemptCancelled,
    ]


def test_a_trace_that_raises_ends_the_race_and_closes_everything(net: FakeNet) -> None:
    def trace(event: object) -> None:
        if isinstance(event, AttemptStarted) and event.attempt == 1:
            raise ValueError("bug in trace")

    for host in (A6, A4):
        net.script(host, outcome="hang")
    with pytest.raises(ValueError, match="bug in trace"):
        sync.start_connection([ai(A6), ai(A4)], socket_factory=net.socket_factory, trace=trace)
    assert [s.close_count for s in net.sockets] == [1, 1]
    assert A4 not in net.start_times  # never connected: the race had ended


@pytest.mark.parametrize("at", range(8))
def test_keyboard_interrupt_at_every_event_closes_every_socket(net: FakeNet, at: int) -> None:
    seen: list[object] = []

    def trace(event: object) -> None:
        seen.append(event)
        if len(seen) == at + 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(
            net,
            [(A6, HANG, "hang"), (B6, 0.1, "refuse"), (A4, 0.3, "connect"), (C6, HANG, "hang")],
            happy_eyeballs_delay=0.25,
            interleave=0,
            trace=trace,
        )
    assert len(seen) == at + 1
    assert net.sockets
    assert all(s.close_count == 1 for s in net.sockets)
    assert all(sel.closed for sel in net.selectors)


def test_history_orders_records_and_paces(net: FakeNet) -> None:
    history = AddressHistory()
    history.record_failure(ai(A6)[4], "timeout")
    history.record_success(ai(A4)[4], 0.02)
    events: list[Any] = []
    net.script(A4, outcome="hang")
    net.script(A6, 0.05)
    sock = sync.start_connection(
        [ai(A6), ai(A4)], socket_factory=net.socket_factory, history=history, trace=events.append
    )
    assert isinstance(events[0], HistoryReordered)
    assert any(isinstance(e, DelayAdjusted) for e in events)
    adaptive = history.delay_for(0.02)
    assert net.start_times == pytest.approx({A4: 0, A6: adaptive})
    assert history.connect_time(ai(A6)[4]) == pytest.approx(0.05)
    assert [s.close_count for s in net.sockets] == [1, 0]
    sock.close()


def test_history_records_an_overtaken_attempt_as_a_timeout(net: FakeNet) -> None:
    history = AddressHistory()
    net.script(A6, outcome="hang")
    net.script(A4, 0.05)
    sync.start_connection(
        [ai(A6), ai(A4)], socket_factory=net.socket_factory, history=history
    ).close()
    assert history.is_cooling(ai(A6)[4])
    assert history.connect_time(ai(A4)[4]) == pytest.approx(0.05)


def test_immediate_success_and_failures(net: FakeNet) -> None:
    result, end = run(
        net, [(A6, NOW, "unreachable"), (A4, NOW, "connect")], happy_eyeballs_delay=0.25
    )
    assert isinstance(result, FakeSock)
    assert end == 0
    assert net.selects == 0  # nothing to wait for: no select at all
    result.close()


class InterruptedHandOver(FakeSock):
    """A winner whose hand-over (``settimeout``) a signal handler interrupts."""

    def settimeout(self, value: float | None) -> None:
        self.timeout = value
        raise KeyboardInterrupt


@pytest.mark.parametrize("call", ["start_connection", "create_connection"])
def test_an_interrupt_at_the_hand_over_closes_the_winner(net: FakeNet, call: str) -> None:
    # The race is over, but the caller never gets the socket: it must not leak.
    net.script(A4, 0.01)
    made: list[FakeSock] = []

    def factory(addr_info: Any) -> Any:
        made.append(InterruptedHandOver(net, addr_info))
        return made[-1]

    calls = {
        "start_connection": lambda: sync.start_connection([ai(A4)], socket_factory=factory),
        "create_connection": lambda: sync.create_connection((A4, 80), socket_factory=factory),
    }
    with pytest.raises(KeyboardInterrupt):
        calls[call]()
    assert [sock.close_count for sock in made] == [1]


class FailingClose(FakeSock):
    """A socket whose close fails (as a close may, with EBADF or EIO)."""

    def close(self) -> None:
        super().close()
        raise OSError(errno.EIO, "close failed")


def test_a_failing_close_of_a_loser_changes_nothing(net: FakeNet) -> None:
    net.script(A6, outcome="hang")
    net.script(A4, 0.3)

    def factory(addr_info: Any) -> Any:
        kind = FailingClose if addr_info[4][0] == A6 else FakeSock
        return kind(net, addr_info)

    sock = sync.start_connection([ai(A6), ai(A4)], socket_factory=factory)
    assert sock.addr_info[4][0] == A4  # type: ignore[attr-defined]
    assert [s.close_count for s in net.sockets] == [1, 0]
    sock.close()


def test_a_socket_factory_bug_propagates(net: FakeNet) -> None:
    def factory(addr_info: Any) -> socket.socket:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        sync.start_connection([ai(A4)], socket_factory=factory)


def test_a_bind_failure_fails_its_attempt_only(net: FakeNet) -> None:
    result, _ = run(
        net,
        [(A6, 0.1, "connect"), (A4, 0.1, "connect")],
        local_addr_infos=[ai("192.0.2.200", 0)],
        happy_eyeballs_delay=0.25,
    )
    # A6 has no local address of its family: it fails at once, A4 starts at once.
    assert isinstance(result, FakeSock)
    assert result.addr_info[4][0] == A4
    assert net.start_times == {A4: 0}
    assert result.bound == ("192.0.2.200", 0)
    result.close()


def test_a_zone_is_mapped_to_the_scope_id(net: FakeNet) -> None:
    net.script("fe80::1", 0.1)
    seen: list[Any] = []

    def factory(addr_info: Any) -> socket.socket:
        sock = net.socket_factory(addr_info)
        connect = sock.connect_ex

        def connect_ex(address: Any) -> int:
            seen.append(address)
            return connect(address)

        sock.connect_ex = connect_ex  # type: ignore[method-assign]
        return sock

    entry = (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("fe80::1%1", 80, 0, 0))
    sync.start_connection([entry], socket_factory=factory).close()
    assert seen == [("fe80::1", 80, 0, 1)]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"addr_infos": []}, ValueError, "addr_infos must not be empty"),
        ({"addr_infos": [ai("example.org")]}, ValueError, "is not an IP address"),
        ({"local_addr_infos": [ai("example.org")]}, ValueError, "local_addr_infos"),
        ({"happy_eyeballs_delay": -1}, ValueError, "happy_eyeballs_delay"),
        ({"happy_eyeballs_delay": "1"}, TypeError, "happy_eyeballs_delay"),
        ({"attempt_timeout": 0}, ValueError, "attempt_timeout"),
        ({"interleave": -1}, ValueError, "interleave"),
        ({"socket_factory": 1}, TypeError, "socket_factory"),
        ({"trace": 1}, TypeError, "trace"),
        ({"max_in_flight": 0}, ValueError, "max_in_flight"),
        ({"timeout": math.nan}, ValueError, "timeout"),
        ({"history": {}}, TypeError, "history must be an AddressHistory"),
    ],
)
def test_argument_checks(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    kwargs.setdefault("addr_infos", [ai(A4)])
    with pytest.raises(error, match=match):
        sync.start_connection(**kwargs)


def test_a_real_winner_is_handed_over_blocking() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        port = listener.getsockname()[1]
        sock = sync.start_connection([ai("127.0.0.1", port)])
        with sock:
            assert sock.getblocking()
            assert sock.gettimeout() is None
            assert sock.getpeername() == ("127.0.0.1", port)
    finally:
        listener.close()


def test_a_real_refusal() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a port nobody listens on
    with pytest.raises(ConnectionRefusedError) as info:
        sync.start_connection([ai("127.0.0.1", port)])
    assert info.value.errno == errno.ECONNREFUSED
    assert failed_addr_infos(info.value) == [ai("127.0.0.1", port)]


def test_a_failure_after_the_win_is_ignored(net: FakeNet) -> None:
    result, end = run(net, [(A6, 0.5, "connect"), (A4, 0.25, "refuse")], happy_eyeballs_delay=0.25)
    assert isinstance(result, FakeSock)
    assert result.addr_info[4][0] == A6
    assert end == pytest.approx(0.5)
    assert [s.close_count for s in net.sockets] == [0, 1]
    result.close()


@pytest.mark.parametrize(
    ("policy", "starts"),
    [
        # 192.168.1.1 is on the LAN: 100 ms after it, not 250.
        (happydial.LanDelay(), {"192.168.1.1": 0.0, "192.168.1.2": 0.1, "192.168.1.3": 0.2}),
        # 50 ms doubling with each attempt in flight (the HEv3 draft's proposal).
        (
            happydial.ExponentialDelay(),
            {"192.168.1.1": 0.0, "192.168.1.2": 0.05, "192.168.1.3": 0.15},
        ),
    ],
)
def test_a_delay_policy_paces_the_blocking_race(
    net: FakeNet, policy: happydial.DelayPolicy, starts: dict[str, float]
) -> None:
    hosts = list(starts)
    for host in hosts[:-1]:
        net.script(host, outcome="hang")
    net.script(hosts[-1], 0.01)
    events: list[object] = []
    sock = sync.start_connection(
        [ai(h) for h in hosts],
        socket_factory=net.socket_factory,
        happy_eyeballs_delay=policy,
        trace=events.append,
    )
    assert net.start_times == pytest.approx(starts)
    reasons = [e.reason for e in events if isinstance(e, happydial.DelayAdjusted)]
    assert reasons == [policy.name, policy.name]
    sock.close()


def test_create_connection_refuses_a_delay_that_is_no_policy() -> None:
    with pytest.raises(TypeError, match="happy_eyeballs_delay"):
        sync.create_connection(("192.0.2.1", 80), happy_eyeballs_delay="fast")  # type: ignore[arg-type]
