"""The defects an independent review confirmed (issue 12), each tested as a class.

Every test here failed before its fix. Where a whole class of bug was possible, the
test sweeps the class: every phase of a call (a cancellation landing at each loop
iteration), every loop kind (the ``run`` fixture: asyncio, uvloop, eager tasks; the
``vrun`` fixture: the virtual clock) and every kind of exception.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Self
from unittest import mock

import pytest

import happydial
from happydial import AddrInfoType, connect, staggered_race, start_connection
from happydial.testing import FakeNetwork

from .conftest import Runner
from .integration_helpers import listening

V6, V4 = socket.AF_INET6, socket.AF_INET
A6, B6 = "2001:db8::a", "2001:db8::b"
A4, B4, C4, D4 = "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"


def ai(host: str, port: int = 80) -> AddrInfoType:
    if ":" in host:
        return (V6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
    return (V4, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


def resolver_of(
    answers: dict[int, tuple[float, list[str] | BaseException]],
) -> Callable[[str, int, int], Awaitable[list[AddrInfoType]]]:
    async def resolve(host: str, port: int, family: int) -> list[AddrInfoType]:
        delay, answer = answers[family]
        await asyncio.sleep(delay)
        if isinstance(answer, BaseException):
            raise answer
        return [ai(h, port) for h in answer]

    return resolve


# -- 1. A cancellation in any phase of connect() closes the socket ------------------


def _calls(port: int) -> dict[str, Callable[[], Awaitable[object]]]:
    """The three host-name entry points, each with a resolver that answers at once."""

    async def plain(host: str, port: int, family: int) -> list[AddrInfoType]:
        if family == V6:
            raise socket.gaierror(socket.EAI_NODATA, "no AAAA")
        return [ai("127.0.0.1", port)]

    return {
        "connect": lambda: connect("h.test", port, resolver=plain),
        # The same with the limits armed: a deadline timer and the cap's checks.
        "connect-limits": lambda: connect(
            "h.test", port, resolver=plain, timeout=30.0, max_in_flight=1
        ),
        "open_connection": lambda: happydial.open_connection("h.test", port, resolver=plain),
        "create_connection": lambda: happydial.create_connection(
            asyncio.Protocol, "h.test", port, resolver=plain
        ),
    }


async def _release(result: object) -> None:
    """Close whatever a successful call returned."""
    if isinstance(result, socket.socket):
        result.close()
    elif isinstance(result, tuple) and isinstance(result[1], asyncio.StreamWriter):
        result[1].close()
        await result[1].wait_closed()
    elif isinstance(result, tuple):
        result[0].close()
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    "entry", ["connect", "connect-limits", "open_connection", "create_connection"]
)
def test_a_cancellation_at_any_iteration_leaks_nothing(
    run: Runner[Any], entry: str, no_fd_leak: None
) -> None:
    # The cancel lands k loop iterations after the call started, for every k up to
    # well past the win: lookups, the race, the win, the handoff, the return.
    async def main() -> None:
        with listening() as server:
            server.setblocking(False)
            port = server.getsockname()[1]
            outcomes = set()
            for k in range(40):
                task = asyncio.ensure_future(_calls(port)[entry]())
                for _ in range(k):
                    await asyncio.sleep(0)
                task.cancel()
                try:
                    result = await task
                except asyncio.CancelledError:
                    outcomes.add("cancelled")
                else:
                    outcomes.add("returned")
                    await _release(result)
                await asyncio.sleep(0.001)  # the server's accepted side, then settle
                while True:
                    try:
                        conn, _ = server.accept()
                    except BlockingIOError:
                        break
                    conn.close()
            # Both ends of the class were reached: cancelled before and after the win.
            assert outcomes == {"cancelled", "returned"}

    run(main)


def test_a_timeout_just_after_the_win_closes_the_socket(vrun: Runner[Any]) -> None:
    # A slow AAAA lookup under asyncio.timeout: the race is won on IPv4 and the
    # timeout fires in the iterations after; whichever wins, no socket is left open.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        for offset in range(6):
            net = FakeNetwork(loop)
            net.script(A4, delay=0.05)
            resolver = resolver_of({V6: (10.0, [A6]), V4: (0.0, [A4])})
            start = loop.time()
            won_at = start + 0.05 + 0.05  # resolution delay, then the connect
            try:
                async with asyncio.timeout_at(won_at + offset * 1e-9):
                    sock = await connect(
                        "h.test", 80, resolver=resolver, socket_factory=net.socket_factory
                    )
            except TimeoutError:
                pass
            else:
                sock.close()
            assert net.open_sockets == []
            await asyncio.sleep(0)

    vrun(main)


def test_abandoned_lookups_never_delay_the_caller(vrun: Runner[Any]) -> None:
    # A resolver whose cancellation cleanup takes 10 s: connect() returns when the
    # race is won, not 10 s later; the lookup ends on its own.
    cleaned: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A4, delay=0.05)

        async def resolver(host: str, port: int, family: int) -> list[AddrInfoType]:
            if family == V4:
                return [ai(A4, port)]
            try:
                await asyncio.sleep(100)
            except asyncio.CancelledError:
                await asyncio.sleep(10)  # a slow cleanup
                cleaned.append(loop.time())
                raise
            return []  # pragma: no cover - never reached

        sock = await connect("h.test", 80, resolver=resolver, socket_factory=net.socket_factory)
        assert loop.time() == pytest.approx(0.10)
        sock.close()
        # The abandoned lookup goes on without us; let it end before the leak check.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        assert len(others) == 1
        await asyncio.wait(others)
        assert cleaned == [pytest.approx(10.10)]

    vrun(main)


def test_a_well_behaved_lookup_has_ended_when_connect_returns(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, delay=0.05)
        resolver = resolver_of({V6: (10.0, [A6]), V4: (0.0, [A4])})
        sock = await connect("h.test", 80, resolver=resolver, socket_factory=net.socket_factory)
        sock.close()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    vrun(main)


# -- 2. A resolver's own CancelledError fails its family; it never hangs --------------


def test_a_resolver_cancelled_by_someone_else_fails_its_family(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A4, delay=0.01)
        shared: asyncio.Future[list[AddrInfoType]] = loop.create_future()
        loop.call_later(0.02, shared.cancel)  # another waiter gives up the shared lookup

        async def resolver(host: str, port: int, family: int) -> list[AddrInfoType]:
            if family == V6:
                return await shared
            await asyncio.sleep(0.03)
            return [ai(A4, port)]

        events: list[happydial.TraceEvent] = []
        sock = await connect(
            "h.test", 80, resolver=resolver, socket_factory=net.socket_factory, trace=events.append
        )
        assert sock is net.sockets[0]
        sock.close()
        failed = [e for e in events if isinstance(e, happydial.ResolutionFailed)]
        assert [e.family for e in failed] == [V6]
        assert failed[0].time == pytest.approx(0.02)
        assert isinstance(failed[0].error, socket.gaierror)
        assert failed[0].error.errno == socket.EAI_AGAIN
        assert str(failed[0].error) == "[Errno -3] the resolver's lookup of 'h.test' was cancelled"
        assert isinstance(failed[0].error.__cause__, asyncio.CancelledError)
        assert loop.time() == pytest.approx(0.04)  # A at 0.03, connect 0.01: no hang

    vrun(main)


@pytest.mark.parametrize("family", [socket.AF_UNSPEC, V4, V6])
def test_every_lookup_cancelled_by_the_resolver_is_a_resolution_error(
    vrun: Runner[Any], family: int
) -> None:
    async def main() -> None:
        async def resolver(host: str, port: int, family: int) -> list[AddrInfoType]:
            await asyncio.sleep(0.01)
            raise asyncio.CancelledError

        with pytest.raises(socket.gaierror) as info:
            await connect("h.test", 80, resolver=resolver, family=family)
        assert info.value.errno == socket.EAI_AGAIN
        which = {int(socket.AF_UNSPEC): "AAAA and A", int(V4): "A", int(V6): "AAAA"}[family]
        assert str(info.value) == (
            f"[Errno -3] cannot resolve 'h.test' ({which}):"
            " [Errno -3] the resolver's lookup of 'h.test' was cancelled"
        )

    vrun(main)


class ResolverBug(BaseException):
    """A BaseException that is not an Exception."""


@pytest.mark.parametrize("error", [ResolverBug("bug"), KeyError("bug"), SystemExit(3)])
@pytest.mark.parametrize("when", [0.0, 0.02])
def test_a_resolver_bug_of_any_kind_reaches_the_caller(
    vrun: Runner[Any], error: BaseException, when: float
) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, outcome="hang")
        resolver = resolver_of({V6: (when, error), V4: (0.01, [A4])})
        with pytest.raises(type(error)) as info:
            await connect("h.test", 80, resolver=resolver, socket_factory=net.socket_factory)
        assert info.value is error
        assert net.open_sockets == []
        assert asyncio.all_tasks() == {asyncio.current_task()}

    vrun(main)


# -- 1 and 2, the message: each family named once -------------------------------------


def test_resolution_errors_name_each_family_once(vrun: Runner[Any]) -> None:
    async def main() -> None:
        same = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        other = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        with pytest.raises(socket.gaierror) as info:
            await connect("h.test", 80, resolver=resolver_of({V6: (0, same), V4: (0, same)}))
        assert str(info.value) == (
            "[Errno -2] cannot resolve 'h.test' (AAAA and A): [Errno -2] Name or service not known"
        )
        with pytest.raises(socket.gaierror) as info:
            await connect("h.test", 80, resolver=resolver_of({V6: (0.01, same), V4: (0, other)}))
        assert str(info.value) == (
            "[Errno -2] cannot resolve 'h.test': AAAA: [Errno -2] Name or service not known;"
            " A: [Errno -3] Temporary failure in name resolution"
        )
        assert info.value.errno == socket.EAI_NONAME
        assert isinstance(info.value.__cause__, ExceptionGroup)
        assert list(info.value.__cause__.exceptions) == [same, other]  # AAAA first, always
        with pytest.raises(socket.gaierror) as info:
            await connect("h.test", 80, family=V4, resolver=resolver_of({V4: (0, other)}))
        assert str(info.value) == (
            "[Errno -3] cannot resolve 'h.test' (A):"
            " [Errno -3] Temporary failure in name resolution"
        )

    vrun(main)


# -- 3. staggered_race: an iterable that raises ends the race with its error ----------


class IterationError(Exception):
    pass


def _raising_after(n: int, make: Callable[[int], Callable[[], Awaitable[int]]]) -> Iterator[Any]:
    for i in range(n):
        yield make(i)
    raise IterationError(f"after {n}")


@pytest.mark.parametrize("delay", [None, 0, 0.1])
@pytest.mark.parametrize("items", [0, 1, 2])
@pytest.mark.parametrize("outcome", ["fail", "hang"])
def test_staggered_race_raises_what_the_iterable_raises(
    vrun: Runner[Any], delay: float | None, items: int, outcome: str
) -> None:
    # The lazy next() runs in the caller (first item), in a timer callback (the
    # delay passed) or in an attempt's report (the most recent one failed).
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def make(i: int) -> Callable[[], Awaitable[int]]:
            async def attempt() -> int:
                await asyncio.sleep(0.05)
                if outcome == "fail":
                    raise OSError(f"attempt {i}")
                await loop.create_future()
                return i  # pragma: no cover - never reached

            return attempt

        if delay is None and outcome == "hang" and items > 0:
            # One at a time and the attempt never ends: the iterable is never asked again.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1):
                    await staggered_race(_raising_after(items, make), delay)
            return
        with pytest.raises(IterationError, match=f"after {items}"):
            await staggered_race(_raising_after(items, make), delay)

    vrun(main)


# -- 4. A BaseException from loop.sock_connect ends the race, on the task path --------


@pytest.mark.parametrize(
    "error", [ResolverBug("custom"), KeyboardInterrupt(), SystemExit(2), KeyError("bug")]
)
@pytest.mark.parametrize("which", [0, 1])
def test_any_exception_from_sock_connect_ends_the_race(
    vrun: Runner[Any], error: BaseException, which: int
) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        hosts = [A4, B4]
        net.script(hosts[1 - which], outcome="hang")
        net.script(hosts[which], delay=0.01 if which == 0 else 0.3, outcome=error)
        with pytest.raises(type(error)) as info:
            await start_connection(
                [ai(h) for h in hosts], happy_eyeballs_delay=0.25, socket_factory=net.socket_factory
            )
        assert info.value is error
        assert net.open_sockets == []

    vrun(main)


def test_cancelled_error_raised_by_sock_connect_itself_fails_that_attempt(
    vrun: Runner[Any],
) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, delay=0.01, outcome=asyncio.CancelledError())
        net.script(B4, delay=0.01)
        sock = await start_connection(
            [ai(A4), ai(B4)], happy_eyeballs_delay=0.25, socket_factory=net.socket_factory
        )
        assert sock is net.sockets[1]
        sock.close()
        with pytest.raises(OSError, match=r"connect to 192\.0\.2\.1:80 was cancelled") as info:
            await start_connection([ai(A4)], socket_factory=net.socket_factory)
        (error,) = info.value.__cause__.exceptions  # type: ignore[union-attr]
        assert isinstance(error.__cause__, asyncio.CancelledError)
        assert happydial.failed_addr_infos(info.value) == [ai(A4)]

    vrun(main)


# -- 5. Aggregation always gives the real error -----------------------------------------


class BlockedError(OSError):
    """An error whose __init__ does not take its own args (copy.copy fails on it)."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(errno.EACCES, f"{host} is blocked: {reason}")
        self.host = host
        self.reason = reason


