"""The blocking driver of the schedule: a ``selectors`` loop in the calling thread.

:class:`BlockingRace` runs the same :class:`~happydial._schedule.Schedule` as the
asyncio driver (``_driver.LoopRace``): the rules of RFC 8305 section 5 live there
once, and a change to them changes both drivers. What this module adds is the I/O
of one race in the caller's own thread, with no event loop and no helper thread
per attempt:

* each attempt is a non-blocking ``connect_ex`` whose socket is registered for
  ``EVENT_WRITE`` on the race's own selector; when it becomes writable,
  ``SO_ERROR`` says whether the handshake succeeded (as asyncio's ``sock_connect``
  does);
* the one wait of the race is ``selector.select(timeout)``, where *timeout* is the
  earliest of the schedule's ``next_at``, the attempts' timeouts, the overall
  deadline and the resolution delay of the host-name layer;
* lookups (:class:`Lookups`) run on the resolver's thread pool (``_resolver``), and
  their answers wake the selector through a socket pair.

Both the clock and the selector are injectable (``clock``, ``new_selector``), so
the scenario tests run a race on a virtual clock with scripted sockets.

Ownership: every socket an attempt creates is recorded in ``BlockingRace.sockets``
at once; :meth:`BlockingRace.connect` closes every one but the winner on every path,
``KeyboardInterrupt`` raised anywhere in the race (a signal handler, a trace
callable) included.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeAlias, TypeVar

from . import _trace
from ._addresses import AddrInfoType, SocketFactoryType
from ._delays import DelayPolicy
from ._driver import abort_error
from ._history import AddressHistory
from ._racer import ConnectRace, plan_delay, race_failure
from ._resolver import ThreadedLookup, localhost_addr_infos, start_threaded_getaddrinfo
from ._schedule import DONE, DROP, FAILED, FINISHED, IGNORED, TIMED_OUT, Schedule
from ._selection import merge_answers, ranks_below_ipv4
from ._sockets import _immediate_error, connect_address, make_socket
from ._trace import TraceType

__all__ = ["BlockingRace", "Lookups"]

Clock = Callable[[], float]
NewSelector = Callable[[], selectors.BaseSelector]

_IN_PROGRESS = frozenset((errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN))
# Timers due within this much of now run now, as asyncio's loop does with its
# clock_resolution: a wait computed as ``at - now`` must not leave a timer a
# rounding error short of its time (and spin on zero-length waits).
_RESOLUTION = time.get_clock_info("monotonic").resolution
_WAKE = object()  # the selector data of the lookups' wake-up socket


# Few descriptors per race: poll() needs no descriptor of its own (epoll does) and no
# system call to register one; select() where there is no poll (Windows).
_DEFAULT_SELECTOR: NewSelector = getattr(selectors, "PollSelector", selectors.SelectSelector)


def _is_failure(error: BaseException) -> bool:
    """The failure policy of the asyncio racer (``_racer.FAILURES``), without asyncio."""
    return isinstance(error, (OSError, RuntimeError))


def _close_quietly(sock: Any) -> None:
    # Not contextlib.suppress: its __enter__ is a call a signal handler could
    # interrupt, between the race's decision to close and the close.
    try:  # noqa: SIM105 - see above
        sock.close()
    except OSError:  # a failing close must never replace the result
        pass


_T = TypeVar("_T")
_Hook: TypeAlias = Callable[["BlockingRace", _T], None]
_DelayPolicy: TypeAlias = Callable[["BlockingRace", AddrInfoType, int], float]
_FailureHook: TypeAlias = Callable[["BlockingRace", int, BaseException], None]


class _ClockOnly:
    """The one part of a loop the racer's hooks use: ``time()``."""

    __slots__ = ("time",)

    def __init__(self, clock: Clock) -> None:
        self.time = clock


