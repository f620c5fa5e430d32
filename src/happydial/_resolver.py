"""Name resolution: the ``Resolver`` protocol and the default, thread-pooled resolver.

Every lookup :func:`happydial.connect` makes goes through one of these. The default,
:func:`getaddrinfo_resolver`, runs the C library's ``getaddrinfo`` (one family per
call, RFC 8305 section 3) on a pool of daemon threads that happydial owns:

* not the loop's executor, because ``asyncio.run()`` joins that at exit and a stuck
  AAAA lookup would hold the program for as long as the C call takes;
* not a fresh thread per lookup either: a new thread pays for its start-up and for
  the C library initialising its resolver state again, and thousands of them cost
  memory. The pool starts threads on demand up to a cap, reuses them across calls
  and event loops, and lets each one go after it has been idle for a while.

A lookup whose caller has gone (the race was won, or cancelled) is *abandoned*: its
answer is dropped when it comes, and if it is still queued it never runs. Its thread is
a daemon, so it never delays the program's exit either.

``localhost`` and ``*.localhost`` never reach a resolver's back end: RFC 6761 section
6.3 asks name-resolution libraries to answer them with the loopback address
themselves, and doing so also avoids a real cost: on a host whose ``/etc/hosts`` maps
``localhost`` to ``127.0.0.1`` only, an ``AF_INET6`` lookup falls through to DNS.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ._addresses import AddrInfoType
from ._validate import is_int

__all__ = [
    "Resolver",
    "ResolverPoolSettings",
    "configure_resolver_pool",
    "getaddrinfo_resolver",
]

DEFAULT_MAX_THREADS = 96
"""Enough for 95 slow lookups at once (the grower is one of the threads); more wait.

Slow answers (50 ms each) for 300 names at once, A and AAAA, take 600 lookups: 64
threads need ten rounds, 96 seven, on a machine where the lab's DNS path itself slows
down as queries pile up. Fast lookups (``/etc/hosts``) never get near it: beyond
:data:`EAGER_THREADS`, threads start only when lookups are slow.
"""
DEFAULT_IDLE_TIMEOUT = 10.0
"""Seconds a pool thread waits for work before it ends."""
EAGER_THREADS = 8
"""Threads started as soon as lookups would wait; more only when lookups are slow."""
SLOW = 0.02
"""Seconds without a finished lookup, while others wait, after which the pool grows."""
BUSY = 0.5
"""The share of one core the process used, over the grower's last look, that makes it busy."""
SLOW_WHEN_BUSY = 0.2
""":data:`SLOW` for a busy process: its lookups are more likely waiting for the GIL."""


class Resolver(Protocol):
    """A family-specific lookup: ``await resolver(host, port, family)``.

    It returns the addr_infos of *host* for *family* (``AF_INET6`` or ``AF_INET``),
    with IP-literal sockaddrs and *port* filled in, and raises :class:`OSError`
    (:class:`socket.gaierror` is one) when the name has no such address. Anything
    can sit behind it: aiodns, a zeroconf cache, a dictionary.
    """

    def __call__(self, host: str, port: int, family: int) -> Awaitable[list[AddrInfoType]]:
        """Look *host* up for one address family."""
        ...  # pragma: no cover - a protocol


# ---------------------------------------------------------------------------
# localhost (RFC 6761 section 6.3)
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _loopback(family: int, port: int) -> AddrInfoType:
    """The loopback addr_info of *family* for *port*, one shared tuple per pair.

    Tuples are immutable: 2,000 connections at once to ``localhost:8080`` share two
    entries instead of holding 4,000 of their own.
    """
    if family == socket.AF_INET6:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))