class NoArgsError(RuntimeError):
    def __new__(cls) -> Self:
        return super().__new__(cls)

    def __init__(self) -> None:
        super().__init__("refused by policy")


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize(
    "make", [lambda h: BlockedError(h[4][0], "policy"), lambda _: NoArgsError()]
)
def test_aggregation_never_replaces_the_error(
    vrun: Runner[Any], count: int, make: Callable[[AddrInfoType], Exception]
) -> None:
    async def main() -> None:
        hosts = [A4, A4, A4][:count]  # one error, or several with the same message

        def factory(addr_info: AddrInfoType) -> socket.socket:
            raise make(addr_info)

        with pytest.raises(Exception) as info:
            await start_connection(
                [ai(h, 80 + i) for i, h in enumerate(hosts)], socket_factory=factory
            )
        first = info.value.__cause__.exceptions[0]  # type: ignore[union-attr]
        assert type(info.value) is type(first)
        assert str(info.value) == str(first)
        assert info.value is not first
        assert info.value.__dict__ == first.__dict__
        if isinstance(first, OSError):
            assert info.value.errno == errno.EACCES  # type: ignore[attr-defined]
            assert info.value.host == A4  # type: ignore[attr-defined]
        assert len(happydial.failed_addr_infos(info.value)) == count

    vrun(main)


