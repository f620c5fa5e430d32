"""The resolvers: the default one's thread pool, localhost, and the optional DNS back ends.

The pool's tests run real threads against a scripted ``socket.getaddrinfo`` whose
lookups block until the test releases them; the back ends' tests run against the
lab's DNS server (``tests/lab/server.py``) served on loopback in a thread of its own,
so no test depends on real DNS.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.name
import dns.resolver
import pycares.errno as ares
import pytest

import happydial
from happydial import (
    AddrInfoType,
    AiodnsResolver,
    DnspythonResolver,
    ResolverPoolSettings,
    _backends,
    _resolver,
    configure_resolver_pool,
    getaddrinfo_resolver,
)

from .conftest import Runner

V6, V4 = socket.AF_INET6, socket.AF_INET
TCP = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
LOOP6 = (V6, *TCP, ("::1", 80, 0, 0))
LOOP4 = (V4, *TCP, ("127.0.0.1", 80))
REPO = Path(__file__).resolve().parent.parent
PATIENCE = 10.0  # how long a test waits for a thread to reach a state before failing


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Block until *condition* holds (a synchronisation, not a timing assertion)."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.001)


async def async_wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.001)


# -- a scripted getaddrinfo and a private pool --------------------------------------------


class FakeGetaddrinfo:
    """``socket.getaddrinfo`` answering ``<anything>.test`` with 192.0.2.1 / 2001:db8::1.

    A host in ``gates`` blocks until its event is set; ``bad..name`` raises UnicodeError
    like the real one; anything else is EAI_NONAME. Every call is recorded.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []  # host, family, thread ident
        self.gates: dict[str, threading.Event] = {}
        self.running = 0
        self.most_running = 0
        self.lock = threading.Lock()

    def gate(self, host: str) -> threading.Event:
        self.gates[host] = threading.Event()
        return self.gates[host]

    def __call__(self, host: str, port: int, family: int, *_: Any) -> list[Any]:
        with self.lock:
            self.calls.append((host, family, threading.get_ident()))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            gate = self.gates.get(host)
            if gate is not None and not gate.wait(PATIENCE):
                raise AssertionError(f"{host} was never released")
            if host == "bad..name":
                raise UnicodeError("label empty or too long")
            if not host.endswith(".test"):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            if family == V6:
                return [(V6, *TCP, ("2001:db8::1", port, 0, 0))]
            return [(V4, *TCP, ("192.0.2.1", port))]
        finally:
            with self.lock:
                self.running -= 1

    def hosts(self) -> list[str]:
        return [call[0] for call in self.calls]

    def start_slow(self, count: int) -> list[asyncio.Future[Any]]:
        """Start *count* lookups of ``slow<i>.test`` that block until :meth:`release`."""
        for i in range(count):
            self.gate(f"slow{i}.test")
        return [
            asyncio.ensure_future(getaddrinfo_resolver(f"slow{i}.test", 80, V4))
            for i in range(count)
        ]

    def release(self) -> None:
        for gate in self.gates.values():
            gate.set()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeGetaddrinfo:
    gai = FakeGetaddrinfo()
    monkeypatch.setattr(socket, "getaddrinfo", gai)
    return gai


def stop_pool(pool: _resolver._Pool) -> None:
    """End every thread of *pool* (none may be busy) and wait for them."""
    with pool.lock:
        pool.settings = ResolverPoolSettings(pool.settings.max_threads, 0.0)
        threads = list(pool.threads)
        for worker in pool.idle:
            worker.wake.release()
    for thread in threads:
        thread.join(PATIENCE)
        assert not thread.is_alive(), thread


@pytest.fixture
def pool() -> Iterator[_resolver._Pool]:
    """A fresh process-wide pool (4 threads, no idle timeout to speak of), ended afterwards."""
    saved = _resolver._pool
    fresh = _resolver._Pool(ResolverPoolSettings(max_threads=4, idle_timeout=60.0))
    _resolver._pool = fresh
    try:
        yield fresh
    finally:
        _resolver._pool = saved
        stop_pool(fresh)


def idle_count(pool: _resolver._Pool) -> int:
    with pool.lock:
        return len(pool.idle)


# -- localhost (RFC 6761 section 6.3) -----------------------------------------------------


LOCAL_NAMES = ["localhost", "LocalHost", "localhost.", "api.localhost", "A.B.LOCALHOST."]
NOT_LOCAL = ["localhost.test", "mylocalhost.test", "localhostx.test", "localhost..test"]


@pytest.mark.parametrize("host", LOCAL_NAMES)
def test_localhost_names(host: str) -> None:
    assert _resolver.is_localhost(host)


@pytest.mark.parametrize("host", NOT_LOCAL)
def test_names_that_are_not_localhost(host: str) -> None:
    assert not _resolver.is_localhost(host)
    assert _resolver.localhost_addr_infos(host, 80, V4) is None