def is_localhost(host: str) -> bool:
    """Whether *host* is ``localhost`` or a name under it (any case, trailing dot allowed)."""
    name = host.removesuffix(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def localhost_addr_infos(host: str, port: int, family: int) -> list[AddrInfoType] | None:
    """The loopback answer for a ``localhost`` name (RFC 6761 s. 6.3), else ``None``.

    ``AF_UNSPEC`` (not a family :func:`happydial.connect` asks for, but a resolver
    may be called directly) gets both, IPv6 first as RFC 6724's default policy orders
    them.
    """
    if not is_localhost(host):
        return None
    if family == socket.AF_UNSPEC:
        return [_loopback(socket.AF_INET6, port), _loopback(socket.AF_INET, port)]
    if family not in (socket.AF_INET6, socket.AF_INET):
        return None  # another family: the back end's error
    return [_loopback(family, port)]


# ---------------------------------------------------------------------------
# The thread pool
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolverPoolSettings:
    """How the default resolver's thread pool is sized.

    Attributes:
        max_threads: The most threads, so the most lookups that run at once; more wait
            in a queue.
        idle_timeout: Seconds a thread waits for work before it ends (0: at once).
    """

    max_threads: int = DEFAULT_MAX_THREADS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT


Delivery = Callable[[], None]
"""What a job returns: the hand-back of its answer, run once its thread is free again."""
Job = Callable[[], Delivery | None]
"""The blocking part of a lookup, run on a pool thread."""


class _Worker:
    """One pool thread's slot: the job handed to it while it waited, and its wake-up.

    ``wake`` is a lock its thread holds while it has no signal (a plain lock is the
    cheapest thing to block on and release from another thread): a hand-over releases
    it, the idle wait acquires it.
    """

    __slots__ = ("job", "wake")

    def __init__(self, job: Job | None) -> None:
        self.job = job
        self.wake = threading.Lock()
        self.wake.acquire()


class _Pool:
    """Daemon threads started on demand up to a cap, each ending after an idle spell.

    Every hand-over happens under one lock. A new job goes to an idle thread (set in
    its mailbox, then woken); else to the queue if a thread is *finishing* (its C call
    returned, it is handing the answer back and will look at the queue next: without
    this, a caller that looks up again as soon as it has its answer, before the thread
    is idle, would start a second thread for nothing); else to a new thread while
    fewer than :data:`EAGER_THREADS` run; else to the queue.

    Beyond the eager few, threads start only when lookups are *slow*: a busy thread
    costs nothing while its lookup waits on the network, but dozens of threads taking
    turns at the GIL to answer fast lookups (``/etc/hosts``) cost CPU for no gain. So
    while lookups wait, a *grower* thread looks every :data:`SLOW` seconds, and if no
    lookup has finished meanwhile, starts a thread for every waiting one, up to the cap
    (which counts the grower). It ends when the queue is empty.

    A thread empties the queue before it goes idle. One that wakes from its idle wait
    with nothing in its mailbox is still on the idle list (nobody could hand it a job
    without taking it off), so it removes itself and ends: no job is ever stranded.
    """

    def __init__(self, settings: ResolverPoolSettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.queue: collections.deque[Job] = collections.deque()
        self.idle: list[_Worker] = []
        self.threads: set[threading.Thread] = set()
        self.finishing = 0
        self.progress = time.monotonic()  # when a lookup last finished
        self.grower: threading.Thread | None = None
        self.started = 0  # workers started over the pool's life (for tests and bench/)

    def submit(self, job: Job) -> None:
        """Run *job* on a pool thread, at once if one is free or may start, else later."""
        new = None
        with self.lock:
            if self.idle:
                worker = self.idle.pop()
                worker.job = job
                worker.wake.release()
            elif self.finishing > len(self.queue):
                self.queue.append(job)
            elif len(self.threads) < min(self.settings.max_threads, EAGER_THREADS):
                new = self._new_worker(job)
            else:
                self.queue.append(job)
                if self.grower is None and len(self.threads) < self.settings.max_threads - 1:
                    new = self.grower = self._new_thread(self._grow, "happydial-resolver-grower")
        if new is not None:
            new.start()  # outside the lock: see _new_thread

    def _new_thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        """A thread counted in the pool, to be started once the lock is released.

        ``Thread.start()`` waits until the new thread runs, which on a loaded machine
        can take milliseconds per thread; under the lock, that would stop every other
        thread from handing back its answer or taking the next job meanwhile.
        """
        thread = threading.Thread(target=target, name=name, daemon=True)
        self.threads.add(thread)
        return thread

    def _new_worker(self, job: Job) -> threading.Thread:
        self.started += 1
        name = f"happydial-resolver-{self.started}"
        return self._new_thread(functools.partial(self._work, _Worker(job)), name)

    def _grow(self) -> None:
        now, cpu = time.monotonic(), time.process_time()
        while True:
            time.sleep(SLOW)
            before, cpu_before = now, cpu
            now, cpu = time.monotonic(), time.process_time()
            # Busy: the process used half a core, or was kept from running (this
            # thread overslept by a whole look): either way, not the network's doing.
            busy = cpu - cpu_before > BUSY * (now - before) or now - before > 2 * SLOW
            if not self.grow_once(now, busy=busy):
                return

    def grow_once(self, now: float, *, busy: bool = False) -> bool:
        """One look of the grower at time *now*; ``False``: the queue is empty, it ended.

        Threads help lookups that wait on the network, not lookups that wait for the
        GIL: when the process was *busy* (its threads used at least half a core since
        the last look, as the event loop does when it sets up thousands of connections
        at once, or the grower itself overslept by a whole look, the machine being
        short of cores), no lookup finishing is likelier to mean the pool's threads
        cannot run, and more threads would only add to the contention. The pool then
        waits :data:`SLOW_WHEN_BUSY` without progress before it grows.
        """
        new = []
        with self.lock:
            if not self.queue:
                self.grower = None
                self.threads.discard(threading.current_thread())
                return False
            if now - self.progress >= (SLOW_WHEN_BUSY if busy else SLOW):  # none finishing
                room = self.settings.max_threads - len(self.threads)
                new = [
                    self._new_worker(self.queue.popleft())
                    for _ in range(min(room, len(self.queue)))
                ]
        for thread in new:
            thread.start()
        return True

    def _work(self, worker: _Worker) -> None:
        job = worker.job
        while job is not None:
            deliver = job()
            if deliver is not None:
                with self.lock:
                    self.finishing += 1
                deliver()
            job = self._next(worker, finishing=deliver is not None)

    def _go_idle(self, worker: _Worker) -> float:
        """Put *worker* on the idle list (under the lock); how long it may wait there."""
        worker.job = None
        self.idle.append(worker)
        return self.settings.idle_timeout

    def _next(self, worker: _Worker, *, finishing: bool) -> Job | None:
        """The thread's next job: queued, or handed over while idle; ``None``: end."""
        with self.lock:
            self.finishing -= finishing
            self.progress = time.monotonic()
            if self.queue:
                return self.queue.popleft()
            if len(self.threads) > self.settings.max_threads:
                self.threads.discard(threading.current_thread())
                return None  # the cap was lowered: end
            timeout = self._go_idle(worker)
        woken = worker.wake.acquire(timeout=timeout)
        with self.lock:
            job = worker.job
            if job is None:  # nobody handed it a job, so it is still on the idle list
                self.idle.remove(worker)
                self.threads.discard(threading.current_thread())
            elif not woken:
                # Handed a job between the timeout and this lock: take the release that
                # came with it, so the wake lock is held again for the next idle wait.
                worker.wake.acquire()
            return job


_pool = _Pool(ResolverPoolSettings())


def _after_fork_in_child() -> None:
    # The child has only the thread that forked: the parent's pool threads do not
    # exist here, and the pool's lock, or a mailbox's, may have been held by one of
    # them. Start afresh; no lookup is in flight in the child.
    global _pool  # noqa: PLW0603 - the process-wide pool is replaced, never mutated from outside
    _pool = _Pool(_pool.settings)
    _mailboxes.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX; Windows cannot fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


_UNCHANGED: Any = object()


def configure_resolver_pool(
    *, max_threads: int = _UNCHANGED, idle_timeout: float = _UNCHANGED
) -> ResolverPoolSettings:
    """Size the thread pool of :func:`happydial.getaddrinfo_resolver`; return the settings.

    The pool is process-wide and starts no thread until the first lookup. Up to 8
    threads start as lookups come; more, up to *max_threads*, only when lookups are
    slow (some wait and none has finished for 20 ms; 200 ms while the process is
    busy, its lookups then more likely waiting for the GIL than for the network). A
    smaller cap lets running lookups finish (threads above it end when they next go idle);
    a new idle timeout applies from each thread's next wait. Called with no
    argument, it only returns the current settings.

    Args:
        max_threads: The most ``getaddrinfo`` calls running at once, at least 1
            (default 96). Each slow lookup holds a thread for its whole duration, so
            this bounds how many slow names resolve in parallel.
        idle_timeout: Seconds a thread waits for another lookup before it ends
            (default 10; 0 ends it as soon as the queue is empty).

    Returns:
        The settings now in force.

    Raises:
        TypeError: An argument is not a number.
        ValueError: *max_threads* is below 1, or *idle_timeout* negative or not finite.
    """
    settings = _pool.settings
    if max_threads is not _UNCHANGED:
        if not is_int(max_threads):
            raise TypeError(f"max_threads must be an int, got {max_threads!r}")
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads!r}")
        settings = ResolverPoolSettings(int(max_threads), settings.idle_timeout)
    if idle_timeout is not _UNCHANGED:
        if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)):
            raise TypeError(f"idle_timeout must be a number of seconds, got {idle_timeout!r}")
        if not math.isfinite(idle_timeout) or idle_timeout < 0:
            raise ValueError(f"idle_timeout must be finite and >= 0, got {idle_timeout!r}")
        settings = ResolverPoolSettings(settings.max_threads, float(idle_timeout))
    with _pool.lock:
        _pool.settings = settings
    return settings