class BlockingRace:
    """A race of TCP connects over addr_infos, driven in the calling thread.

    Args:
        delay: Seconds between attempt starts, or a delay policy; ``None``: one at a time.
        local_addr_infos: Local addresses to bind each attempt to, by family.
        socket_factory: Makes each attempt's socket from its addr_info.
        attempt_timeout: Seconds after which a pending attempt fails.
        trace: Called with each trace event.
        history: An address history to record outcomes in (and to pace by).
        max_in_flight: At most this many attempts pending at once.
        timeout: An overall deadline for the race, from now.
        clock: Monotonic seconds (``time.monotonic``; a virtual clock in tests).
        new_selector: Makes the race's selector (``selectors.PollSelector``).
    """

    # Slots: a race is made per connection, and every attribute is set in __init__.
    __slots__ = (
        "attempt_timeout",
        "clock",
        "deadline",
        "delay",
        "errors",
        "finished",
        "history",
        "local_addr_infos",
        "lookups",
        "loop",
        "may_block",
        "new_selector",
        "policy",
        "schedule",
        "selector",
        "socket_factory",
        "sockets",
        "start_times",
        "started",
        "target",
        "timeout",
        "trace",
        "watching",
    )

    def __init__(
        self,
        delay: float | DelayPolicy | None,
        *,
        local_addr_infos: list[AddrInfoType] | None = None,
        socket_factory: SocketFactoryType | None = None,
        attempt_timeout: float | None = None,
        trace: TraceType | None = None,
        history: AddressHistory | None = None,
        max_in_flight: int | None = None,
        timeout: float | None = None,
        clock: Clock = time.monotonic,
        new_selector: NewSelector = _DEFAULT_SELECTOR,
    ) -> None:
        policy, delay, delay_after = plan_delay(self, delay, history)  # type: ignore[arg-type]
        self.schedule: Schedule[AddrInfoType] = Schedule(
            delay, _is_failure, delay_after, max_in_flight, attempt_timeout
        )
        self.delay = delay
        self.policy = policy
        self.local_addr_infos = local_addr_infos
        self.socket_factory = socket_factory
        self.attempt_timeout = attempt_timeout
        self.trace = trace
        self.history = history
        self.timeout = timeout
        self.clock = clock
        self.new_selector = new_selector
        # What the shared hooks read the time from; they look only with a trace or history.
        self.loop = None if trace is None and history is None else _ClockOnly(clock)
        self.deadline = None if timeout is None else clock() + timeout
        # A lone attempt may connect blocking when nothing can time out: no attempt
        # timeout, no deadline, and no default timeout that a new socket would get.
        self.may_block = (
            socket_factory is None
            and attempt_timeout is None
            and timeout is None
            and socket.getdefaulttimeout() is None
        )
        self.target = ""  # " to host:port", for the deadline's message
        self.started = self.schedule.started  # never rebound by the schedule
        self.errors = self.schedule.errors
        self.sockets: dict[int, socket.socket] = {}
        self.watching: dict[int, socket.socket] = {}  # registered with the selector
        self.start_times: list[float] = []
        self.selector: selectors.BaseSelector | None = None
        self.lookups: Lookups | None = None
        self.finished = False

    # -- hooks: trace and history -------------------------------------------------
    # The asyncio racer's own (one source of truth for what is traced and recorded
    # when): they read the time as ``self.loop.time()``, here the race's clock, and
    # report a raising trace callable through ``report_bug``.
    # (Typed for this class: mypy would take ConnectRace for their self type.)
    emit: ClassVar[_Hook[_trace.TraceEvent]] = ConnectRace.emit  # type: ignore[assignment]
    delay_after: ClassVar[_DelayPolicy] = ConnectRace.delay_after  # type: ignore[assignment]
    policy_delay_after: ClassVar[_DelayPolicy] = ConnectRace.policy_delay_after  # type: ignore[assignment]
    on_success: ClassVar[_Hook[int]] = ConnectRace.on_success  # type: ignore[assignment]
    on_failure: ClassVar[_FailureHook] = ConnectRace.on_failure  # type: ignore[assignment]
    on_abort: ClassVar[_Hook[int]] = ConnectRace.on_abort  # type: ignore[assignment]

    def report_bug(self, exc: BaseException) -> None:
        """A programming error outside an attempt's outcome (a trace callable): the race ends."""
        self.schedule.crash(exc)

    # -- the attempts ------------------------------------------------------------

    def _launch(self, index: int) -> None:
        item = self.started[index]
        now = self.clock()
        if self.history is not None:
            self.start_times.append(now)  # before anything can fail: indexed by attempt
        outcome: BaseException | bool | None = True  # True: in flight
        try:
            address = item[4]
            if "%" in address[0]:
                address = connect_address(address)
            schedule = self.schedule
            # The lone attempt: nothing else is queued, pending or to come, and nothing
            # can time out. The race then has nothing to do but wait for this connect,
            # and a blocking connect() does just that, with two system calls fewer
            # (no getpeername, and no settimeout at the hand-over).
            alone = (
                self.may_block
                and self.lookups is None
                and not schedule.items
                and not schedule.feeding
                and len(schedule.pending) == 1
            )
            sock = make_socket(item, self.local_addr_infos, self.socket_factory, blocking=alone)
            self.sockets[index] = sock
            if self.trace is not None:
                self.emit(_trace.AttemptStarted(index, item, now))
            if schedule.phase is not DONE:  # the trace may have ended the race
                outcome = self._connect(index, sock, address, alone=alone)
        except Exception as exc:  # noqa: BLE001 - classified by the schedule
            outcome = exc  # creating, binding or connecting failed at once (or a bug)
        self.schedule.launched(index, now)
        if outcome is not True:
            self._report(index, outcome)  # type: ignore[arg-type]

    def _connect(
        self, index: int, sock: socket.socket, address: Any, *, alone: bool
    ) -> BaseException | bool | None:
        """Start attempt *index*'s connect: ``None`` (connected), an error, or ``True``.

        ``True``: in flight, watched by the selector.
        """
        if alone:
            try:
                sock.connect(address)  # a signal handler's exception ends the race
            except OSError as exc:
                # The OS's own words, as socket.create_connection's error has them
                # (and as an immediate failure of a non-blocking connect does).
                return exc if exc.errno is None else _immediate_error(exc.errno, address)
            return None
        err = sock.connect_ex(address)
        if err not in _IN_PROGRESS:
            return None if err == 0 else _immediate_error(err, address)
        if self.attempt_timeout == 0:
            # socket.create_connection(timeout=0): a non-blocking connect that has not
            # completed fails with BlockingIOError, as the stdlib's does.
            return _immediate_error(err, address)
        # On loopback the kernel finishes the handshake inside connect(): asking for
        # the peer (ENOTCONN while the handshake is under way, or after it failed)
        # saves the selector and its system calls. A failed connect is left to
        # SO_ERROR, as any other.
        try:
            sock.getpeername()
        except OSError:
            self._watch(index, sock)
            return True
        return None  # done already: no selector, no wait

    def _watch(self, index: int, sock: socket.socket) -> None:
        """Wait for attempt *index*'s connect on the selector (its timeout: the schedule's)."""
        self._selector().register(sock, selectors.EVENT_WRITE, index)
        self.watching[index] = sock

    def _selector(self) -> selectors.BaseSelector:
        """The race's selector, made when first needed: a race won at once needs none."""
        selector = self.selector
        if selector is None:
            selector = self.selector = self.new_selector()
        return selector

    def _on_writable(self, index: int) -> None:
        sock = self.watching.pop(index)
        self.selector.unregister(sock)  # type: ignore[union-attr]
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        address = self.started[index][4]
        # Same message as asyncio's sock_connect (and the asyncio racer).
        self._report(index, None if err == 0 else OSError(err, f"Connect call failed {address}"))

    def _stop(self, index: int, error: BaseException) -> None:
        """Abort pending attempt *index* and report it failed with *error*."""
        self._unwatch(index)
        self._report(index, error)

    def _unwatch(self, index: int) -> None:
        sock = self.watching.pop(index, None)
        if sock is not None:
            self.selector.unregister(sock)  # type: ignore[union-attr]

    def _report(self, index: int, error: BaseException | None) -> None:
        schedule = self.schedule
        if error is None:
            # on_success only records and traces: without either, not even the call.
            if schedule.succeeded(index) and (self.history is not None or self.trace is not None):
                self.on_success(index)
            return
        verdict = schedule.failed(index, error)
        if verdict is IGNORED:
            return
        self._unwatch(index)
        sock = self.sockets.get(index)
        if sock is not None:
            _close_quietly(sock)  # a long race holds no dead descriptors
            del self.sockets[index]  # once closed (see close_all)
        if verdict is FAILED:
            self.on_failure(index, error)

    # -- the loop ------------------------------------------------------------------

    def _pump(self) -> None:
        schedule = self.schedule
        while True:
            step = schedule.step()
            if type(step) is int:
                self._launch(step)
            elif step is DROP or step is TIMED_OUT:
                self._stop(schedule.dropping, abort_error(step, schedule))  # type: ignore[arg-type]
            elif step is FINISHED:
                self._finish()
                return
            else:  # WAIT, or NEED_ITEMS: the lookups' answers wake the selector
                return

    def _finish(self) -> None:
        self.finished = True
        if self.watching:
            for index in list(self.watching):
                self._unwatch(index)
        if self.lookups is not None:
            self.lookups.close()
        pending = self.schedule.pending
        if pending:
            for index in pending[:]:  # a copy, in start order
                self.on_abort(index)
            pending.clear()

    def _next_wake(self) -> float | None:
        """The earliest time something is due, or ``None``: only I/O can move the race."""
        schedule = self.schedule
        times = [
            at for at in (schedule.next_at, schedule.next_expiry, self.deadline) if at is not None
        ]
        if self.lookups is not None and self.lookups.release_at is not None:
            times.append(self.lookups.release_at)
        return min(times) if times else None

    def _timers(self) -> None:
        now = self.clock() + _RESOLUTION
        if self.deadline is not None and now >= self.deadline:
            self.schedule.expire()
            return
        # A start due and attempts run out: the next _pump() launches and aborts them.
        self.schedule.time_passed(now)
        lookups = self.lookups
        if lookups is not None and lookups.release_at is not None and now >= lookups.release_at:
            lookups.release()

    def run(self) -> int | None:
        """Run the race to its end; the winner's index, or ``None`` if every attempt failed.

        Raises:
            BaseException: A programming error (a trace hook, a socket factory).
        """
        try:
            self.schedule.start()
            if self.lookups is not None:
                self.lookups.start(self._selector())
            self._pump()
            while not self.finished:
                at = self._next_wake()
                wait = None if at is None else max(0.0, at - self.clock())
                for key, _ in self._selector().select(wait):
                    if key.data is _WAKE:
                        self.lookups.drain()  # type: ignore[union-attr]
                    else:
                        self._on_writable(key.data)
                self._timers()
                self._pump()
        finally:
            if self.lookups is not None:
                self.lookups.close()
            if self.selector is not None:
                self.selector.close()
        bug = self.schedule.bug
        if bug is not None:
            self.schedule.bug = None
            try:
                raise bug
            finally:
                del bug  # the traceback holds this frame: no cycle through it
        return self.schedule.winner

    def close_all(self, keep: int | None = None) -> None:
        """Close every socket but attempt *keep*'s (which stays in ``sockets``).

        A socket leaves ``sockets`` only once it is closed: a ``KeyboardInterrupt``
        that a signal handler raises anywhere in between leaves the rest listed, for
        :meth:`connect` to close (closing twice is harmless).
        """
        sockets = self.sockets
        if len(sockets) > (keep is not None):  # one, the winner's, in a race won at once
            for index in [i for i in sockets if i != keep]:
                _close_quietly(sockets[index])
                del sockets[index]

    def connect(
        self, *, all_errors: bool, sock_timeout: float | None = None
    ) -> tuple[socket.socket, AddrInfoType]:
        """Run the race; the winner's socket, with *sock_timeout* set, and its addr_info.

        The winner stays the race's (closed on any exception, ``KeyboardInterrupt``
        included) until it is returned.

        Raises:
            OSError: Every attempt failed (the asyncio racer's aggregation).
            ExceptionGroup: The same, with ``all_errors=True``.
            TimeoutError: The overall deadline passed.
        """
        try:
            winner = self.run()
            self.close_all(winner)
            sock = None if winner is None else self.sockets.get(winner)
            if winner is not None and sock is not None:
                self.errors.clear()
                # Blocking, or with the timeout, as the caller wants it; a lone attempt
                # that connected blocking is that already (no system call then).
                if (
                    sock_timeout is not None
                    or type(sock) is not socket.socket
                    or sock.gettimeout() is not None
                ):
                    sock.settimeout(sock_timeout)
                # Handed over by a del and a return, no call: no signal handler can run
                # between them and the caller's assignment.
                del self.sockets[winner]
                return sock, self.started[winner]
        except BaseException:
            self.close_all()  # the winner too: the caller never gets it
            self.errors.clear()
            raise
        errors = [e for e in self.errors if isinstance(e, Exception)]
        self.errors.clear()
        try:
            raise race_failure(self, errors, all_errors=all_errors)  # type: ignore[arg-type]
        finally:
            del errors  # as in ConnectRace.connect: no cycle through the frame