def test_localhost_answer_per_family() -> None:
    assert _resolver.localhost_addr_infos("localhost", 80, V6) == [LOOP6]
    assert _resolver.localhost_addr_infos("localhost", 80, V4) == [LOOP4]
    assert _resolver.localhost_addr_infos("localhost", 80, socket.AF_UNSPEC) == [LOOP6, LOOP4]
    # Another family is the back end's business (and its error).
    assert _resolver.localhost_addr_infos("localhost", 80, socket.AF_UNIX) is None


def builtin_resolvers() -> list[Callable[[], Any]]:
    return [lambda: getaddrinfo_resolver, AiodnsResolver, DnspythonResolver]


@pytest.mark.parametrize("host", LOCAL_NAMES)
@pytest.mark.parametrize("make", builtin_resolvers(), ids=["getaddrinfo", "aiodns", "dnspython"])
def test_builtin_resolvers_answer_localhost_without_a_lookup(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool, make: Any, host: str
) -> None:
    async def main() -> None:
        resolver = make()
        assert await resolver(host, 80, V6) == [LOOP6]
        assert await resolver(host, 80, V4) == [LOOP4]
        if hasattr(resolver, "close"):
            assert len(resolver._channels) == 0, "no channel made: nothing was asked"
            await resolver.close()

    run(main)
    assert fake.calls == []
    assert pool.started == 0