# -- 6. An immediate connect failure keeps the OS's reason -----------------------------


class _UnreachableSocket(socket.socket):
    def connect_ex(self, address: Any) -> int:  # noqa: ARG002 - socket's signature
        return errno.ENETUNREACH


@pytest.mark.parametrize("code", [errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.ECONNREFUSED])
def test_an_immediate_failure_keeps_the_os_reason(run: Runner[Any], code: int) -> None:
    class Failing(socket.socket):
        def connect_ex(self, address: Any) -> int:  # noqa: ARG002 - socket's signature
            return code

    async def main() -> None:
        with pytest.raises(OSError) as info:
            await start_connection(
                [ai("2001:db8::1")], socket_factory=lambda a: Failing(a[0], a[1], a[2])
            )
        assert info.value.errno == code
        assert info.value.strerror == os.strerror(code)
        assert "[2001:db8::1]:80" in str(info.value)

    run(main)


# -- 7. No race outlives its call, with the cyclic GC off --------------------------------


def _races_alive() -> int:
    return sum(1 for o in gc.get_objects() if type(o).__name__ in ("ConnectRace", "_CoroutineRace"))


@pytest.fixture
def gc_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


class _TraceError(Exception):
    pass


def _path_calls(net: FakeNetwork) -> dict[str, Callable[[], Awaitable[object]]]:
    loop = net.loop
    net.script(A4, delay=0.01)
    net.script(B4, delay=0.01, outcome="refuse")
    net.script(C4, outcome="hang")

    def bad_trace(event: object) -> None:
        raise _TraceError(event)

    async def cancelled() -> object:
        task = loop.create_task(start_connection([ai(C4)], socket_factory=net.socket_factory))
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            return await task
        finally:
            del task  # the frame would hold the task, whose error holds the frame

    async def in_staggered() -> object:
        async def fail() -> None:
            raise OSError("no")

        return await staggered_race([fail, fail], 0.1)

    def factory(addr_info: AddrInfoType) -> socket.socket:
        # Errors made fresh per call, as a real failure is: an error object kept
        # and raised again would carry the latest traceback, and with it a race.
        if addr_info[4][0] == D4:
            raise BlockedError(D4, "policy")
        return net.socket_factory(addr_info)

    async def v4_only(host: str, port: int, family: int) -> list[AddrInfoType]:
        if family == V6:
            raise socket.gaierror(socket.EAI_NODATA, "no AAAA")
        return [ai(B4, port)]

    return {
        "success": lambda: start_connection([ai(A4)], socket_factory=factory),
        "refused": lambda: start_connection([ai(B4)], socket_factory=factory),
        # A real socket, bound for real: 192.0.2.99 is no address of this host.
        "bind error": lambda: start_connection([ai(A4)], local_addr_infos=[ai("192.0.2.99", 0)]),
        "factory error": lambda: start_connection([ai(D4)], socket_factory=factory),
        "trace error": lambda: start_connection([ai(A4)], socket_factory=factory, trace=bad_trace),
        "timeout": lambda: start_connection([ai(C4)], attempt_timeout=0.01, socket_factory=factory),
        "cancelled": cancelled,
        "host name": lambda: connect("h.test", 80, socket_factory=factory, resolver=v4_only),
        "staggered_race": in_staggered,
    }


