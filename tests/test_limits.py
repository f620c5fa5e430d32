"""The limits of a call (issue 16): ``max_in_flight`` and the overall deadline ``timeout``.

Every scenario runs on the virtual clock, on both connect paths (writer callbacks and
a task per attempt), and asserts exact start and end times: the cap drops the oldest
attempt in the instant the next one is due (or, with a delay of 0, makes the next
wait for a slot), and the deadline ends the call at exactly its time with every
attempt named in the error.
"""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any

import pytest

import happydial
from happydial import AddrInfoType, connect, failed_addr_infos, start_connection
from happydial.testing import FakeNetwork, FakeSocket, Path

from .conftest import Runner

PATHS: list[Path] = ["writer", "task"]
V6, V4 = socket.AF_INET6, socket.AF_INET


def ai(host: str, port: int = 80) -> AddrInfoType:
    if ":" in host:
        return (V6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
    return (V4, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


def hosts(count: int) -> list[str]:
    return [f"192.0.2.{i + 1}" for i in range(count)]


async def race(
    net: FakeNetwork, names: list[str], **kwargs: Any
) -> tuple[FakeSocket | BaseException, float]:
    loop = asyncio.get_running_loop()
    try:
        sock = await start_connection(
            [ai(h) for h in names], socket_factory=net.socket_factory, **kwargs
        )
    except (OSError, ExceptionGroup) as exc:
        return exc, loop.time()
    assert isinstance(sock, FakeSocket)
    return sock, loop.time()


def peak_in_flight(net: FakeNetwork) -> int:
    """The most connects in flight at one instant (an end before a start at a tie)."""
    marks = [(t, 1) for t in net.start_times.values()]
    marks += [(t, -1) for t in net.end_times.values()]
    peak = current = 0
    for _, change in sorted(marks):
        current += change
        peak = max(peak, current)
    return peak


# -- max_in_flight ----------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_the_cap_drops_the_oldest_when_the_next_is_due(vrun: Runner[Any], path: Path) -> None:
    names = hosts(9)

    async def main() -> tuple[FakeNetwork, FakeSocket | BaseException, float]:
        net = FakeNetwork(asyncio.get_running_loop(), path=path)
        for name in names[:8]:
            net.script(name, outcome="hang")  # black holes
        net.script(names[8], delay=0.05, outcome="connect")
        result, end = await race(net, names, happy_eyeballs_delay=0.25, max_in_flight=3)
        return net, result, end

    net, result, end = vrun(main)
    starts = {h: round(0.25 * i, 6) for i, h in enumerate(names)}
    assert {h: round(t, 6) for h, t in net.start_times.items()} == starts
    # Attempt i is dropped in the instant attempt i + 3 starts; the last three end
    # when the winner connects.
    ends = {h: round(0.25 * (i + 3), 6) for i, h in enumerate(names[:6])}
    ends |= dict.fromkeys(names[6:], 2.05)
    assert {h: round(t, 6) for h, t in net.end_times.items()} == ends
    assert peak_in_flight(net) == 3
    assert isinstance(result, FakeSocket)
    assert result.addr_info[4][0] == names[8]
    assert end == pytest.approx(2.05)
    assert [s.close_count for s in net.sockets] == [1] * 8 + [0]
    result.close()


@pytest.mark.parametrize("path", PATHS)
def test_dropped_attempts_fail_with_a_timeout_naming_the_cap(vrun: Runner[Any], path: Path) -> None:
    names = hosts(4)

    async def main() -> tuple[FakeNetwork, FakeSocket | BaseException, float]:
        net = FakeNetwork(asyncio.get_running_loop(), path=path)
        for name in names:
            net.script(name, delay=0.7, outcome="refuse")
        result, end = await race(net, names, happy_eyeballs_delay=0.25, max_in_flight=2)
        return net, result, end

    net, result, end = vrun(main)
    # 0: dropped at 0.5 (when 2 starts); 1: dropped at 0.75; 2 and 3 refused at 1.2, 1.45.
    assert end == pytest.approx(1.45)
    assert isinstance(result, OSError)
    assert [a[4][0] for a in failed_addr_infos(result)] == names
    group = result.__cause__
    assert isinstance(group, ExceptionGroup)
    kinds = [type(e) for e in group.exceptions]
    assert kinds == [TimeoutError, TimeoutError, ConnectionRefusedError, ConnectionRefusedError]
    assert "max_in_flight" in str(group.exceptions[0])
    assert "at most 2 attempts in flight" in str(group.exceptions[0])
    assert {h: round(t, 6) for h, t in net.end_times.items()} == {
        names[0]: 0.5,
        names[1]: 0.75,
        names[2]: 1.2,
        names[3]: 1.45,
    }


@pytest.mark.parametrize("path", PATHS)
def test_with_a_delay_of_zero_the_cap_waits_for_a_slot(vrun: Runner[Any], path: Path) -> None:
    names = hosts(7)

    async def main() -> tuple[FakeNetwork, FakeSocket | BaseException, float]:
        net = FakeNetwork(asyncio.get_running_loop(), path=path)
        for name in names[:6]:
            net.script(name, delay=0.1, outcome="refuse")
        net.script(names[6], delay=0.1, outcome="connect")
        result, end = await race(net, names, happy_eyeballs_delay=0, max_in_flight=3)
        return net, result, end

    net, result, end = vrun(main)
    # Three at once; each failure frees a slot for the next, nobody is dropped.
    assert {h: round(t, 6) for h, t in net.start_times.items()} == dict(
        zip(names, [0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.2], strict=True)
    )
    assert peak_in_flight(net) == 3
    assert isinstance(result, FakeSocket)
    assert result.addr_info[4][0] == names[6]
    assert end == pytest.approx(0.3)
    result.close()


@pytest.mark.parametrize("path", PATHS)
def test_no_cap_keeps_every_attempt(vrun: Runner[Any], path: Path) -> None:
    names = hosts(9)

    async def main() -> tuple[FakeNetwork, FakeSocket | BaseException, float]:
        net = FakeNetwork(asyncio.get_running_loop(), path=path)
        for name in names[:8]:
            net.script(name, outcome="hang")
        net.script(names[8], delay=0.05, outcome="connect")
        result, end = await race(net, names, happy_eyeballs_delay=0.25, max_in_flight=None)
        return net, result, end

    net, result, _ = vrun(main)
    assert peak_in_flight(net) == 9
    assert {round(t, 6) for t in net.end_times.values()} == {2.05}
    assert isinstance(result, FakeSocket)
    result.close()


def test_the_default_cap_is_six(vrun: Runner[Any]) -> None:
    names = hosts(8)

    async def main() -> FakeNetwork:
        net = FakeNetwork(asyncio.get_running_loop(), path="writer")
        for name in names:
            net.script(name, outcome="hang")
        result, end = await race(net, names, happy_eyeballs_delay=0.25, timeout=1.9)
        assert isinstance(result, TimeoutError)
        assert end == pytest.approx(1.9)
        return net

    net = vrun(main)
    assert peak_in_flight(net) == 6
    # The 7th start (1.5 s) dropped the first, the 8th (1.75 s) the second.
    assert net.end_times[names[0]] == pytest.approx(1.5)
    assert net.end_times[names[1]] == pytest.approx(1.75)


# -- the overall deadline ---------------------------------------------------------------


@pytest.mark.parametrize("all_errors", [False, True])
@pytest.mark.parametrize("path", PATHS)
def test_the_deadline_ends_a_race_of_black_holes_on_time(
    vrun: Runner[Any], path: Path, all_errors: bool
) -> None:
    names = hosts(8)

    async def main() -> tuple[FakeNetwork, FakeSocket | BaseException, float]:
        net = FakeNetwork(asyncio.get_running_loop(), path=path)
        for name in names:
            net.script(name, outcome="hang")
        result, end = await race(
            net,
            names,
            happy_eyeballs_delay=0.25,
            timeout=2.0,
            max_in_flight=None,
            all_errors=all_errors,
        )
        return net, result, end

    net, result, end = vrun(main)
    assert end == pytest.approx(2.0)
    # A TimeoutError whatever all_errors says: the caller asked for a bound.
    assert isinstance(result, TimeoutError)
    assert str(result) == "no connection within 2 s (8 attempts)"
    assert [a[4][0] for a in failed_addr_infos(result)] == names
    group = result.__cause__
    assert isinstance(group, ExceptionGroup)
    assert all(isinstance(e, TimeoutError) for e in group.exceptions)
    assert "still connecting when the 2 s deadline passed" in str(group.exceptions[0])
    assert {round(t, 6) for t in net.end_times.values()} == {2.0}
    assert all(s.close_count == 1 for s in net.sockets)


@pytest.mark.parametrize("path", PATHS)
def test_the_deadline_keeps_the_errors_of_attempts_that_failed_before_it(
    vrun: Runner[Any], path: Path
) -> None:
    names = hosts(3)

    async def main() -> tuple[FakeNetwork, FakeSocket | BaseException, float]:
        net = FakeNetwork(asyncio.get_running_loop(), path=path)
        net.script(names[0], delay=0.1, outcome="refuse")
        net.script(names[1], outcome="hang")
        net.script(names[2], delay=0.1, outcome="connect")  # never started
        result, end = await race(net, names, happy_eyeballs_delay=1.0, timeout=0.5)
        return net, result, end

    net, result, end = vrun(main)
    assert end == pytest.approx(0.5)
    assert isinstance(result, TimeoutError)
    assert str(result) == "no connection within 0.5 s (2 attempts)"
    group = result.__cause__
    assert isinstance(group, ExceptionGroup)
    assert [type(e) for e in group.exceptions] == [ConnectionRefusedError, TimeoutError]
    assert list(net.start_times) == names[:2]


@pytest.mark.parametrize("path", PATHS)
def test_a_win_before_the_deadline_leaves_no_timer(vrun: Runner[Any], path: Path) -> None:
    async def main() -> tuple[FakeSocket | BaseException, float]:
        net = FakeNetwork(asyncio.get_running_loop(), path=path)
        net.script("192.0.2.1", delay=0.1, outcome="connect")
        return await race(net, ["192.0.2.1"], timeout=5.0)

    result, end = vrun(main)  # vrun fails on a timer left on the loop
    assert isinstance(result, FakeSocket)
    assert end == pytest.approx(0.1)
    result.close()


class StuckResolver:
    """IPv4 answers *answer* after 0.1 s; IPv6 never answers (or fails, if given)."""

    def __init__(self, answer: list[str], v6_error: OSError | None = None) -> None:
        self.answer = answer
        self.v6_error = v6_error

    async def __call__(self, _host: str, port: int, family: int) -> list[AddrInfoType]:
        if family == V6:
            if self.v6_error is not None:
                await asyncio.sleep(0.01)
                raise self.v6_error
            await asyncio.sleep(math.inf)
        await asyncio.sleep(0.1)
        return [ai(h, port) for h in self.answer]


@pytest.mark.parametrize("path", PATHS)
def test_the_deadline_of_connect_covers_the_lookups(vrun: Runner[Any], path: Path) -> None:
    async def main() -> tuple[BaseException, float]:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop, path=path)
        net.script("192.0.2.1", outcome="hang")
        with pytest.raises(TimeoutError) as caught:
            await connect(
                "example.test",
                443,
                resolver=StuckResolver(["192.0.2.1"]),
                socket_factory=net.socket_factory,
                nat64=False,
                timeout=1.0,
            )
        return caught.value, loop.time()

    error, end = vrun(main)
    assert end == pytest.approx(1.0)
    assert str(error) == "no connection to example.test:443 within 1 s (1 attempt)"
    group = error.__cause__
    assert isinstance(group, ExceptionGroup)
    texts = [str(e) for e in group.exceptions]
    assert texts[0] == "the AAAA lookup of 'example.test' had not answered"
    assert [a[4][0] for a in failed_addr_infos(error)] == ["192.0.2.1"]


def test_the_deadline_of_connect_names_a_failed_lookup(vrun: Runner[Any]) -> None:
    failure = socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def main() -> BaseException:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script("192.0.2.1", outcome="hang")
        with pytest.raises(TimeoutError) as caught:
            await connect(
                "example.test",
                80,
                resolver=StuckResolver(["192.0.2.1"], v6_error=failure),
                socket_factory=net.socket_factory,
                nat64=False,
                timeout=0.5,
            )
        return caught.value

    error = vrun(main)
    group = error.__cause__
    assert isinstance(group, ExceptionGroup)
    assert group.exceptions[0] is failure
    assert isinstance(group.exceptions[1], TimeoutError)


def test_the_deadline_of_connect_after_both_lookups_answered(vrun: Runner[Any]) -> None:
    # Both lookups answered: the error's cause holds the attempts alone.
    async def resolve(host: str, port: int, family: int) -> list[AddrInfoType]:
        return [ai("2001:db8::1" if family == V6 else "192.0.2.1", port)]

    async def main() -> BaseException:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script("2001:db8::1", outcome="hang")
        net.script("192.0.2.1", outcome="hang")
        with pytest.raises(TimeoutError) as caught:
            await connect(
                "example.test",
                80,
                resolver=resolve,
                socket_factory=net.socket_factory,
                nat64=False,
                timeout=0.5,
            )
        return caught.value

    error = vrun(main)
    assert str(error) == "no connection to example.test:80 within 0.5 s (2 attempts)"
    group = error.__cause__
    assert isinstance(group, ExceptionGroup)
    assert [a[4][0] for a in failed_addr_infos(error)] == ["2001:db8::1", "192.0.2.1"]
    assert len(group.exceptions) == 2


def test_the_deadline_before_any_answer(vrun: Runner[Any]) -> None:
    async def main() -> BaseException:
        with pytest.raises(TimeoutError) as caught:
            await connect("example.test", 80, resolver=StuckResolver([]), nat64=False, timeout=0.05)
        return caught.value

    error = vrun(main)
    assert str(error) == "no connection to example.test:80 within 0.05 s (0 attempts)"
    group = error.__cause__
    assert isinstance(group, ExceptionGroup)
    assert [str(e) for e in group.exceptions] == [
        "the AAAA lookup of 'example.test' had not answered",
        "the A lookup of 'example.test' had not answered",
    ]


@pytest.mark.parametrize("path", PATHS)
def test_the_deadline_of_an_ip_literal(vrun: Runner[Any], path: Path) -> None:
    async def main() -> BaseException:
        net = FakeNetwork(asyncio.get_running_loop(), path=path)
        net.script("2001:db8::1", outcome="hang")
        with pytest.raises(TimeoutError) as caught:
            await connect(
                "2001:db8::1", 80, socket_factory=net.socket_factory, nat64=False, timeout=0.3
            )
        return caught.value

    error = vrun(main)
    assert str(error) == "no connection to [2001:db8::1]:80 within 0.3 s (1 attempt)"


def test_the_wrappers_take_the_limits(vrun: Runner[Any]) -> None:
    async def main() -> BaseException:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script("192.0.2.1", outcome="hang")
        with pytest.raises(TimeoutError) as caught:
            await happydial.open_connection(
                "192.0.2.1",
                80,
                socket_factory=net.socket_factory,
                nat64=False,
                timeout=0.2,
                max_in_flight=1,
            )
        return caught.value

    error = vrun(main)
    assert str(error) == "no connection to 192.0.2.1:80 within 0.2 s (1 attempt)"


def test_history_records_dropped_and_deadline_attempts_as_timeouts(vrun: Runner[Any]) -> None:
    history = happydial.AddressHistory()
    names = hosts(3)

    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        for name in names:
            net.script(name, outcome="hang")
        result, _ = await race(
            net, names, happy_eyeballs_delay=0.25, max_in_flight=2, timeout=0.6, history=history
        )
        assert isinstance(result, TimeoutError)

    vrun(main)
    for name in names:
        assert history.is_cooling(ai(name)[4]), name


# -- bad values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"max_in_flight": 0}, ValueError, "max_in_flight must be at least 1, got 0"),
        ({"max_in_flight": True}, TypeError, "max_in_flight must be an int, got True"),
        ({"max_in_flight": 2.0}, TypeError, "max_in_flight must be an int, got 2.0"),
        ({"timeout": 0}, ValueError, "timeout must be a finite, positive number"),
        ({"timeout": -1}, ValueError, "timeout must be a finite, positive number"),
        ({"timeout": math.nan}, ValueError, "timeout must be a finite, positive number"),
        ({"timeout": "1"}, TypeError, "timeout must be a number of seconds or None, got '1'"),
    ],
)
@pytest.mark.parametrize("call", ["start_connection", "connect"])
def test_bad_limits_are_refused_by_name(
    vrun: Runner[Any], call: str, kwargs: dict[str, Any], error: type[Exception], text: str
) -> None:
    async def main() -> None:
        if call == "start_connection":
            attempt = start_connection([ai("192.0.2.1")], **kwargs)
        else:
            attempt = connect("192.0.2.1", 80, **kwargs)
        with pytest.raises(error, match=text.replace("(", r"\(")):
            await attempt

    vrun(main)