# ---------------------------------------------------------------------------
# The default resolver
# ---------------------------------------------------------------------------


async def getaddrinfo_resolver(host: str, port: int, family: int) -> list[AddrInfoType]:
    """The default resolver: the C library's ``getaddrinfo``, on happydial's thread pool.

    ``localhost`` and names under it are answered with the loopback address of
    *family* without any lookup (RFC 6761 section 6.3). Other names go to
    ``getaddrinfo`` on a pool of daemon threads (see
    :func:`happydial.configure_resolver_pool`), not the loop's executor, so an
    abandoned lookup never delays the caller, the loop's shutdown or the program's
    exit; its answer is dropped when it comes.
    """
    local = localhost_addr_infos(host, port, family)
    if local is not None:
        return local
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[list[AddrInfoType]] = loop.create_future()
    lookup = start_getaddrinfo(host, port, family, loop, functools.partial(_settle, answer))
    try:
        return await answer
    finally:
        lookup.cancel()  # cancelled, say: a queued lookup never runs; a late answer is dropped


def _settle(
    answer: asyncio.Future[list[AddrInfoType]], result: Any, error: Exception | None
) -> None:
    if answer.done():
        return  # cancelled: its task has not yet run the ``finally`` that abandons the lookup
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)


AnswerCallback = Callable[[Any, "Exception | None"], None]
"""Called on the loop with ``getaddrinfo``'s result, or the exception it raised."""