@pytest.mark.parametrize(
    "path",
    [
        "success",
        "refused",
        "bind error",
        "factory error",
        "trace error",
        "timeout",
        "cancelled",
        "host name",
        "staggered_race",
    ],
)
def test_no_race_outlives_its_call(vrun: Runner[Any], gc_off: None, path: str) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        call = _path_calls(net)[path]
        before = _races_alive()
        for _ in range(50):
            try:
                result = await call()
            except (OSError, _TraceError, asyncio.CancelledError):
                pass
            else:
                if isinstance(result, socket.socket):
                    result.close()
            result = None
        await asyncio.sleep(0)  # callbacks the last call scheduled as it ended
        assert _races_alive() - before == 0
        assert net.open_sockets == []

    vrun(main)


# -- 8. Link-local IPv6 with a %zone in the host string ---------------------------------


def test_a_zone_in_the_host_string_becomes_the_scope_id() -> None:
    from happydial._sockets import connect_address

    lo = socket.if_nametoindex("lo")
    assert connect_address(("fe80::1%lo", 80, 0, 0)) == ("fe80::1", 80, 0, lo)
    assert connect_address(("fe80::1%7", 80, 5, 0)) == ("fe80::1", 80, 5, 7)
    assert connect_address(("fe80::1%lo", 80, 0, lo)) == ("fe80::1", 80, 0, lo)
    assert connect_address(("fe80::1%lo", 80)) == ("fe80::1", 80, 0, lo)
    plain = ("fe80::1", 80, 0, 3)
    assert connect_address(plain) is plain
    with pytest.raises(OSError, match=r"no network interface named 'nope0'") as info:
        connect_address(("fe80::1%nope0", 80, 0, 0))
    assert info.value.errno == errno.ENXIO
    with pytest.raises(OSError, match=r"names interface 7, but its scope id is 3") as info:
        connect_address(("fe80::1%7", 80, 0, 3))
    assert info.value.errno == errno.EINVAL


