"""start_connection on a virtual clock: exact schedules, winners, and cleanup.

Each scenario is a table of addresses with (delay, outcome) as the fake network
answers them. We assert the loop time at which every attempt started, the winner,
the time the call returned, and that every losing socket was closed exactly once.
Every scenario runs on both connect paths (``FakeNetwork(path=...)``): the writer
callbacks that asyncio's selector loops and uvloop take, and the task per attempt
of other loops, against the same expected times.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest

import happydial
from happydial import AddrInfoType, failed_addr_infos, start_connection
from happydial._sockets import uses_writer_callbacks
from happydial.testing import FakeNetwork, FakeSocket, Outcome, Path

from .conftest import Runner

STREAM = socket.SOCK_STREAM
TCP = socket.IPPROTO_TCP


def ai(host: str, port: int = 80) -> AddrInfoType:
    if ":" in host:
        return (socket.AF_INET6, STREAM, TCP, "", (host, port, 0, 0))
    return (socket.AF_INET, STREAM, TCP, "", (host, port))


PATHS: list[Path] = ["writer", "task"]


@dataclass
class Scenario:
    # (host, seconds until the outcome or NOW, outcome)
    hosts: list[tuple[str, float | None, Outcome]]
    kwargs: dict[str, Any]
    starts: dict[str, float]
    winner: str | None
    end: float
    error: str | None = None
    network: FakeNetwork | None = field(default=None, repr=False)


A6, B6, C6 = "2001:db8::a", "2001:db8::b", "2001:db8::c"
A4, B4, C4 = "192.0.2.1", "192.0.2.2", "192.0.2.3"
HANG = math.inf
NOW = None  # the outcome is known when the connect is called (connect_ex answers it)

SCENARIOS = {
    "first wins at once": Scenario(
        [(A6, 0.1, "connect"), (A4, 0.1, "connect")],
        {"happy_eyeballs_delay": 0.25},
        {A6: 0},
        A6,
        0.1,
    ),
    "dead IPv6 costs one delay": Scenario(
        [(A6, HANG, "hang"), (A4, 0.05, "connect")],
        {"happy_eyeballs_delay": 0.25},
        {A6: 0, A4: 0.25},
        A4,
        0.30,
    ),
    "failure of the newest attempt starts the next at once": Scenario(
        [(A6, 0.1, "refuse"), (A4, 0.05, "connect")],
        {"happy_eyeballs_delay": 0.25},
        {A6: 0, A4: 0.1},
        A4,
        0.15,
    ),
    "failure of an older attempt moves nothing": Scenario(
        [(A6, 0.3, "refuse"), (B6, HANG, "hang"), (C6, 0.1, "connect")],
        {"happy_eyeballs_delay": 0.2},
        {A6: 0, B6: 0.2, C6: 0.4},
        C6,
        0.5,
    ),
    "a slow only-reachable address is not abandoned": Scenario(
        [(A6, 0.01, "unreachable"), (A4, 5.0, "connect")],
        {"happy_eyeballs_delay": 0.25},
        {A6: 0, A4: 0.01},
        A4,
        5.01,
    ),
    "delay None is one at a time": Scenario(
        [(A6, 1.0, "refuse"), (A4, 0.5, "connect")],
        {"happy_eyeballs_delay": None},
        {A6: 0, A4: 1.0},
        A4,
        1.5,
    ),
    "delay None keeps the given order": Scenario(
        [(A6, 0.1, "refuse"), (B6, 0.1, "refuse"), (A4, 0.1, "connect")],
        {},
        {A6: 0, B6: 0.1, A4: 0.2},
        A4,
        0.3,
    ),
    "delay 0 starts everything at once (CPython's meaning)": Scenario(
        [(A6, HANG, "hang"), (A4, 0.3, "connect"), (B4, 0.5, "connect")],
        {"happy_eyeballs_delay": 0, "interleave": 0},
        {A6: 0, A4: 0, B4: 0},
        A4,
        0.3,
    ),
    "tiny delay": Scenario(
        [(A6, HANG, "hang"), (A4, HANG, "hang"), (B6, 0.001, "connect")],
        {"happy_eyeballs_delay": 1e-6},
        {A6: 0, A4: 1e-6, B6: 2e-6},
        B6,
        0.001002,
    ),
    "large delay never reached": Scenario(
        [(A6, 5.0, "connect"), (A4, 0.1, "connect")],
        {"happy_eyeballs_delay": 10.0},
        {A6: 0},
        A6,
        5.0,
    ),
    "everything refused": Scenario(
        [(A6, 0.1, "refuse"), (A4, 0.2, "refuse")],
        {"happy_eyeballs_delay": 0.25},
        {A6: 0, A4: 0.1},
        None,
        0.3,
        error="Multiple exceptions",
    ),
    "simultaneous winners: the first reported wins, the other is closed": Scenario(
        [(A6, 0.5, "connect"), (A4, 0.25, "connect")],
        {"happy_eyeballs_delay": 0.25},
        {A6: 0, A4: 0.25},
        A6,
        0.5,
    ),
    "interleave puts IPv4 second": Scenario(
        [(A6, HANG, "hang"), (B6, HANG, "hang"), (A4, 0.05, "connect")],
        {"happy_eyeballs_delay": 0.25},
        {A6: 0, A4: 0.25},
        A4,
        0.3,
    ),
    "interleave 0 keeps the order": Scenario(
        [(A6, HANG, "hang"), (B6, HANG, "hang"), (A4, 0.05, "connect")],
        {"happy_eyeballs_delay": 0.25, "interleave": 0},
        {A6: 0, B6: 0.25, A4: 0.5},
        A4,
        0.55,
    ),
    "interleave 2 gives the first family two slots": Scenario(
        [(A6, HANG, "hang"), (B6, HANG, "hang"), (A4, 0.05, "connect")],
        {"happy_eyeballs_delay": 0.25, "interleave": 2},
        {A6: 0, B6: 0.25, A4: 0.5},
        A4,
        0.55,
    ),
    "interleave without a delay reorders a sequential run": Scenario(
        [(A6, 0.1, "refuse"), (B6, 0.1, "refuse"), (A4, 0.1, "connect")],
        {"interleave": 1},
        {A6: 0, A4: 0.1},
        A4,
        0.2,
    ),
    "attempt_timeout moves a sequential run past dead addresses": Scenario(
        [(A6, HANG, "hang"), (B6, HANG, "hang"), (A4, 0.1, "connect")],
        {"attempt_timeout": 1.0, "interleave": 0},
        {A6: 0, B6: 1.0, A4: 2.0},
        A4,
        2.1,
    ),
    "attempt_timeout in a race fails the attempt early": Scenario(
        [(A6, HANG, "hang"), (A4, HANG, "hang")],
        {"attempt_timeout": 0.1, "happy_eyeballs_delay": 0.25},
        {A6: 0, A4: 0.1},
        None,
        0.2,
        error="connect timed out after 0.1 s",
    ),
    "attempt_timeout timers are cancelled when another attempt wins": Scenario(
        [(A6, HANG, "hang"), (A4, 0.05, "connect")],
        {"attempt_timeout": 1.0, "happy_eyeballs_delay": 0.25},
        {A6: 0, A4: 0.25},
        A4,
        0.3,
    ),
    "a single address": Scenario(
        [(A4, 0.2, "connect")],
        {"happy_eyeballs_delay": 0.25},
        {A4: 0},
        A4,
        0.2,
    ),
    "an unreachable network fails at once, and the next starts at once": Scenario(
        [(A6, NOW, "unreachable"), (B6, 0.1, "refuse"), (A4, 0.05, "connect")],
        {"happy_eyeballs_delay": 0.25},
        {A6: 0, A4: 0},
        A4,
        0.05,
    ),
    "a connect that succeeds at once wins at once": Scenario(
        [(A6, HANG, "hang"), (A4, NOW, "connect"), (B6, 0.01, "connect")],
        {"happy_eyeballs_delay": 0.25},
        {A6: 0, A4: 0.25},
        A4,
        0.25,
    ),
    "an attempt failing at once with every other failed ends the race": Scenario(
        [(A6, 0.1, "refuse"), (A4, NOW, "unreachable")],
        {"happy_eyeballs_delay": 0.25},
        {A6: 0, A4: 0.1},
        None,
        0.1,
        error="Multiple exceptions",
    ),
    "a single refused address raises its own error": Scenario(
        [(A4, 0.2, "refuse")],
        {"happy_eyeballs_delay": 0.25},
        {A4: 0},
        None,
        0.2,
        error=r"\[Errno 111\] Connect call failed \('192.0.2.1', 80\)",
    ),
}


def run_scenario(vrun: Runner[Any], scenario: Scenario, path: Path = "task") -> tuple[Any, float]:
    async def main() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop, path=path)
        scenario.network = net
        for host, delay, outcome in scenario.hosts:
            net.script(host, delay=delay or 0.0, outcome=outcome, at_once=delay is NOW)
        addr_infos = [ai(h) for h, _, _ in scenario.hosts]
        try:
            sock = await start_connection(
                addr_infos, socket_factory=net.socket_factory, **scenario.kwargs
            )
        except OSError as exc:
            return exc, loop.time()
        return sock, loop.time()

    outcome: tuple[Any, float] = vrun(main)
    return outcome


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(vrun: Runner[Any], name: str, path: Path) -> None:
    scenario = SCENARIOS[name]
    result, end = run_scenario(vrun, scenario, path)
    net = scenario.network
    assert net is not None
    assert net.start_times == pytest.approx(scenario.starts)
    assert end == pytest.approx(scenario.end)
    winners = [s for s in net.sockets if s.close_count == 0]
    if scenario.winner is None:
        assert isinstance(result, OSError)
        assert scenario.error is not None
        assert_error_lists_attempts(result, scenario)
        assert winners == []
    else:
        assert isinstance(result, FakeSocket)
        assert result.addr_info[4][0] == scenario.winner
        assert winners == [result]
        assert not result.getblocking()
        result.close()
    assert all(s.close_count == 1 for s in net.sockets), "each socket closed exactly once"


def assert_error_lists_attempts(error: OSError, scenario: Scenario) -> None:
    assert scenario.error is not None
    assert error.args
    import re

    assert re.search(scenario.error, str(error)), str(error)
    group = error.__cause__
    assert isinstance(group, ExceptionGroup)
    tagged = [getattr(e, "happydial_addr_info", None) for e in group.exceptions]
    assert [t[4][0] for t in tagged if t is not None] == list(scenario.starts)
    assert [a[4][0] for a in failed_addr_infos(error)] == list(scenario.starts)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_errno_kept_when_all_agree(vrun: Runner[Any]) -> None:
    result, _ = run_scenario(
        vrun, Scenario([(A6, 0.1, "refuse"), (A4, 0.1, "refuse")], {}, {}, None, 0)
    )
    assert isinstance(result, ConnectionRefusedError)
    assert result.errno == errno.ECONNREFUSED
    assert str(result).startswith("[Errno 111] Multiple exceptions: ")


def test_mixed_errnos_give_a_plain_oserror(vrun: Runner[Any]) -> None:
    result, _ = run_scenario(
        vrun, Scenario([(A6, 0.1, "unreachable"), (A4, 0.1, "refuse")], {}, {}, None, 0)
    )
    assert type(result) is OSError
    assert result.errno is None
    assert "Multiple exceptions: [Errno 101]" in str(result)
    group = result.__cause__
    assert isinstance(group, ExceptionGroup)
    assert "while connecting to [2001:db8::a]:80" in group.exceptions[0].__notes__


def test_all_errors_raises_the_group(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A6, delay=0.1, outcome="refuse")
        net.script(A4, delay=0.1, outcome="reset")
        with pytest.raises(ExceptionGroup) as info:
            await start_connection(
                [ai(A6), ai(A4)], all_errors=True, socket_factory=net.socket_factory
            )
        assert [type(e) for e in info.value.exceptions] == [
            ConnectionRefusedError,
            ConnectionResetError,
        ]
        assert [a[4][0] for a in failed_addr_infos(info.value)] == [A6, A4]

    vrun(main)


def test_runtime_errors_from_connect_are_failures(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A6, delay=0.1, outcome=RuntimeError("File descriptor 7 is used by transport"))
        net.script(A4, delay=0.1, outcome=RuntimeError("File descriptor 8 is used by transport"))
        with pytest.raises(RuntimeError, match="Multiple exceptions: File descriptor 7"):
            await start_connection([ai(A6), ai(A4)], socket_factory=net.socket_factory)

    vrun(main)


@pytest.mark.parametrize("delay", [None, 0.25, 0])
@pytest.mark.parametrize("where", ["connect", "factory"])
def test_programming_errors_propagate_on_every_path(
    vrun: Runner[Any], delay: float | None, where: str
) -> None:
    # Upstream: the sequential path raises it, the racing path swallows it and then
    # dies with IndexError. Here both paths raise it at once, and nothing leaks.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A6, delay=HANG, outcome="hang")
        if where == "connect":
            net.script(A4, delay=0.1, outcome=ValueError("bad sockaddr"))
        else:
            net.factory_errors[A4] = ValueError("bad sockaddr")
        net.script(B6, delay=0.1, outcome="connect")
        with pytest.raises(ValueError, match="bad sockaddr"):
            await start_connection(
                [ai(A4), ai(A6), ai(B6)],
                happy_eyeballs_delay=delay,
                interleave=0,
                socket_factory=net.socket_factory,
            )
        if delay != 0:
            assert B6 not in net.start_times
        assert net.open_sockets == []

    vrun(main)


def test_factory_oserror_is_a_failed_attempt(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.factory_errors[A6] = OSError(errno.EMFILE, "Too many open files")
        net.script(A4, delay=0.1)
        sock = await start_connection(
            [ai(A6), ai(A4)], happy_eyeballs_delay=0.25, socket_factory=net.socket_factory
        )
        assert net.start_times == {A4: 0.0}
        sock.close()

    vrun(main)


def test_factory_must_return_a_socket(vrun: Runner[Any]) -> None:
    async def main() -> None:
        with pytest.raises(
            TypeError, match=r"socket_factory must return a socket, got str 'nope' \(it has no setb"
        ):
            await start_connection([ai(A4)], socket_factory=lambda _: "nope")  # type: ignore[arg-type,return-value]

    vrun(main)


def test_close_errors_never_replace_the_outcome(vrun: Runner[Any]) -> None:
    class BadClose(FakeSocket):
        def close(self) -> None:
            super().close()
            raise OSError(errno.EBADF, "Bad file descriptor")

    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A6, delay=0.1, outcome="refuse")
        net.script(A4, delay=0.3)

        def factory(addr_info: AddrInfoType) -> socket.socket:
            sock = BadClose(addr_info[0], addr_info[1], addr_info[2])
            sock.network, sock.addr_info = net, addr_info
            net.sockets.append(sock)
            return sock

        sock = await start_connection(
            [ai(A6), ai(A4), ai(B6)], happy_eyeballs_delay=0.05, socket_factory=factory
        )
        assert isinstance(sock, BadClose)
        assert sock.addr_info == ai(A4)
        assert [s.close_count for s in net.sockets] == [1, 0, 1]  # close() raised; ignored
        socket.socket.close(sock)

    vrun(main)


# ---------------------------------------------------------------------------
# Local binding
# ---------------------------------------------------------------------------


def test_bind_picks_the_family_and_reports_the_os_message(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A6, delay=0.1)
        net.script(A4, delay=0.1)
        net.bind_errors["192.0.2.50"] = OSError(errno.EADDRINUSE, "Address already in use")
        local = [ai("192.0.2.50", 0), ai("192.0.2.51", 0), ai("2001:db8::50", 0)]
        sock = await start_connection(
            [ai(A4)], local_addr_infos=local, socket_factory=net.socket_factory
        )
        assert isinstance(sock, FakeSocket)
        assert sock.bound_to == ("192.0.2.51", 0)
        sock.close()
        with pytest.raises(OSError, match="address already in use") as info:
            await start_connection(
                [ai(A4)], local_addr_infos=local[:1], socket_factory=net.socket_factory
            )
        assert info.value.errno == errno.EADDRINUSE
        assert "error while attempting to bind on address ('192.0.2.50', 0)" in str(info.value)
        sock = await start_connection(
            [ai(A6)], local_addr_infos=local, socket_factory=net.socket_factory
        )
        assert isinstance(sock, FakeSocket)
        assert sock.bound_to == ("2001:db8::50", 0, 0, 0)
        sock.close()

    vrun(main)


def test_no_local_address_of_the_family(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, delay=0.1)
        local = [ai("192.0.2.50", 0)]
        sock = await start_connection(
            [ai(A6), ai(A4)],
            local_addr_infos=local,
            happy_eyeballs_delay=0.25,
            socket_factory=net.socket_factory,
        )
        # The IPv6 attempt failed without a connect, so IPv4 started at once.
        assert net.start_times == {A4: 0.0}
        sock.close()
        with pytest.raises(OSError, match="no local address of family AF_INET6") as info:
            await start_connection([ai(A6)], local_addr_infos=[], socket_factory=net.socket_factory)
        assert info.value.errno == errno.EAFNOSUPPORT

    vrun(main)


# ---------------------------------------------------------------------------
# Cancellation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("at", [0.0, 0.1, 0.25, 0.3, 0.6])
def test_cancellation_at_every_stage(vrun: Runner[Any], at: float) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A6, outcome="hang")
        net.script(A4, delay=0.3, outcome="refuse")
        net.script(B6, delay=1.0)
        task = loop.create_task(
            start_connection(
                [ai(A6), ai(A4), ai(B6)],
                happy_eyeballs_delay=0.25,
                socket_factory=net.socket_factory,
            )
        )
        await asyncio.sleep(at)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert net.open_sockets == []
        assert all(s.close_count == 1 for s in net.sockets)
        assert loop.time() == at
        started = [t for t in (0.0, 0.25, 0.5) if t <= at]
        assert len(net.sockets) == len(started)

    vrun(main)


def slow_to_cancel_network(loop: asyncio.AbstractEventLoop) -> FakeNetwork:
    """A fake network whose connects take 1 s to stop once cancelled."""
    net = FakeNetwork(loop)
    plain = net.sock_connect

    async def slow_to_cancel(sock: socket.socket, address: Any) -> None:
        try:
            await plain(sock, address)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.sleep(1.0))
            raise

    loop.sock_connect = slow_to_cancel  # type: ignore[method-assign]
    return net


def test_cancellation_during_cleanup_is_not_swallowed(vrun: Runner[Any]) -> None:
    # A loser that takes time to stop: the caller is cancelled while we wait for it.
    # Upstream then returns a socket with the cancellation eaten; we raise, and the
    # socket that had won is closed too.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = slow_to_cancel_network(loop)
        net.script(A6, outcome="hang")
        net.script(A4, delay=0.05)
        task = loop.create_task(
            start_connection(
                [ai(A6), ai(A4)], happy_eyeballs_delay=0.25, socket_factory=net.socket_factory
            )
        )
        await asyncio.sleep(0.5)  # A4 won at 0.3; the loser stops at 1.3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() == pytest.approx(1.3)
        assert net.open_sockets == []
        await asyncio.sleep(0)

    vrun(main)


def test_cancelled_caller_twice_during_cleanup(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = slow_to_cancel_network(loop)
        net.script(A6, outcome="hang")
        task = loop.create_task(start_connection([ai(A6)], socket_factory=net.socket_factory))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert net.open_sockets == []
        await asyncio.sleep(0)

    vrun(main)


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------

BAD_ARGS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"addr_infos": []}, ValueError, "addr_infos must not be empty"),
    ({"addr_infos": "192.0.2.1"}, TypeError, "addr_infos must be an iterable"),
    (
        {"addr_infos": [ai("example.com")]},
        ValueError,
        r"addr_infos\[0\]: 'example.com' is not an IP",
    ),
    (
        {"addr_infos": [(socket.AF_INET, STREAM, TCP, "", ("::1", 80))]},
        ValueError,
        "is not an IP address of the entry's family",
    ),
    (
        {"happy_eyeballs_delay": -0.1},
        ValueError,
        "happy_eyeballs_delay must be a finite, non-negative",
    ),
    ({"happy_eyeballs_delay": math.nan}, ValueError, "happy_eyeballs_delay must be a finite"),
    ({"happy_eyeballs_delay": math.inf}, ValueError, "happy_eyeballs_delay must be a finite"),
    (
        {"happy_eyeballs_delay": "0.25"},
        TypeError,
        "happy_eyeballs_delay must be a number of seconds, None, or a DelayPolicy: .* got '0.25'",
    ),
    ({"happy_eyeballs_delay": True}, TypeError, "happy_eyeballs_delay must be a number"),
    (
        {"attempt_timeout": 0},
        ValueError,
        "attempt_timeout must be a finite, positive number of seconds, got 0",
    ),
    ({"interleave": -1}, ValueError, "interleave must be 0 .keep the order. or more, got -1"),
    ({"interleave": 1.5}, TypeError, "interleave must be an int or None, got 1.5"),
    ({"socket_factory": 42}, TypeError, "socket_factory must be callable or None, got 42"),
    ({"trace": "print"}, TypeError, "trace must be callable or None, got 'print'"),
    (
        {"local_addr_infos": [ai("localhost", 0)]},
        ValueError,
        r"local_addr_infos\[0\]: 'localhost' is not an IP",
    ),
    ({"local_addr_infos": [("x",)]}, ValueError, r"local_addr_infos\[0\] must be a 5-tuple"),
    ({"loop": "other"}, ValueError, "loop must be the running event loop"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), BAD_ARGS)
def test_bad_arguments_fail_before_any_socket(
    vrun: Runner[Any], kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        call: dict[str, Any] = {"addr_infos": [ai(A4)], "socket_factory": net.socket_factory}
        call.update(kwargs)
        with pytest.raises(exc, match=match):
            await start_connection(**call)
        assert net.sockets == []

    vrun(main)


def test_signature_is_a_drop_in_for_aiohappyeyeballs() -> None:
    import inspect

    params = inspect.signature(start_connection).parameters
    upstream = [
        "addr_infos",
        "local_addr_infos",
        "happy_eyeballs_delay",
        "interleave",
        "loop",
        "socket_factory",
    ]
    assert list(params)[: len(upstream)] == upstream
    assert params["addr_infos"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    for name in upstream[1:]:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[name].default is None
    for name in ("attempt_timeout", "all_errors", "trace"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert happydial.start_connection is start_connection


# ---------------------------------------------------------------------------
# Trace events
# ---------------------------------------------------------------------------


def test_trace_tells_the_story(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A6, outcome="hang")
        net.script(B6, delay=0.05, outcome="refuse")
        net.script(A4, delay=0.1)
        events: list[happydial.TraceEvent] = []
        sock = await start_connection(
            [ai(B6), ai(A6), ai(A4)],
            happy_eyeballs_delay=0.25,
            interleave=0,
            socket_factory=net.socket_factory,
            trace=events.append,
        )
        sock.close()
        story = [(type(e).__name__, e.attempt, round(e.time, 9)) for e in events]  # type: ignore[union-attr]
        assert story == (
            [
                ("AttemptStarted", 0, 0.0),
                ("AttemptFailed", 0, 0.05),
                ("AttemptStarted", 1, 0.05),
                ("AttemptStarted", 2, 0.30),
                ("AttemptSucceeded", 2, 0.40),
                ("AttemptCancelled", 1, 0.40),
            ]
        )
        failed = events[1]
        assert isinstance(failed, happydial.AttemptFailed)
        assert isinstance(failed.error, ConnectionRefusedError)
        assert failed.addr_info == ai(B6)

    vrun(main)


def test_cancellation_in_the_same_iteration_as_the_win(vrun: Runner[Any]) -> None:
    # The caller is cancelled while the winner is being declared: it must see
    # CancelledError, and the socket that won must be closed, not leaked.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A6, outcome="hang")
        net.script(A4, delay=0.05)
        task: asyncio.Task[socket.socket] | None = None

        def trace(event: happydial.TraceEvent) -> None:
            if isinstance(event, happydial.AttemptSucceeded) and task is not None:
                task.cancel()

        task = loop.create_task(
            start_connection(
                [ai(A6), ai(A4)],
                happy_eyeballs_delay=0.25,
                socket_factory=net.socket_factory,
                trace=trace,
            )
        )
        with pytest.raises(asyncio.CancelledError):
            await task
        assert net.open_sockets == []
        assert all(s.close_count == 1 for s in net.sockets)

    vrun(main)


def test_a_loser_that_connects_anyway_is_closed(vrun: Runner[Any]) -> None:
    # Cancellation can arrive too late: the loser's connect completes regardless.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        plain = net.sock_connect

        async def ignores_cancel(sock: socket.socket, address: Any) -> None:
            try:
                await plain(sock, address)
            except asyncio.CancelledError:
                return  # "connected" after all

        loop.sock_connect = ignores_cancel  # type: ignore[method-assign]
        net.script(A6, outcome="hang")
        net.script(A4, delay=0.05)
        sock = await start_connection(
            [ai(A6), ai(A4)], happy_eyeballs_delay=0.25, socket_factory=net.socket_factory
        )
        assert isinstance(sock, FakeSocket)
        assert sock.addr_info == ai(A4)
        assert [s.close_count for s in net.sockets] == [1, 0]
        sock.close()

    vrun(main)


def test_error_notes_name_link_local_scopes(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script("fe80::1", delay=0.01, outcome="refuse")
        addr = (socket.AF_INET6, STREAM, TCP, "", ("fe80::1", 80, 0, 2))
        with pytest.raises(ConnectionRefusedError) as info:
            await start_connection([addr], socket_factory=net.socket_factory)
        assert "while connecting to [fe80::1%2]:80" in info.value.__notes__
        assert failed_addr_infos(info.value) == [addr]

    vrun(main)


def test_failed_addr_infos_ignores_foreign_errors() -> None:
    assert failed_addr_infos(ExceptionGroup("x", [OSError("y")])) == []
    assert failed_addr_infos(OSError("plain")) == []


@pytest.mark.parametrize(
    "on", ["AttemptStarted", "AttemptFailed", "AttemptSucceeded", "AttemptCancelled"]
)
def test_a_trace_that_raises_ends_the_call_cleanly(vrun: Runner[Any], on: str) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A6, delay=0.1, outcome="refuse")
        net.script(B6, outcome="hang")
        net.script(A4, delay=0.3)

        def trace(event: happydial.TraceEvent) -> None:
            if type(event).__name__ == on:
                raise ZeroDivisionError(on)

        with pytest.raises(ZeroDivisionError, match=on):
            await start_connection(
                [ai(A6), ai(B6), ai(A4)],
                happy_eyeballs_delay=0.05,
                interleave=0,
                socket_factory=net.socket_factory,
                trace=trace,
            )
        assert net.open_sockets == []
        assert all(s.close_count == 1 for s in net.sockets)

    vrun(main)


def test_failed_addr_infos_wants_an_exception() -> None:
    with pytest.raises(TypeError, match="error must be an exception, got 42"):
        failed_addr_infos(42)  # type: ignore[arg-type]


def test_a_link_local_address_without_scope_fails_clearly(vrun: Runner[Any]) -> None:
    # zeroconf's parsed_addresses() drops the scope; the kernel would say only EINVAL.
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script("fe80::1", delay=0.01)
        net.script(A4, delay=0.01)
        unscoped = (socket.AF_INET6, STREAM, TCP, "", ("FE80::1", 80, 0, 0))
        with pytest.raises(OSError, match=r"link-local address FE80::1 needs a scope id") as info:
            await start_connection([unscoped], socket_factory=net.socket_factory)
        assert info.value.errno == errno.EINVAL
        assert net.sockets == []  # refused before a socket was made
        # In a list, it is one failed attempt among others.
        sock = await start_connection(
            [unscoped, ai(A4)], happy_eyeballs_delay=0.25, socket_factory=net.socket_factory
        )
        assert net.start_times == {A4: 0.0}
        sock.close()
        # With a scope, by number or by name, it is tried.
        scoped_addrs: list[tuple[Any, ...]] = [
            ("fe80::1", 80, 0, 1),
            ("fe80::1%lo", 80, 0, 0),
            ("fec0::1", 80),  # outside fe80::/10: no scope needed
        ]
        for scoped in scoped_addrs:
            net.script(scoped[0], delay=0.01)
            entry = (socket.AF_INET6, STREAM, TCP, "", scoped)
            sock = await start_connection([entry], socket_factory=net.socket_factory)
            sock.close()

    vrun(main)


# ---------------------------------------------------------------------------
# The path users get
# ---------------------------------------------------------------------------


def test_selector_loops_and_uvloop_take_the_writer_path(run: Runner[Any]) -> None:
    # The fast path (and the speed figures in docs/performance.md) exists only while
    # asyncio's selector loops and uvloop are recognised: a rename upstream must fail
    # here, not fall back to a task per attempt in silence. On the writer path the
    # racer calls the socket's own connect_ex; loop.sock_connect never does.
    calls: list[tuple[Any, ...]] = []

    class Recording(socket.socket):
        def connect_ex(self, address: Any) -> int:
            calls.append(address)
            return super().connect_ex(address)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert uses_writer_callbacks(loop)
        with socket.create_server(("127.0.0.1", 0)) as server:
            port = server.getsockname()[1]
            sock = await start_connection(
                [ai("127.0.0.1", port)], socket_factory=lambda _: Recording()
            )
            assert sock.getpeername() == ("127.0.0.1", port)
            sock.close()
        assert calls == [("127.0.0.1", port)]

    run(main)


# Defects of the writer path that FakeNetwork(path="writer") showed (issue 12).


def test_an_immediate_failure_keeps_the_os_reason(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop(), path="writer")
        net.script(A4, outcome="unreachable", at_once=True)
        with pytest.raises(OSError) as info:
            await start_connection([ai(A4)], socket_factory=net.socket_factory)
        assert info.value.errno == errno.ENETUNREACH
        assert info.value.strerror is not None
        assert info.value.strerror.startswith(os.strerror(errno.ENETUNREACH))

    vrun(main)


def test_a_zone_in_the_host_is_resolved_on_the_writer_path(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop(), path="writer")
        net.script("fe80::1%lo", delay=0.01)
        entry = (socket.AF_INET6, STREAM, TCP, "", ("fe80::1%lo", 80, 0, 0))
        sock = await start_connection([entry], socket_factory=net.socket_factory)
        assert isinstance(sock, FakeSocket)
        sock.close()
        # What the kernel needs: the bare address, and the interface as scope id.
        assert sock.connect_address == ("fe80::1", 80, 0, socket.if_nametoindex("lo"))

    vrun(main)