def test_default_resolver_other_families_go_to_getaddrinfo(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    async def main() -> None:
        both = await getaddrinfo_resolver("localhost", 80, socket.AF_UNSPEC)
        assert both == [LOOP6, LOOP4]
        with pytest.raises(socket.gaierror):
            await getaddrinfo_resolver("localhost", 80, socket.AF_UNIX)

    run(main)
    assert fake.hosts() == ["localhost"]


def test_connect_to_localhost_never_looks_up(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        try:
            sock = await happydial.connect("localhost.", port, happy_eyeballs_delay=0.01)
            assert sock.getpeername() == ("127.0.0.1", port)
            sock.close()
        finally:
            listener.close()

    run(main)
    assert fake.calls == []


def test_connect_feeds_pool_answers_per_family(
    run: Runner[Any], monkeypatch: pytest.MonkeyPatch, pool: _resolver._Pool
) -> None:
    # Without a task per family (connect() hands the lookups to the pool itself):
    # an answer without the asked family fails that family; the other one connects.
    asked: list[int] = []

    def getaddrinfo(host: str, port: int, family: int, *_: Any) -> list[Any]:
        asked.append(family)
        return [(V4, *TCP, ("127.0.0.1", port))]  # for AAAA too: a broken C library

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    events: list[str] = []

    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        try:
            sock = await happydial.connect("v4.test", port, resolution_delay=0)
            assert sock.getpeername() == ("127.0.0.1", port)
            sock.close()
            with pytest.raises(socket.gaierror) as info:
                await happydial.connect("v4.test", port, family=V6)
            events.append(str(info.value.strerror))
        finally:
            listener.close()

    run(main)
    assert sorted(asked) == sorted([V6, V4, V6])
    assert events == ["cannot resolve 'v4.test' (AAAA): [Errno -5] no IPv6 address for 'v4.test'"]


_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("_CALLER", default="nobody")


def test_pool_answers_start_attempts_in_their_callers_context(
    run: Runner[Any], monkeypatch: pytest.MonkeyPatch, pool: _resolver._Pool
) -> None:
    # Without a trace, connect() hands its lookups to the pool with a callback (no
    # task), and one wake-up of the loop, from a pool thread, delivers the answers of
    # many callers: each answer must start its caller's attempts in that caller's
    # context, where the caller's plugins (a socket factory reading a tracing span, a
    # delay policy) expect their variables, not in the thread's or another caller's.
    both_asked = threading.Barrier(4, timeout=10)

    def getaddrinfo(host: str, port: int, family: int, *_: Any) -> list[Any]:
        both_asked.wait()  # the four lookups answer together: fewer wake-ups than answers
        if family == V6:
            raise socket.gaierror(socket.EAI_NONAME, "no IPv6 address")
        return [(V4, *TCP, ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    seen: list[tuple[str, str]] = []

    async def one(who: str, port: int) -> None:
        _CALLER.set(who)

        def socket_factory(addr_info: AddrInfoType) -> socket.socket:
            seen.append((who, _CALLER.get()))
            return socket.socket(addr_info[0], addr_info[1], addr_info[2])

        sock = await happydial.connect(f"{who}.test", port, socket_factory=socket_factory)
        sock.close()

    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            await asyncio.gather(one("first", port), one("second", port))

    run(main)
    assert sorted(seen) == [("first", "first"), ("second", "second")]


def test_connect_runs_no_task_per_lookup(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    # The default resolver's lookups are handed to the pool with a callback: while
    # both are running, the only tasks are the caller's.
    gate = fake.gate("held.test")

    async def main() -> None:
        call = asyncio.ensure_future(happydial.connect("held.test", 80))
        await async_wait_until(lambda: len(fake.calls) == 2, "both lookups running")
        assert asyncio.all_tasks() == {call, asyncio.current_task()}
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        gate.set()
        await async_wait_until(lambda: idle_count(pool) == 2, "the abandoned lookups to end")
        await asyncio.sleep(0)  # their answers' delivery runs, and finds nobody waiting

    run(main)
    assert sorted(family for _, family, _ in fake.calls) == sorted([V4, V6])


def test_connect_gets_each_pool_lookups_error(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    async def main() -> None:
        with pytest.raises(socket.gaierror) as info:
            await happydial.connect("nowhere.invalid", 80)
        assert info.value.errno == socket.EAI_NONAME
        assert info.value.strerror == (
            "cannot resolve 'nowhere.invalid' (AAAA and A): [Errno -2] Name or service not known"
        )
        with pytest.raises(UnicodeError, match="label empty"):
            await happydial.connect("bad..name", 80)  # not an OSError: raised as it is

    run(main)
    asked = [(host, family) for host, family, _ in fake.calls]
    assert sorted(asked[:2]) == [("nowhere.invalid", V4), ("nowhere.invalid", V6)]
    assert asked[2][0] == "bad..name"  # its other lookup may have been abandoned unasked
    assert {host for host, _ in asked} == {"nowhere.invalid", "bad..name"}


def test_an_answer_for_a_cancelled_wait_is_not_set() -> None:
    loop = asyncio.new_event_loop()
    try:
        answer: asyncio.Future[Any] = loop.create_future()
        answer.cancel()  # its task was cancelled, and has not yet abandoned the lookup
        _resolver._settle(answer, [LOOP4], None)
        assert answer.cancelled()
    finally:
        loop.close()


# -- the pool -------------------------------------------------------------------------------


def test_sequential_lookups_reuse_one_thread_across_loops(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    async def main() -> None:
        for i in range(5):
            answer = await getaddrinfo_resolver(f"n{i}.test", 443, V6)
            assert answer == [(V6, *TCP, ("2001:db8::1", 443, 0, 0))]

    run(main)
    run(main)  # a second event loop: still the same thread
    assert len({ident for _, _, ident in fake.calls}) == 1
    assert threading.get_ident() not in {ident for _, _, ident in fake.calls}
    assert pool.started == 1
    assert len(pool.threads) == 1
    (thread,) = pool.threads
    assert thread.daemon
    assert thread.name == "happydial-resolver-1"


def test_pool_grows_to_the_cap_then_queues(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    pool.settings = ResolverPoolSettings(max_threads=2, idle_timeout=60.0)
    count = 5

    async def main() -> None:
        lookups = fake.start_slow(count)
        await async_wait_until(lambda: len(fake.calls) == 2, "two lookups running")
        assert len(pool.threads) == 2
        assert len(pool.queue) == 3
        fake.release()
        answers = await asyncio.gather(*lookups)
        assert answers == [[(V4, *TCP, ("192.0.2.1", 80))]] * 5

    run(main)
    assert fake.hosts() == [f"slow{i}.test" for i in range(5)]  # the queue is first in, first out
    assert fake.most_running == 2
    assert pool.started == 2


def test_slow_lookups_grow_the_pool_past_the_eager_threads(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    pool.settings = ResolverPoolSettings(max_threads=12, idle_timeout=60.0)
    count = 14

    async def main() -> None:
        lookups = fake.start_slow(count)
        await async_wait_until(lambda: len(fake.calls) >= _resolver.EAGER_THREADS, "eager")
        # None finishes: after SLOW seconds the grower starts threads for the waiting
        # lookups, up to the cap, which counts the grower itself.
        await async_wait_until(lambda: len(fake.calls) == 11, "the grower")
        assert pool.started == 11
        assert len(pool.queue) == 3
        assert pool.grower is not None
        assert pool.grower.name == "happydial-resolver-grower"
        fake.release()
        await asyncio.gather(*lookups)

    run(main)
    assert fake.most_running == 11
    wait_until(lambda: pool.grower is None, "the grower to end with the queue empty")


def test_the_grower_starts_threads_only_when_nothing_finishes(pool: _resolver._Pool) -> None:
    pool.settings = ResolverPoolSettings(max_threads=10, idle_timeout=60.0)
    ran = threading.Semaphore(0)
    go = threading.Event()

    def job() -> None:  # holds its thread until the test has looked at the queue
        ran.release()
        go.wait(PATIENCE)

    pool.queue.extend([job] * 4)
    assert pool.grow_once(pool.progress + _resolver.SLOW / 2) is True  # recent progress
    assert pool.started == 0
    assert len(pool.queue) == 4
    busy = {threading.Thread() for _ in range(7)}  # stand-ins: 7 running, 3 places left
    pool.threads |= busy
    try:
        # A busy process (its lookups may be waiting for the GIL) waits longer.
        assert pool.grow_once(pool.progress + 2 * _resolver.SLOW, busy=True) is True
        assert pool.started == 0
        assert pool.grow_once(pool.progress + 2 * _resolver.SLOW) is True
        assert pool.started == 3
        assert len(pool.queue) == 1
        for _ in range(3):
            assert ran.acquire(timeout=PATIENCE)
        assert len(pool.queue) == 1
        pool.queue.clear()
    finally:
        go.set()
        pool.threads -= busy
    pool.grower = threading.current_thread()
    assert pool.grow_once(pool.progress) is False  # the queue is empty: the grower ends
    assert pool.grower is None


def test_no_grower_while_one_runs_or_at_the_cap(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    pool.settings = ResolverPoolSettings(max_threads=_resolver.EAGER_THREADS + 1, idle_timeout=60)
    count = _resolver.EAGER_THREADS + 2

    async def main() -> None:
        lookups = fake.start_slow(count)
        await async_wait_until(lambda: len(fake.calls) == _resolver.EAGER_THREADS, "eager")
        # One place left under the cap: a grower would take it and have none to give.
        assert pool.grower is None
        assert len(pool.queue) == 2
        fake.release()
        await asyncio.gather(*lookups)

    run(main)
    assert pool.started == _resolver.EAGER_THREADS


def test_an_idle_thread_takes_the_next_lookup(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    async def main() -> None:
        await getaddrinfo_resolver("one.test", 80, V4)
        await async_wait_until(lambda: idle_count(pool) == 1, "the thread going idle")
        await getaddrinfo_resolver("two.test", 80, V4)

    run(main)
    assert pool.started == 1
    assert fake.calls[0][2] == fake.calls[1][2]


def test_idle_threads_end_after_the_idle_timeout(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    configure_resolver_pool(idle_timeout=0)

    async def main() -> None:
        await asyncio.gather(*(getaddrinfo_resolver(f"n{i}.test", 80, V4) for i in range(3)))

    run(main)
    wait_until(lambda: not pool.threads, "idle threads to end")
    assert pool.idle == []
    assert not any(t.name.startswith("happydial-resolver") for t in threading.enumerate())
    run(main)  # the pool starts threads again on demand
    assert pool.started > 1


def test_lowering_the_cap_ends_the_extra_threads(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    count = 3

    async def main() -> None:
        lookups = fake.start_slow(count)
        await async_wait_until(lambda: len(fake.calls) == 3, "three lookups running")
        configure_resolver_pool(max_threads=1)
        fake.release()
        await asyncio.gather(*lookups)

    run(main)
    assert len({ident for _, _, ident in fake.calls}) == 3
    wait_until(lambda: len(pool.threads) == 1 and idle_count(pool) == 1, "two threads to end")


def test_a_queued_lookup_abandoned_before_it_runs_is_skipped(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    pool.settings = ResolverPoolSettings(max_threads=1, idle_timeout=60.0)
    gate = fake.gate("busy.test")

    async def main() -> None:
        busy = asyncio.ensure_future(getaddrinfo_resolver("busy.test", 80, V4))
        await async_wait_until(lambda: len(fake.calls) == 1, "the first lookup running")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(getaddrinfo_resolver("queued.test", 80, V4), 0.001)
        assert len(pool.queue) == 1
        gate.set()
        await busy
        await async_wait_until(lambda: idle_count(pool) == 1, "the queue drained")

    run(main)
    assert fake.hosts() == ["busy.test"]


def test_a_late_answer_for_an_abandoned_lookup_is_dropped(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    gate = fake.gate("late.test")

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(getaddrinfo_resolver("late.test", 80, V4), 0.001)
        gate.set()
        await async_wait_until(lambda: idle_count(pool) == 1, "the lookup to end")
        await asyncio.sleep(0)  # the delivery callback runs, and finds nobody waiting

    run(main)  # fails if the late answer left a callback or an exception behind
    assert fake.hosts() == ["late.test"]


def test_an_answer_after_the_loop_closed_is_dropped(
    fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    gate = fake.gate("late.test")

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(getaddrinfo_resolver("late.test", 80, V4), 0.001)

    asyncio.run(main())
    gate.set()
    wait_until(lambda: idle_count(pool) == 1, "the thread to deliver and go idle")
    (thread,) = pool.threads
    assert thread.is_alive(), "the loop's RuntimeError did not kill the thread"


def test_a_job_handed_over_just_after_the_idle_timeout_is_taken(pool: _resolver._Pool) -> None:
    def job() -> None:
        return None

    class Racing:
        """A wake lock whose wait times out just as a job is handed over."""

        def __init__(self) -> None:
            self.released = 0
            self.acquired: list[float] = []

        def acquire(self, timeout: float = -1) -> bool:
            self.acquired.append(timeout)
            if timeout != -1:
                pool.submit(job)  # the hand-over, after the wait gave up
                return False
            return self.released > 0

        def release(self) -> None:
            self.released += 1

    worker = _resolver._Worker(None)
    racing = Racing()
    worker.wake = racing  # type: ignore[assignment]
    pool.threads.add(threading.current_thread())  # this thread plays the pool thread
    try:
        assert pool._next(worker, finishing=False) is job
    finally:
        pool.threads.discard(threading.current_thread())
    assert racing.acquired == [60.0, -1]  # the late release was taken
    assert racing.released == 1
    assert pool.idle == []


def test_answers_arriving_together_wake_the_loop_once() -> None:
    loop = asyncio.new_event_loop()
    got: list[tuple[str, object, object]] = []

    def pending(name: str) -> _resolver.PendingLookup:
        def on_answer(result: object, error: Exception | None) -> None:
            got.append((name, result, error))

        return _resolver.PendingLookup(f"{name}.test", 80, V4, mailbox, on_answer)

    try:
        mailbox = _resolver._Mailbox(loop)
        first, second, dropped = pending("first"), pending("second"), pending("dropped")
        dropped.cancel()
        error = socket.gaierror(socket.EAI_NONAME, "no")
        mailbox.post(first, [LOOP4], None)
        mailbox.post(second, None, error)
        mailbox.post(dropped, [LOOP6], None)
        assert len(loop._ready) == 1  # type: ignore[attr-defined]
        loop.run_until_complete(asyncio.sleep(0))
        assert got == [("first", [LOOP4], None), ("second", None, error)]
        assert first.on_answer is None, "delivered once, then forgotten"
        assert mailbox.answers == []
    finally:
        loop.close()
    mailbox.post(pending("late"), [LOOP4], None)  # the loop is closed: dropped, nothing kept
    assert mailbox.answers == []
    del loop
    gc.collect()
    assert mailbox.loop() is None
    mailbox.post(pending("later"), [LOOP4], None)  # the loop is gone: dropped too
    assert mailbox.answers == []
    assert [name for name, _, _ in got] == ["first", "second"]


def test_errors_of_any_type_reach_the_caller(
    run: Runner[Any], fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    async def main() -> None:
        with pytest.raises(socket.gaierror) as info:
            await getaddrinfo_resolver("nowhere.invalid", 80, V4)
        assert info.value.errno == socket.EAI_NONAME
        with pytest.raises(UnicodeError, match="label empty"):
            await getaddrinfo_resolver("bad..name", 80, V4)
        assert await getaddrinfo_resolver("after.test", 80, V4)

    run(main)
    assert pool.started == 1, "the thread survived both errors"


def test_configure_resolver_pool_applies_and_reports(pool: _resolver._Pool) -> None:
    assert configure_resolver_pool() == ResolverPoolSettings(4, 60.0)
    assert configure_resolver_pool(max_threads=9) == ResolverPoolSettings(9, 60.0)
    assert configure_resolver_pool(idle_timeout=2) == ResolverPoolSettings(9, 2.0)
    assert pool.settings == ResolverPoolSettings(9, 2.0)
    assert ResolverPoolSettings() == ResolverPoolSettings(96, 10.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_threads": 2.0}, TypeError, "max_threads must be an int, got 2.0"),
        ({"max_threads": True}, TypeError, "max_threads must be an int, got True"),
        ({"max_threads": 0}, ValueError, "max_threads must be at least 1, got 0"),
        ({"idle_timeout": "1"}, TypeError, "idle_timeout must be a number of seconds, got '1'"),
        ({"idle_timeout": False}, TypeError, "idle_timeout must be a number of seconds"),
        ({"idle_timeout": -1}, ValueError, r"idle_timeout must be finite and >= 0, got -1"),
        ({"idle_timeout": float("inf")}, ValueError, "idle_timeout must be finite"),
        ({"idle_timeout": float("nan")}, ValueError, "idle_timeout must be finite"),
    ],
)
def test_configure_resolver_pool_rejects_bad_values(
    pool: _resolver._Pool, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        configure_resolver_pool(**kwargs)
    assert pool.settings == ResolverPoolSettings(4, 60.0)


def test_after_fork_the_child_gets_a_fresh_pool_with_the_same_settings(
    fake: FakeGetaddrinfo, pool: _resolver._Pool
) -> None:
    async def main() -> None:
        await getaddrinfo_resolver("warm.test", 80, V4)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    assert loop in _resolver._mailboxes
    _resolver._after_fork_in_child()  # what os.register_at_fork runs in a child
    assert loop not in _resolver._mailboxes
    loop.close()
    child_pool = _resolver._pool
    try:
        assert child_pool is not pool
        assert child_pool.settings == pool.settings
        assert child_pool.threads == set()
        assert child_pool.started == 0
    finally:
        _resolver._pool = pool


def run_script(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(  # noqa: S603 - this interpreter, a script written here
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


STUCK_GETADDRINFO = """
    import asyncio, socket, threading, time, warnings
    import happydial
    from happydial import _resolver

    real = socket.getaddrinfo
    def getaddrinfo(host, port, family=0, *args):
        if host == "stuck.test":
            threading.Event().wait()  # a lookup that never returns
        return real("127.0.0.1" if host == "v4.test" else host, port, family, *args)
    socket.getaddrinfo = getaddrinfo
"""


def test_a_stuck_lookup_never_delays_asyncio_run_or_the_exit() -> None:
    code = (
        STUCK_GETADDRINFO
        + """
    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        # connect: the AAAA lookup is stuck; the A answer wins after the resolution delay.
        async def resolver(host, port, family):
            name = "stuck.test" if family == socket.AF_INET6 else "v4.test"
            return await happydial.getaddrinfo_resolver(name, port, family)
        sock = await happydial.connect("x.test", port, resolver=resolver)
        print("connected", sock.getpeername()[0], flush=True)
        sock.close()
        listener.close()
        # a lookup abandoned by its caller
        try:
            await asyncio.wait_for(happydial.getaddrinfo_resolver("stuck.test", 80, 2), 0.05)
        except TimeoutError:
            print("abandoned", flush=True)

    started = time.monotonic()
    asyncio.run(main())
    print("returned", len(_resolver._pool.threads), flush=True)
    """
    )
    result = run_script(code)  # a lookup holding the exit would hit the timeout
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == ["connected 127.0.0.1", "abandoned", "returned 2", ""]


def test_fork_child_starts_its_own_threads() -> None:
    code = """
    import asyncio, os, socket, threading, warnings
    from happydial import _resolver, configure_resolver_pool, getaddrinfo_resolver

    configure_resolver_pool(max_threads=5, idle_timeout=60)
    real = socket.getaddrinfo
    socket.getaddrinfo = lambda host, *args: real("127.0.0.1", *args)

    async def lookup():
        return (await getaddrinfo_resolver("x.test", 80, socket.AF_INET))[0][4]

    print("parent", asyncio.run(lookup()), len(_resolver._pool.threads), flush=True)
    warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: on purpose
    pid = os.fork()
    if pid == 0:
        pool = _resolver._pool
        before = (len(pool.threads), pool.settings.max_threads)
        answer = asyncio.run(lookup())  # would hang on the parent's pool: its thread is gone
        print("child", before, answer, len(pool.threads), flush=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("status", status, asyncio.run(lookup()), flush=True)
    """
    result = run_script(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == [
        "parent ('127.0.0.1', 80) 1",
        "child (0, 5) ('127.0.0.1', 80) 1",
        "status 0 ('127.0.0.1', 80)",
        "",
    ]


# -- the optional back ends -----------------------------------------------------------------


class DnsServer:
    """The lab's DNS server (``tests/lab/server.py``) on loopback, in a thread of its own."""

    def __init__(self) -> None:
        from .lab.server import DnsProtocol, Server

        self.server = Server()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            transport, _ = self.loop.run_until_complete(
                self.loop.create_datagram_endpoint(
                    lambda: DnsProtocol(self.server), local_addr=("127.0.0.1", 0)
                )
            )
            self.port = transport.get_extra_info("sockname")[1]
            ready.set()
            self.loop.run_forever()
            transport.close()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

        self.thread = threading.Thread(target=serve, name="test-dns", daemon=True)
        self.thread.start()
        assert ready.wait(PATIENCE)

    def zone(self, names: dict[str, dict[str, dict[str, Any]]]) -> None:
        for name, records in names.items():
            self.server.zone[name.lower() + "."] = records

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(PATIENCE)


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    server.zone(
        {
            "dual.test": {
                "AAAA": {"addresses": ["2001:db8::1", "2001:db8::2"]},
                "A": {"addresses": ["192.0.2.1"]},
            },
            "v4only.test": {"A": {"addresses": ["192.0.2.4"]}},
            "servfail.test": {"A": {"addresses": [], "rcode": "SERVFAIL"}},
            "refused.test": {"A": {"addresses": [], "rcode": "REFUSED"}},
            "slow.test": {"A": {"addresses": ["192.0.2.9"], "delay": 5.0}},
            "hosts.test": {"A": {"addresses": ["192.0.2.77"]}, "AAAA": {"addresses": []}},
        }
    )
    try:
        yield server
    finally:
        server.close()


def make_aiodns(server: DnsServer) -> AiodnsResolver:
    return AiodnsResolver(nameservers=[f"127.0.0.1:{server.port}"], timeout=0.2, tries=1)


def make_dnspython(server: DnsServer, hosts_file: Path | None = None) -> DnspythonResolver:
    stub = dns.asyncresolver.Resolver(configure=False)
    stub.nameservers = ["127.0.0.1"]
    stub.port = server.port
    stub.lifetime = 0.3
    return DnspythonResolver(resolver=stub, hosts_file=hosts_file)


BACKENDS: dict[str, Callable[[DnsServer], AiodnsResolver | DnspythonResolver]] = {
    "aiodns": make_aiodns,
    "dnspython": make_dnspython,
}
EAI_NODATA = socket.EAI_NODATA


async def closing(resolver: Any) -> None:
    if isinstance(resolver, AiodnsResolver):
        await resolver.close()
    else:
        await asyncio.sleep(0)  # dnspython's closed UDP transport says connection_lost


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_backends_answer_from_dns(run: Runner[Any], dns_server: DnsServer, backend: str) -> None:
    async def main() -> None:
        resolver = BACKENDS[backend](dns_server)
        try:
            # c-ares orders addresses itself (RFC 6724 sorting): compare as sets.
            assert sorted(await resolver("dual.test", 443, V6)) == [
                (V6, *TCP, ("2001:db8::1", 443, 0, 0)),
                (V6, *TCP, ("2001:db8::2", 443, 0, 0)),
            ]
            assert await resolver("DUAL.test.", 443, V4) == [(V4, *TCP, ("192.0.2.1", 443))]
        finally:
            await closing(resolver)

    run(main)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize(
    ("host", "family", "code"),
    [
        ("nowhere.test", V4, socket.EAI_NONAME),  # NXDOMAIN
        ("v4only.test", V6, EAI_NODATA),  # the name exists, without AAAA
        ("servfail.test", V4, socket.EAI_AGAIN),
        ("refused.test", V4, socket.EAI_AGAIN),
        ("slow.test", V4, socket.EAI_AGAIN),  # timed out
    ],
)
def test_backend_errors_are_gaierrors_with_getaddrinfo_codes(
    dns_server: DnsServer, backend: str, host: str, family: int, code: int
) -> None:
    async def main() -> None:
        resolver = BACKENDS[backend](dns_server)
        try:
            with pytest.raises(socket.gaierror) as info:
                await resolver(host, 80, family)
        finally:
            await closing(resolver)
        assert info.value.errno == code
        assert f"{host!r} ({'c-ares' if backend == 'aiodns' else 'dnspython'}: " in str(info.value)
        assert info.value.__cause__ is not None

    asyncio.run(main())


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_backends_take_only_the_two_families(backend: str, dns_server: DnsServer) -> None:
    async def main() -> None:
        resolver = BACKENDS[backend](dns_server)
        try:
            with pytest.raises(
                ValueError,
                match=re.escape(
                    "family must be AF_INET6 or AF_INET, got <AddressFamily.AF_UNSPEC: 0>"
                ),
            ):
                await resolver("dual.test", 80, socket.AF_UNSPEC)
        finally:
            await closing(resolver)

    asyncio.run(main())


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_connect_by_name_with_a_backend(
    run: Runner[Any], dns_server: DnsServer, backend: str
) -> None:
    dns_server.zone({"loop.test": {"A": {"addresses": ["127.0.0.1"]}, "AAAA": {"addresses": []}}})

    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        resolver = BACKENDS[backend](dns_server)
        try:
            sock = await happydial.connect("loop.test", port, resolver=resolver)
            assert sock.getpeername() == ("127.0.0.1", port)
            sock.close()
        finally:
            listener.close()
            await closing(resolver)

    run(main)


def test_aiodns_keeps_one_channel_per_loop_and_closes_them(dns_server: DnsServer) -> None:
    resolver = make_aiodns(dns_server)

    async def lookup() -> Any:
        await resolver("dual.test", 80, V4)
        return resolver._channels[asyncio.get_running_loop()]

    async def main() -> None:
        first = await lookup()
        assert await lookup() is first
        assert len(resolver._channels) == 1

    asyncio.run(main())
    asyncio.run(main())  # the first loop's channel was closed when the second's was made

    async def close() -> None:
        async with resolver:
            pass
        with pytest.raises(RuntimeError, match="this AiodnsResolver is closed"):
            await resolver("dual.test", 80, V4)

    asyncio.run(close())
    assert len(resolver._channels) == 0


def test_aiodns_options_reach_the_channel() -> None:
    resolver = AiodnsResolver(nameservers=["192.0.2.53"], timeout=1.5, tries=2, rotate=True)
    assert resolver._options == {
        "rotate": True,
        "nameservers": ["192.0.2.53"],
        "timeout": 1.5,
        "tries": 2,
    }
    assert AiodnsResolver()._options == {}


def test_dnspython_reads_the_hosts_file_first(
    run: Runner[Any], dns_server: DnsServer, tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.5 hosts.test\n", encoding="utf-8")

    async def main() -> None:
        resolver = make_dnspython(dns_server, hosts)
        assert await resolver("Hosts.Test.", 80, V4) == [(V4, *TCP, ("192.0.2.5", 80))]
        # Known to the file for IPv4 only: IPv6 goes to DNS, as glibc's "files dns" does.
        with pytest.raises(socket.gaierror) as info:
            await resolver("hosts.test", 80, V6)
        assert info.value.errno == EAI_NODATA
        hosts.write_text("2001:db8::5 hosts.test\n", encoding="utf-8")  # reread on change
        assert await resolver("hosts.test", 80, V6) == [(V6, *TCP, ("2001:db8::5", 80, 0, 0))]
        assert await resolver("hosts.test", 80, V4) == [(V4, *TCP, ("192.0.2.77", 80))]
        hosts.unlink()  # no file: DNS only
        assert await resolver("hosts.test", 80, V4) == [(V4, *TCP, ("192.0.2.77", 80))]
        no_file = make_dnspython(dns_server, None)
        assert no_file.hosts is None
        assert await no_file("hosts.test", 80, V4) == [(V4, *TCP, ("192.0.2.77", 80))]
        await closing(no_file)

    run(main)


def test_hosts_file_parsing() -> None:
    text = textwrap.dedent(
        """\
        # comment line
        127.0.0.1   localhost
        192.0.2.1   Web.Example  web   # trailing comment
        2001:db8::1 web.example.
        192.0.2.1   web.example
        192.0.2.2   web.example
        not-an-address  broken.example
        192.0.2.3
        fe80::1%lo  linklocal.example
        """
    )
    names = _backends.parse_hosts(text)
    assert {name: [str(a) for a in addresses] for name, addresses in names.items()} == {
        "localhost": ["127.0.0.1"],
        "web.example": ["192.0.2.1", "2001:db8::1", "192.0.2.2"],
        "web": ["192.0.2.1"],
        "linklocal.example": ["fe80::1%lo"],
    }


def test_hosts_file_lookup_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("192.0.2.1 a.example\n2001:db8::1 a.example\n", encoding="utf-8")
    hosts = _backends.HostsFile(path)
    assert hosts.lookup("a.example", V4) == ["192.0.2.1"]
    assert hosts.lookup("A.EXAMPLE.", V6) == ["2001:db8::1"]
    assert hosts.lookup("b.example", V4) is None
    assert _backends.HostsFile(tmp_path).lookup("a.example", V4) is None  # a directory


def test_missing_optional_dependencies_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "aiodns", None)
    monkeypatch.setitem(sys.modules, "dns.asyncresolver", None)
    with pytest.raises(ImportError, match=r"pip install 'happydial\[aiodns\]'"):
        AiodnsResolver()
    with pytest.raises(ImportError, match=r"pip install 'happydial\[dnspython\]'"):
        DnspythonResolver()


def test_importing_happydial_imports_no_optional_dependency() -> None:
    result = run_script(
        """
        import sys, happydial
        print(sorted(m for m in ("aiodns", "pycares", "dns") if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (ares.ARES_ENOTFOUND, socket.EAI_NONAME),
        (ares.ARES_EBADNAME, socket.EAI_NONAME),
        (ares.ARES_ENODATA, EAI_NODATA),
        (ares.ARES_ETIMEOUT, socket.EAI_AGAIN),
        (ares.ARES_ESERVFAIL, socket.EAI_AGAIN),
        (ares.ARES_EREFUSED, socket.EAI_AGAIN),
        (ares.ARES_ECONNREFUSED, socket.EAI_AGAIN),
        (ares.ARES_ECANCELLED, socket.EAI_AGAIN),
        (ares.ARES_EDESTRUCTION, socket.EAI_AGAIN),
        (ares.ARES_ENOMEM, socket.EAI_MEMORY),
        (ares.ARES_EFORMERR, socket.EAI_FAIL),
        (ares.ARES_EBADRESP, socket.EAI_FAIL),
        (ares.ARES_ENOTIMP, socket.EAI_FAIL),
    ],
)
def test_ares_status_to_getaddrinfo_code(status: int, code: int) -> None:
    assert _backends.ares_error_code(status) == code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (dns.resolver.NXDOMAIN, socket.EAI_NONAME),
        (dns.name.NameTooLong, socket.EAI_NONAME),
        (dns.name.LabelTooLong, socket.EAI_NONAME),
        (dns.name.EmptyLabel, socket.EAI_NONAME),
        (dns.resolver.NoAnswer, EAI_NODATA),
        (dns.resolver.LifetimeTimeout, socket.EAI_AGAIN),
        (dns.resolver.NoNameservers, socket.EAI_AGAIN),
        (dns.resolver.YXDOMAIN, socket.EAI_FAIL),
        (dns.resolver.NoRootSOA, socket.EAI_FAIL),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else str(value),
)
def test_dnspython_error_to_getaddrinfo_code(error: type[Exception], code: int) -> None:
    assert _backends.dnspython_error_code(error()) == code


def test_aiodns_error_without_arguments_is_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    import aiodns

    class Channel:
        def getaddrinfo(self, *_: Any, **__: Any) -> Any:
            raise aiodns.error.DNSError

    async def main() -> None:
        resolver = AiodnsResolver()
        resolver._channels[asyncio.get_running_loop()] = Channel()  # type: ignore[assignment]
        with pytest.raises(socket.gaierror, match=r"c-ares: DNSError\(\)") as info:
            await resolver("x.test", 80, V4)
        assert info.value.errno == socket.EAI_FAIL
        resolver._channels.clear()

    asyncio.run(main())


def test_a_lookup_waits_for_a_finishing_thread_rather_than_start_another() -> None:
    # A thread whose C call returned is handing its answer back and looks at the
    # queue next: a lookup submitted meanwhile waits for it (no second thread).
    pool = happydial._resolver._Pool(happydial.ResolverPoolSettings())
    pool.finishing = 1

    def job() -> None:
        return None

    pool.submit(job)
    assert list(pool.queue) == [job]
    assert pool.threads == set()
    assert pool.started == 0