def test_an_unknown_zone_fails_its_attempt_not_the_call(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, delay=0.01)
        bad = (V6, socket.SOCK_STREAM, 6, "", ("fe80::1%nope0", 80, 0, 0))
        sock = await start_connection(
            [bad, ai(A4)], happy_eyeballs_delay=0.25, socket_factory=net.socket_factory
        )
        assert sock is net.sockets[0]  # the IPv4 attempt won, started at once
        assert net.start_times == {A4: 0.0}
        sock.close()

    vrun(main)


def test_a_zone_on_an_ipv4_address_is_refused(vrun: Runner[Any]) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match=r"addr_infos\[0\]: '192\.0\.2\.1%lo' is not an IP"):
            await start_connection([(V4, socket.SOCK_STREAM, 6, "", ("192.0.2.1%lo", 80))])

    vrun(main)


# -- 9. History measures the winner from its own start -----------------------------------


def test_history_times_the_winner_from_its_own_start(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A4, outcome="hang")
        net.factory_errors[B4] = OSError(errno.EMFILE, "too many open files")
        net.script(C4, delay=0.30)
        net.script(D4, outcome="hang")
        history = happydial.AddressHistory(clock=loop.time)
        sock = await start_connection(
            [ai(h) for h in (A4, B4, C4, D4)],
            happy_eyeballs_delay=0.25,
            socket_factory=net.socket_factory,
            history=history,
        )
        sock.close()
        # C4 started at 0.25 (B4 failed there at once) and connected at 0.55.
        assert net.start_times == {A4: 0.0, C4: 0.25, D4: 0.5}
        assert history.connect_time(ai(C4)[4]) == pytest.approx(0.30)

    vrun(main)