def start_getaddrinfo(
    host: str, port: int, family: int, loop: asyncio.AbstractEventLoop, on_answer: AnswerCallback
) -> PendingLookup:
    """Hand a ``getaddrinfo`` of *host* to the pool; *on_answer* gets its outcome on *loop*.

    No task, no future: the answer is handed to *on_answer* straight from the loop's
    mailbox, in the loop iteration that receives it, in the context of this call (not
    the pool thread's, which the mailbox's wake-up would have). :meth:`PendingLookup.cancel`
    abandons the lookup (it must be called, or the answer comes, on *loop*).
    """
    mailbox = _mailboxes.get(loop)
    if mailbox is None:
        mailbox = _mailboxes[loop] = _Mailbox(loop)
    lookup = PendingLookup(host, port, family, mailbox, on_answer)
    _pool.submit(lookup)
    return lookup


class PendingLookup:
    """One ``getaddrinfo`` handed to the pool, until its answer is delivered or abandoned.

    Its ``on_answer`` is cleared by either (on the loop): an abandoned lookup that is
    still queued never runs, and its thread reads the attribute without the loop's
    help (an attribute read is atomic; a stale read costs one C call whose answer
    is dropped on the loop).
    """

    __slots__ = ("context", "family", "host", "mailbox", "on_answer", "port")

    def __init__(
        self,
        host: str,
        port: int,
        family: int,
        mailbox: _Mailbox | None,
        on_answer: AnswerCallback,
    ) -> None:
        self.host = host
        self.port = port
        self.family = family
        self.mailbox = mailbox
        self.on_answer: AnswerCallback | None = on_answer
        # The caller's: one wake-up delivers the answers of many callers (and runs in
        # a pool thread's context), and the answer starts this caller's attempts, whose
        # hooks (a trace reading a tracing span) must see the caller's variables.
        self.context = contextvars.copy_context()

    def cancel(self) -> None:
        """Abandon the lookup: its answer, if one still comes, is dropped."""
        self.on_answer = None

    def __call__(self) -> Delivery | None:
        """The job, on a pool thread: the C call, and the hand-back of its outcome."""
        if self.on_answer is None:
            return None  # abandoned while queued: do not spend a C call on it
        return _getaddrinfo_job(self.host, self.port, self.family, self.mailbox.post, self)  # type: ignore[union-attr]