# -- the new phases meet the rare ones: ties, the caller's cancel, a trace that raises ----


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("tie", ["win", "refuse", "cancel", "due"])
def test_the_deadline_in_the_instant_of_another_event(
    vrun: Runner[Any], path: Path, tie: str
) -> None:
    # Attempt 1 (0.25 s) hangs; attempt 0 ends at exactly the deadline (1.0 s), or the
    # caller cancels then, or the next start is due then. Whatever order the loop
    # picks, the outcome is one of the allowed ones and every loser is closed once.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop, path=path)
        outcome = {"win": "connect", "refuse": "refuse"}.get(tie, "hang")
        net.script("192.0.2.1", delay=1.0, outcome=outcome)  # type: ignore[arg-type]
        net.script("192.0.2.2", outcome="hang")
        net.script("192.0.2.3", outcome="hang")
        delay = 0.5 if tie == "due" else 0.25
        task = asyncio.ensure_future(
            race(
                net,
                ["192.0.2.1", "192.0.2.2", "192.0.2.3"],
                happy_eyeballs_delay=delay,
                timeout=1.0,
                max_in_flight=2,
            )
        )
        if tie == "cancel":
            loop.call_at(loop.time() + 1.0, task.cancel)
        try:
            result, end = await task
        except asyncio.CancelledError:
            result, end = None, loop.time()
        assert end == pytest.approx(1.0)
        if isinstance(result, FakeSocket):
            assert tie == "win"
            result.close()
        elif result is not None:
            assert isinstance(result, TimeoutError), repr(result)
        else:
            assert tie == "cancel"
        assert all(s.close_count == 1 for s in net.sockets)

    vrun(main)


class BoomError(Exception):
    pass


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("when", ["drop", "deadline"])
def test_a_trace_that_raises_on_a_dropped_or_expired_attempt(
    vrun: Runner[Any], path: Path, when: str
) -> None:
    def trace(event: object) -> None:
        if isinstance(event, happydial.AttemptFailed):
            raise BoomError(when)

    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop(), path=path)
        for name in hosts(3):
            net.script(name, outcome="hang")
        cap = 1 if when == "drop" else None
        with pytest.raises(BoomError):
            await start_connection(
                [ai(h) for h in hosts(3)],
                socket_factory=net.socket_factory,
                happy_eyeballs_delay=0.25,
                max_in_flight=cap,
                timeout=0.4,
                trace=trace,
            )
        assert all(s.close_count == 1 for s in net.sockets)

    vrun(main)