# -- 10. One address, one attempt, whatever its spelling -------------------------------


def test_an_address_in_two_spellings_is_tried_once(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        resolver = resolver_of(
            {
                V6: (0.0, ["2001:db8::1", "2001:0db8:0::1", "::ffff:192.0.2.1", "2001:db8::2"]),
                V4: (0.01, ["192.0.2.1", "192.0.2.2"]),
            }
        )
        events: list[happydial.TraceEvent] = []
        with pytest.raises(OSError):
            await connect(
                "h.test",
                80,
                resolver=resolver,
                socket_factory=net.socket_factory,
                attempt_timeout=1.0,
                trace=events.append,
            )
        started = [e.addr_info for e in events if isinstance(e, happydial.AttemptStarted)]
        # The IPv4-mapped copy becomes the IPv4 address it is, and counts as it.
        assert [a[4] for a in started] == [
            ("2001:db8::1", 80, 0, 0),
            ("192.0.2.1", 80),
            ("2001:db8::2", 80, 0, 0),
            ("192.0.2.2", 80),
        ]
        assert [a[0] for a in started] == [V6, V4, V6, V4]

    vrun(main)


# -- 11. A factory may return any socket-like object ----------------------------------


def test_a_mock_socket_from_the_factory_is_accepted(run: Runner[Any]) -> None:
    # The way aiohappyeyeballs' own suite drives start_connection.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        mock_socket = mock.MagicMock(family=V4, type=socket.SOCK_STREAM, proto=6)
        with mock.patch.object(loop, "sock_connect", mock.AsyncMock()) as sock_connect:
            sock = await start_connection([ai(A4)], socket_factory=lambda _: mock_socket)
        assert sock is mock_socket
        mock_socket.setblocking.assert_called_once_with(False)
        sock_connect.assert_awaited_once_with(mock_socket, (A4, 80))
        mock_socket.close.assert_not_called()

    run(main)


@pytest.mark.parametrize(
    ("made", "missing"),
    [(object(), "setblocking, fileno, close"), (mock.Mock(spec=["close"]), "setblocking, fileno")],
)
def test_a_factory_result_without_socket_methods_is_refused(
    vrun: Runner[Any], made: object, missing: str
) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match=f"socket_factory must return a socket.*no {missing}"):
            await start_connection([ai(A4)], socket_factory=lambda _: made)  # type: ignore[arg-type,return-value]

    vrun(main)


