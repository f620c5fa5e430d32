"""happydial.sync.create_connection: lookups (RFC 8305 s. 3), order (s. 4), stdlib semantics.

Most run on the virtual clock with scripted lookups (``tests/sync_fakes.py``); the
lookups' answers go through the same socket-pair wake-up as real pool answers.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest

import happydial
from happydial import _blocking, sync
from happydial._resolver import ThreadedLookup
from happydial._trace import ResolutionFailed, ResolutionFinished, ResolutionStarted

from .conftest import open_fds
from .sync_fakes import FakeNet, FakeSock
from .test_racer import A4, A6, B4, B6, ai

V6, V4 = socket.AF_INET6, socket.AF_INET


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> FakeNet:
    fake = FakeNet()
    monkeypatch.setattr(sync, "BlockingRace", fake.race_class(sockets=True))
    monkeypatch.setattr(_blocking, "start_threaded_getaddrinfo", fake.getaddrinfo)
    return fake


def cc(*args: Any, **kwargs: Any) -> Any:
    """``sync.create_connection``, typed loosely: on the fake network it returns a FakeSock."""
    return sync.create_connection(*args, **kwargs)


def no_address(family: int) -> socket.gaierror:
    return socket.gaierror(socket.EAI_NODATA, f"no address {family}")


def test_ipv6_answer_starts_at_once(net: FakeNet) -> None:
    net.answer(V6, 0.01, [ai(A6)])
    net.answer(V4, 0.02, [ai(A4)])
    net.script(A6, 0.03)
    sock = cc(("example.org", 443))
    assert net.asked == [("example.org", 443, V6), ("example.org", 443, V4)]
    assert net.start_times == pytest.approx({A6: 0.01})
    assert net.now == pytest.approx(0.04)
    assert isinstance(sock, FakeSock)
    assert sock.addr_info[4] == (A6, 443, 0, 0)
    assert sock.gettimeout() is None
    sock.close()


def test_ipv4_first_waits_the_resolution_delay_for_ipv6(net: FakeNet) -> None:
    net.answer(V6, 0.03, [ai(A6)])
    net.answer(V4, 0.01, [ai(A4)])
    net.script(A6, outcome="hang")
    net.script(A4, 0.05)
    sock = cc(("example.org", 80))
    # IPv6 came within 50 ms: both fed at 0.03, IPv6 first, IPv4 one delay later.
    assert net.start_times == pytest.approx({A6: 0.03, A4: 0.28})
    assert [s.close_count for s in net.sockets] == [1, 0]
    sock.close()


def test_a_slow_ipv6_answer_costs_only_the_resolution_delay(net: FakeNet) -> None:
    net.answer(V6, 5.0, [ai(A6)])
    net.answer(V4, 0.01, [ai(A4)])
    net.script(A4, 0.02)
    sock = cc(("example.org", 80))
    assert net.start_times == pytest.approx({A4: 0.06})
    assert net.now == pytest.approx(0.08)
    assert net.lookups[0].cancelled  # the AAAA lookup was abandoned
    sock.close()


def test_a_late_ipv6_answer_is_interleaved(net: FakeNet) -> None:
    net.answer(V6, 0.1, [ai(A6), ai(B6)])
    net.answer(V4, 0.01, [ai(A4), ai(B4)])
    for host in (A6, B6, A4):
        net.script(host, outcome="hang")
    net.script(B4, 0.01)
    cc(("example.org", 80)).close()
    # A4 at 0.06 (resolution delay); the IPv6 answer at 0.1 goes next in turn.
    assert net.start_times == pytest.approx({A4: 0.06, A6: 0.31, B4: 0.56})


def test_ipv6_lookup_failure_feeds_ipv4_at_once(net: FakeNet) -> None:
    net.answer(V6, 0.01, no_address(V6))
    net.answer(V4, 0.02, [ai(A4)])
    net.script(A4, 0.01)
    cc(("example.org", 80)).close()
    assert net.start_times == pytest.approx({A4: 0.02})


def test_both_lookups_failing_raise_the_a_lookups_error(net: FakeNet) -> None:
    net.answer(V6, 0.01, no_address(V6))
    net.answer(V4, 0.02, socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    with pytest.raises(socket.gaierror, match="Name or service not known"):
        cc(("example.org", 80))
    assert net.sockets == []


def test_an_answer_of_the_wrong_family_is_no_answer(net: FakeNet) -> None:
    net.answer(V6, 0.01, [ai(A4)])  # a resolver answering IPv4 to an AAAA query
    net.answer(V4, 0.02, no_address(V4))
    with pytest.raises(socket.gaierror, match="no address 2"):
        cc(("example.org", 80))


def test_only_ipv6_answer_an_ipv6_error(net: FakeNet) -> None:
    net.answer(V6, 0.01, no_address(V6))
    net.answer(V4, 0.01, [ai(A4)])
    net.script(A4, 0.01, "refuse")
    with pytest.raises(ConnectionRefusedError):
        cc(("example.org", 80))


def test_a_resolver_bug_is_raised(net: FakeNet) -> None:
    net.answer(V6, 0.01, UnicodeError("label empty"))
    net.answer(V4, 0.5, [ai(A4)])
    with pytest.raises(UnicodeError):
        cc(("a..b", 80))
    assert net.lookups[0].cancelled


def test_duplicates_are_tried_once(net: FakeNet) -> None:
    net.answer(V6, 0.01, [ai(A6), ai(A6)])
    net.answer(V4, 0.01, [])
    net.script(A6, 0.01, "refuse")
    with pytest.raises(ConnectionRefusedError):
        cc(("example.org", 80))
    assert len(net.sockets) == 1


def test_timeout_bounds_each_attempt_and_stays_on_the_socket(net: FakeNet) -> None:
    net.answer(V6, 0.0, [ai(A6)])
    net.answer(V4, 0.0, [ai(A4)])
    net.script(A6, outcome="hang")
    net.script(A4, 0.2)
    sock = cc(("example.org", 80), 0.3)
    # A4 starts one delay after A6; A6 times out at 0.3, A4 connects at 0.45.
    assert net.start_times == pytest.approx({A6: 0, A4: 0.25})
    assert net.now == pytest.approx(0.45)
    assert [s.close_count for s in net.sockets] == [1, 0]
    assert sock.gettimeout() == 0.3
    sock.close()


def test_every_attempt_timing_out_raises_timeout_error(net: FakeNet) -> None:
    net.answer(V6, 0.0, [ai(A6)])
    net.answer(V4, 0.0, [ai(A4)])
    net.script(A6, outcome="hang")
    net.script(A4, outcome="hang")
    with pytest.raises(TimeoutError):
        cc(("example.org", 80), timeout=1.0)
    assert net.now == pytest.approx(1.25)


def test_default_timeout_is_the_socket_modules(net: FakeNet) -> None:
    net.script(A4, 0.01)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(7.0)
    try:
        sock = cc((A4, 80))
    finally:
        socket.setdefaulttimeout(previous)
    assert sock.gettimeout() == 7.0
    assert net.asked == []  # an IP literal is never looked up
    sock.close()


def test_timeout_zero_fails_a_connect_in_progress_like_the_stdlib(net: FakeNet) -> None:
    # socket.create_connection(addr, 0): a non-blocking connect, which raises
    # BlockingIOError (EINPROGRESS) at once unless connect() itself completes.
    net.answer(V6, 0.0, [ai(A6)])
    net.answer(V4, 0.0, [ai(A4)])
    net.script(A6, 0.01)
    net.script(A4, 0.01)
    with pytest.raises(BlockingIOError) as caught:
        cc(("example.org", 80), 0)
    assert caught.value.errno == errno.EINPROGRESS
    assert net.now == 0  # no wait: both failed at once, the next started at once
    assert net.start_times == {A6: 0, A4: 0}
    assert [s.close_count for s in net.sockets] == [1, 1]


def test_timeout_zero_keeps_a_connect_that_completed_at_once(net: FakeNet) -> None:
    net.script(A4, outcome="connect", at_once=True)
    sock = cc((A4, 80), 0.0)
    assert sock.gettimeout() == 0.0  # non-blocking, as the stdlib's settimeout(0) leaves it
    assert sock.close_count == 0
    sock.close()


def test_socket_factory_makes_every_attempts_socket(net: FakeNet) -> None:
    net.answer(V6, 0.0, [ai(A6)])
    net.answer(V4, 0.0, [ai(A4)])
    net.script(A6, outcome="refuse")
    net.script(A4, 0.01)
    made: list[Any] = []

    def factory(addr_info: Any) -> Any:
        sock = FakeSock(net, addr_info)
        made.append(sock)
        return sock

    sock = cc(("example.org", 80), None, ("", 0), socket_factory=factory)
    assert [s.addr_info[4] for s in made] == [(A6, 80, 0, 0), (A4, 80)]
    assert sock is made[1]
    assert [s.bound for s in made] == [("::", 0, 0, 0), ("0.0.0.0", 0)]
    assert [s.close_count for s in made] == [1, 0]
    assert sock.gettimeout() is None
    sock.close()


@pytest.mark.parametrize("all_errors", [False, True])
def test_errors_are_the_last_attempts_or_all(net: FakeNet, all_errors: bool) -> None:
    net.answer(V6, 0.0, [ai(A6)])
    net.answer(V4, 0.0, [ai(A4)])
    net.script(A6, 0.3, "refuse")
    net.script(A4, 0.1, "unreachable")
    with pytest.raises((OSError, ExceptionGroup)) as info:
        cc(("example.org", 80), all_errors=all_errors)
    error: Any = info.value
    if all_errors:
        assert [e.errno for e in error.exceptions] == [errno.ECONNREFUSED, errno.ENETUNREACH]
    else:
        assert error.errno == errno.ENETUNREACH  # the last attempt's, as the stdlib
        assert error.__notes__ == [f"while connecting to {A4}:80"]


def test_source_address_limits_the_lookups_to_its_family(net: FakeNet) -> None:
    net.answer(V4, 0.0, [ai(A4)])
    net.script(A4, 0.01)
    sock = cc(("example.org", 80), source_address=("192.0.2.9", 0))
    assert net.asked == [("example.org", 80, V4)]
    assert sock.bound == ("192.0.2.9", 0)
    sock.close()


def test_source_address_any(net: FakeNet) -> None:
    net.answer(V6, 0.0, [ai(A6)])
    net.answer(V4, 0.0, [ai(A4)])
    net.script(A6, 0.01)
    sock = cc(("example.org", 80), source_address=("", 4000))
    assert sock.bound == ("::", 4000, 0, 0)
    sock.close()


def test_source_address_by_name(net: FakeNet) -> None:
    net.script(A4, 0.01)
    sock = cc((A4, 80), source_address=("localhost", 0))
    assert sock.bound is not None
    assert sock.bound[0] in ("127.0.0.1", "::1")
    sock.close()


def test_localhost_is_never_looked_up(net: FakeNet) -> None:
    events: list[Any] = []
    net.script("::1", 0.01, "refuse")
    net.script("127.0.0.1", 0.01)
    cc(("localhost", 8080), trace=events.append).close()
    assert net.asked == []
    assert net.start_times == pytest.approx({"::1": 0, "127.0.0.1": 0.01})
    assert [type(e) for e in events[:4]] == [
        ResolutionStarted,
        ResolutionFinished,
        ResolutionStarted,
        ResolutionFinished,
    ]


def test_trace_sees_lookups(net: FakeNet) -> None:
    events: list[Any] = []
    net.answer(V6, 0.01, no_address(V6))
    net.answer(V4, 0.02, [ai(A4)])
    net.script(A4, 0.01)
    cc(("example.org", 80), trace=events.append).close()
    assert [type(e) for e in events[:4]] == [
        ResolutionStarted,
        ResolutionStarted,
        ResolutionFailed,
        ResolutionFinished,
    ]


@pytest.mark.parametrize("at", range(7))
def test_keyboard_interrupt_at_every_event_leaks_nothing(net: FakeNet, at: int) -> None:
    seen: list[object] = []

    def trace(event: object) -> None:
        seen.append(event)
        if len(seen) == at + 1:
            raise KeyboardInterrupt

    net.answer(V6, 0.01, [ai(A6)])
    net.answer(V4, 0.02, [ai(A4)])
    net.script(A6, outcome="hang")
    net.script(A4, 0.1)
    before = open_fds()
    with pytest.raises(KeyboardInterrupt):
        cc(("example.org", 80), trace=trace)
    assert open_fds() == before  # the wake-up socket pair too
    assert all(s.close_count == 1 for s in net.sockets)
    assert all(lookup.cancelled for lookup in net.lookups)


def test_a_trace_raising_at_the_first_lookup_asks_nothing(net: FakeNet) -> None:
    def trace(event: object) -> None:
        raise ValueError("trace bug")

    with pytest.raises(ValueError, match="trace bug"):
        cc(("example.org", 80), trace=trace)
    assert net.asked == []


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("example.org",), {}, TypeError, "address must be a"),
        ((("example.org", 80, 0),), {}, TypeError, "address must be a"),
        (((1, 80),), {}, TypeError, "host must be a str"),
        ((("", 80),), {}, ValueError, "host must not be empty"),
        ((("example.org", 1.5),), {}, TypeError, "port must be an int"),
        ((("example.org", 70000),), {}, ValueError, "port must be in 0-65535"),
        ((("example.org", "no-such-service"),), {}, socket.gaierror, "unknown TCP service"),
        ((("example.org", 80), -1), {}, ValueError, "timeout"),
        ((("example.org", 80), None, "x"), {}, TypeError, "source_address must be"),
        ((("example.org", 80),), {"happy_eyeballs_delay": -1}, ValueError, "happy_eyeballs"),
        ((("example.org", 80),), {"resolution_delay": "x"}, TypeError, "resolution_delay"),
        ((("example.org", 80),), {"first_address_family_count": 0}, ValueError, "first_addr"),
        ((("example.org", 80),), {"trace": 3}, TypeError, "trace"),
        ((("example.org", 80),), {"socket_factory": 3}, TypeError, "socket_factory"),
        ((("example.org", 80),), {"history": 3}, TypeError, "history"),
        ((("example.org", 80),), {"max_in_flight": 0}, ValueError, "max_in_flight"),
    ],
)
def test_argument_checks(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        cc(*args, **kwargs)


def test_ports_as_text(net: FakeNet) -> None:
    net.script(A4, 0.01)
    for port, number in (("8080", 8080), ("http", 80), (b"", None)):
        if number is None:
            continue
        sock = cc((A4.encode(), port))
        assert sock.addr_info[4] == (A4, number)
        sock.close()


def test_an_ipv4_answer_after_ipv6_takes_the_next_turn(net: FakeNet) -> None:
    net.answer(V6, 0.0, [ai(A6), ai(B6)])
    net.answer(V4, 0.1, [ai(A4)])
    for host in (A6, B6):
        net.script(host, outcome="hang")
    net.script(A4, 0.01)
    cc(("example.org", 80)).close()
    # A6 at 0; A4 answered at 0.1 goes before B6, the other family's turn.
    assert net.start_times == pytest.approx({A6: 0, A4: 0.25})


@pytest.mark.parametrize("host", [A4, "example.org"])
def test_an_oserror_from_a_trace_is_raised_as_it_is(net: FakeNet, host: str) -> None:
    def trace(event: object) -> None:
        raise PermissionError("trace")

    net.script(A4, 0.01)
    with pytest.raises(PermissionError, match="trace"):
        cc((host, 80), trace=trace)


def test_an_answer_after_the_end_is_dropped() -> None:
    race = _blocking.BlockingRace(0.25)
    lookups = _blocking.Lookups(race, "example.org", 80, [V6], 0.05, 1, str, sync._usable)
    lookups.close()
    lookups.post(V6, [ai(A6)], None)
    assert lookups.answers == []
    lookups.close()  # twice: nothing more


def test_an_ipv6_literal_is_never_looked_up(net: FakeNet) -> None:
    net.script(A6, 0.01)
    sock = cc((A6, 443))
    assert sock.addr_info[4] == (A6, 443, 0, 0)
    assert net.asked == []
    sock.close()


def test_a_name_with_a_colon_is_looked_up(net: FakeNet) -> None:
    net.answer(V6, 0.0, no_address(V6))
    net.answer(V4, 0.0, [ai(A4)])
    net.script(A4, 0.01)
    cc(("not:an-address", 80)).close()
    assert [family for _, _, family in net.asked] == [V6, V4]


def test_an_abandoned_pool_lookup_never_runs_and_never_answers() -> None:
    answers: list[object] = []
    lookup = ThreadedLookup("example.org", 80, V4, lambda result, _error: answers.append(result))
    lookup.cancel()
    assert lookup() is None  # abandoned while queued: no C call
    lookup._deliver([ai(A4)], None)  # an answer already on its way: dropped
    assert answers == []


def test_create_connection_takes_a_delay_policy(net: FakeNet) -> None:
    net.answer(V6, 0.01, [ai(A6)])
    net.answer(V4, 0.01, [ai(A4)])
    net.script(A6, outcome="hang")
    net.script(A4, 0.05)
    sock = cc(("example.org", 80), happy_eyeballs_delay=happydial.ExponentialDelay())
    # Both answered at 0.01; IPv4 goes 50 ms after IPv6 started (one attempt in flight).
    assert net.start_times == pytest.approx({A6: 0.01, A4: 0.06})
    sock.close()