def _getaddrinfo_job(
    host: str, port: int, family: int, post: Callable[..., None], *first: object
) -> Delivery:
    """Run the C call; the hand-back ``post(*first, result, error)`` of its outcome."""
    try:
        result = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except Exception as exc:  # noqa: BLE001 - whatever it is, the caller gets it
        # Not only OSError: an invalid name (``"a..b"``) raises UnicodeError.
        return functools.partial(post, *first, None, exc)
    return functools.partial(post, *first, result, None)


class _Mailbox:
    """Answers on their way from pool threads to one event loop, handed over in batches.

    Waking a loop from another thread costs a write to its self-pipe and a turn of the
    loop; when many lookups finish together (a burst of connections), one wake-up
    delivers every answer that arrived before the loop got to it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # the mailboxes are kept by their loop, weakly
        self.lock = threading.Lock()
        self.answers: list[tuple[PendingLookup, Any, Exception | None]] = []

    def post(self, lookup: PendingLookup, result: Any, error: Exception | None) -> None:
        """From a pool thread: queue an answer, and wake the loop if none was queued."""
        with self.lock:
            self.answers.append((lookup, result, error))
            if len(self.answers) > 1:
                return  # the loop is already called to deliver
        loop = self.loop()
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self.deliver)
            except RuntimeError:
                pass  # the loop closed while we were looking up: nobody waits
            else:
                return
        with self.lock:  # the loop is closed, or gone: drop what nobody can receive
            self.answers.clear()

    def deliver(self) -> None:
        """On the loop: hand every queued answer to its caller."""
        with self.lock:
            answers, self.answers = self.answers, []
        for lookup, result, error in answers:
            on_answer = lookup.on_answer
            if on_answer is None:
                continue  # abandoned: the race was won (or cancelled) without this answer
            lookup.on_answer = None
            lookup.context.run(on_answer, result, error)


_mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = (
    weakref.WeakKeyDictionary()
)


# ---------------------------------------------------------------------------
# Without a loop: the blocking API's lookups (happydial.sync)
# ---------------------------------------------------------------------------


def start_threaded_getaddrinfo(
    host: str, port: int, family: int, on_answer: AnswerCallback
) -> ThreadedLookup:
    """Hand a ``getaddrinfo`` of *host* to the pool; *on_answer* runs on the pool thread.

    The loop-free twin of :func:`start_getaddrinfo`, for ``happydial.sync``: no loop
    and no mailbox, so *on_answer* is called on the pool thread that ran the lookup
    (it must be thread-safe: the blocking driver queues the answer and wakes its
    selector through a socket pair). :meth:`ThreadedLookup.cancel` abandons the
    lookup: a queued one never runs, and a late answer is dropped.
    """
    lookup = ThreadedLookup(host, port, family, on_answer)
    _pool.submit(lookup)
    return lookup


class ThreadedLookup(PendingLookup):
    """One ``getaddrinfo`` on the pool whose answer goes to a thread-safe callback."""

    __slots__ = ()

    def __init__(self, host: str, port: int, family: int, on_answer: AnswerCallback) -> None:
        super().__init__(host, port, family, None, on_answer)

    def __call__(self) -> Delivery | None:
        """The job, on a pool thread: the C call, and the hand-back of its outcome."""
        if self.on_answer is None:
            return None  # abandoned while queued: do not spend a C call on it
        return _getaddrinfo_job(self.host, self.port, self.family, self._deliver)

    def _deliver(self, result: Any, error: Exception | None) -> None:
        on_answer = self.on_answer  # one read: cancel() may run meanwhile on the caller's thread
        if on_answer is not None:
            self.on_answer = None
            on_answer(result, error)