# ---------------------------------------------------------------------------
# Host names: lookups on the pool, answers by RFC 8305 sections 3 and 4
# ---------------------------------------------------------------------------


class Lookups:
    """The AAAA and A lookups of one host name, feeding a :class:`BlockingRace`.

    Section 3: both start at once, on the resolver's pool. An IPv6 answer is fed
    at once; an IPv4 answer that comes first waits at most *resolution_delay* for
    IPv6 (as does an IPv6 answer that RFC 6724 ranks below IPv4). Answers come
    back on pool threads: they are queued under a lock and one byte on a socket
    pair wakes the race's selector, which hands them over in the caller's thread.
    """

    def __init__(
        self,
        race: BlockingRace,
        host: str,
        port: int,
        families: list[int],
        resolution_delay: float,
        count: int,
        sources: Callable[[AddrInfoType], object],
        usable: Callable[[object, int, str], list[AddrInfoType]],
    ) -> None:
        self.race = race
        self.host = host
        self.port = port
        self.families = families
        self.waiting = set(families)
        self.resolution_delay = resolution_delay
        self.count = count
        self.sources = sources
        self.usable = usable
        self.held: list[AddrInfoType] = []
        self.release_at: float | None = None
        self.seen: set[object] = set()
        self.errors: dict[int, OSError] = {}
        self.pending: list[ThreadedLookup] = []
        self.lock = threading.Lock()
        self.answers: list[tuple[int, Any, Exception | None]] = []
        self.reader: socket.socket | None = None
        self.writer: socket.socket | None = None
        self.closed = False

    def start(self, selector: selectors.BaseSelector) -> None:
        """Start the lookups (a ``localhost`` name is answered at once, RFC 6761)."""
        race = self.race
        race.schedule.keep_feeding()
        for family in self.families:
            if race.trace is not None:
                race.emit(_trace.ResolutionStarted(self.host, family, race.clock()))
                if race.schedule.phase is DONE:
                    return  # the trace raised: ask nothing
            local = localhost_addr_infos(self.host, self.port, family)
            if local is not None:
                self.answered(family, local, None)
                continue
            if self.reader is None:
                self.reader, self.writer = socket.socketpair()
                self.reader.setblocking(False)  # noqa: FBT003 - the socket API's signature
                self.writer.setblocking(False)  # noqa: FBT003 - idem
                selector.register(self.reader, selectors.EVENT_READ, _WAKE)
            on_answer = _PostAnswer(self, family)
            self.pending.append(start_threaded_getaddrinfo(self.host, self.port, family, on_answer))

    def post(self, family: int, result: Any, error: Exception | None) -> None:
        """On a pool thread: queue an answer, and wake the selector if none was queued."""
        with self.lock:  # also keeps close() from closing the writer under our send
            if self.closed:
                return
            self.answers.append((family, result, error))
            if len(self.answers) == 1:
                self.writer.send(b"\0")  # type: ignore[union-attr]

    def drain(self) -> None:
        """In the caller's thread: hand every queued answer to the race."""
        with self.lock:
            answers, self.answers = self.answers, []
            self.reader.recv(64)  # type: ignore[union-attr]  # one byte per non-empty queue
        for family, result, error in answers:
            if error is None:
                try:
                    entries = self.usable(result, family, self.host)
                except OSError as exc:
                    self.answered(family, None, exc)
                else:
                    self.answered(family, entries, None)
            elif isinstance(error, OSError):
                self.answered(family, None, error)
            else:
                self.race.schedule.crash(error)  # UnicodeError for "a..b": a bad argument

    def answered(
        self, family: int, entries: list[AddrInfoType] | None, error: OSError | None
    ) -> None:
        """One lookup ended, with addresses or with an error."""
        race = self.race
        self.waiting.discard(family)
        if error is not None:
            self.errors[family] = error
            if race.trace is not None:
                race.emit(_trace.ResolutionFailed(self.host, family, error, race.clock()))
        elif race.trace is not None:
            race.emit(
                _trace.ResolutionFinished(self.host, family, tuple(entries or ()), race.clock())
            )
        fresh = []
        for entry in entries or ():
            key = (entry[0], entry[4][0], entry[4][1])
            if key not in self.seen:  # one address, one attempt
                self.seen.add(key)
                fresh.append(entry)
        if fresh and self.waiting and self._should_wait(family, fresh):
            # Held only while the other family's lookup runs, so nothing else is held.
            self.held = fresh
            self.release_at = race.clock() + self.resolution_delay
        else:
            self._feed(fresh + self._take_held())
        if not self.waiting:
            race.schedule.stop_feeding()

    def _should_wait(self, family: int, fresh: list[AddrInfoType]) -> bool:
        if family == socket.AF_INET:
            return True  # section 3: IPv4 answered first; give IPv6 the resolution delay
        return ranks_below_ipv4(fresh, self.sources)

    def release(self) -> None:
        """The resolution delay passed: feed what was held."""
        self._feed(self._take_held())

    def _take_held(self) -> list[AddrInfoType]:
        self.release_at = None
        held, self.held = self.held, []
        return held

    def _feed(self, new: list[AddrInfoType]) -> None:
        if not new:
            return
        race = self.race
        merged = merge_answers(race.schedule.queued, new, race.started, self.count, self.sources)
        race.schedule.requeue(merged)

    def close(self) -> None:
        """Abandon the lookups still running and close the wake-up pair (idempotent)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.answers = []
            reader, writer = self.reader, self.writer
            self.reader = self.writer = None
            if writer is not None:
                writer.close()
        self.release_at = None
        for lookup in self.pending:
            lookup.cancel()
        self.pending = []
        if reader is not None:
            # Called while the race's selector is open (its end, or run()'s finally).
            self.race.selector.unregister(reader)  # type: ignore[union-attr]
            reader.close()


class _PostAnswer:
    """The pool thread's callback of one family's lookup (a class: no closure cycle)."""

    __slots__ = ("family", "lookups")

    def __init__(self, lookups: Lookups, family: int) -> None:
        self.lookups = lookups
        self.family = family

    def __call__(self, result: Any, error: Exception | None) -> None:
        self.lookups.post(self.family, result, error)