# -- 12. attempt_timeout on the task path: the socket outlives its connect task ---------


def test_a_timed_out_attempt_closes_its_socket_after_its_task(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        plain = net.sock_connect
        task_ended: list[float] = []

        async def slow_to_cancel(sock: socket.socket, address: Any) -> None:
            try:
                await plain(sock, address)
            except asyncio.CancelledError:
                await asyncio.shield(asyncio.sleep(0.5))
                task_ended.append(loop.time())
                raise

        loop.sock_connect = slow_to_cancel  # type: ignore[method-assign]
        net.script(A4, outcome="hang")
        net.script(B4, delay=0.5)
        closed_at: dict[str, float] = {}
        real_factory = net.socket_factory

        def factory(addr_info: AddrInfoType) -> socket.socket:
            sock = real_factory(addr_info)
            original = sock.close

            def close() -> None:
                closed_at.setdefault(addr_info[4][0], loop.time())
                original()

            sock.close = close  # type: ignore[method-assign]
            return sock

        sock = await start_connection(
            [ai(A4), ai(B4)], happy_eyeballs_delay=None, attempt_timeout=1.0, socket_factory=factory
        )
        sock.close()
        # A4 timed out at 1.0 and B4 started then; A4's task took 0.5 s to stop, and
        # its socket was closed only after: on a proactor loop, never under the connect.
        assert task_ended == [pytest.approx(1.5)]
        assert closed_at[A4] == pytest.approx(1.5)
        assert net.start_times == {A4: 0.0, B4: 1.0}
        assert net.open_sockets == []

    vrun(main)


class PickyError(OSError):
    """An error whose __new__ accepts neither its own args nor none."""

    def __new__(cls, host: str, reason: str, extra: object) -> Self:  # noqa: ARG004
        return super().__new__(cls, errno.EPERM, f"{host}: {reason}")

    def __init__(self, host: str, reason: str, extra: object) -> None:
        super().__init__(errno.EPERM, f"{host}: {reason}")
        self.extra = extra


def test_an_error_that_cannot_be_rebuilt_becomes_an_oserror_from_it(vrun: Runner[Any]) -> None:
    async def main() -> None:
        def factory(addr_info: AddrInfoType) -> socket.socket:
            raise PickyError(addr_info[4][0], "no", extra=1)

        with pytest.raises(OSError) as info:
            await start_connection([ai(A4)], socket_factory=factory)
        assert type(info.value) is PermissionError  # OSError(EPERM, ...) picks it
        assert str(info.value) == "[Errno 1] 192.0.2.1: no"
        assert info.value.extra == 1  # type: ignore[attr-defined]
        assert isinstance(info.value.__cause__.exceptions[0], PickyError)  # type: ignore[union-attr]

    vrun(main)


@pytest.mark.parametrize("after_cancel", ["fails", "answers", "exits"])
def test_an_abandoned_lookup_is_nobodys_business(vrun: Runner[Any], after_cancel: str) -> None:
    # Whatever a lookup does once the race is over (fail, answer anyway, raise),
    # nothing reaches the caller or its trace; only SystemExit still stops the program.
    events: list[happydial.TraceEvent] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A4, delay=0.01)

        async def resolver(host: str, port: int, family: int) -> list[AddrInfoType]:
            if family == V4:
                return [ai(A4, port)]
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if after_cancel == "fails":
                    raise socket.gaierror(socket.EAI_AGAIN, "cancelled lookups fail") from None
                if after_cancel == "exits":
                    raise SystemExit(4) from None
            return [ai(A6, port)]

        sock = await connect(
            "h.test", 80, resolver=resolver, socket_factory=net.socket_factory, trace=events.append
        )
        sock.close()
        ended = len(events)
        await asyncio.sleep(0)
        assert len(events) == ended
        assert all(
            not isinstance(e, happydial.ResolutionFinished) or e.family == V4 for e in events
        )

    if after_cancel == "exits":
        with pytest.raises(SystemExit):
            vrun(main)
    else:
        vrun(main)
