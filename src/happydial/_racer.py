"""The racer: connect to the first of several pre-resolved addresses that answers.

:func:`start_connection` is a drop-in for ``aiohappyeyeballs.start_connection``
(aiohttp calls it with exactly these keywords and autospecs the signature), built on
:class:`ConnectRace`, which the host-name layer also feeds while it resolves.

The call path of one connection:

1. :func:`start_connection` checks its arguments (``_validate``), interleaves the
   families (RFC 8305 section 4, ``_addresses``) and orders by ``history``.
2. It makes a :class:`ConnectRace`: a :class:`~happydial._schedule.Schedule` (the
   rules, no I/O) driven on the loop by ``_driver.LoopRace``, with this module's
   failure policy (:data:`FAILURES`) and, with a history, its adaptive delay.
3. The driver asks the schedule what to do; for each launch, :meth:`ConnectRace.launch`
   makes and binds the socket and starts its connect (``_sockets``: a writer callback,
   or ``loop.sock_connect`` in a task).
4. Each outcome goes back through :meth:`~happydial._driver.LoopRace.report`; the
   schedule decides: the next attempt now, later (the delay timer), or the end. The
   schedule also says when an attempt has run out of time (``attempt_timeout``, the
   driver's one expiry timer tells it the time) or must give way to keep
   ``max_in_flight``: the driver aborts it and reports it failed.
5. At the end, :meth:`ConnectRace.close_losers` closes every socket but the winner's,
   and :meth:`ConnectRace.connect` returns the winner or raises every attempt's error.

Ownership, the contract of this module: every socket an attempt creates is recorded
in ``ConnectRace.sockets`` at once. When the race ends, :meth:`ConnectRace.close_losers`
is the one place that closes them: every socket but the winner, exactly once, on
success, failure and cancellation alike. Only the winner leaves the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable

from . import _trace
from ._addresses import (
    AddrInfoType,
    SocketFactoryType,
    check_addr_infos,
    interleave_families,
)
from ._delays import MAX_DELAY, MIN_DELAY, DelayPolicy, effective_delay
from ._driver import LoopRace
from ._errors import aggregate_errors, deadline_error, tag_error
from ._history import AddressHistory, failure_kind, sort_by_history
from ._schedule import Schedule
from ._sockets import (
    Attempt,
    connect_address,
    make_socket,
    start_connect,
    uses_writer_callbacks,
)
from ._trace import TraceType
from ._validate import DEFAULT_MAX_IN_FLIGHT, check_limits, check_loop, check_start_options

__all__ = [
    "ConnectRace",
    "apply_history",
    "check_addresses",
    "check_ip_literals",
    "plan_delay",
    "start_connection",
]


def check_ip_literals(addr_infos: list[AddrInfoType], name: str) -> None:
    """Refuse host names in sockaddrs: connecting to one would block on DNS."""
    for i, entry in enumerate(addr_infos):
        host = entry[4][0]
        if entry[0] == socket.AF_INET6:
            host = host.partition("%")[0]  # a zone is part of an IPv6 literal only
        try:
            socket.inet_pton(entry[0], host)
        except OSError:
            raise ValueError(
                f"{name}[{i}]: {host!r} is not an IP address of the entry's family;"
                " resolve host names first (or use happydial.connect())"
            ) from None


# What counts as "this attempt failed, try the next one". Anything else is a bug in
# the caller's code (a socket_factory raising ValueError, a malformed address) and
# propagates at once, the same on every path. RuntimeError is uvloop's "fd in use by
# a transport" (aiohappyeyeballs #105).
FAILURES = (OSError, RuntimeError)


# ConnectRace.start_times without a history: never appended to (see launch).
_NOT_KEPT: list[float] = []


def is_failure(error: BaseException) -> bool:
    """The racer's failure policy: a connection error, or uvloop's RuntimeError."""
    return isinstance(error, FAILURES)


def _close_quietly(sock: socket.socket) -> None:
    # A failing close() (a descriptor someone else closed, as uvloop's handoff can
    # do) must never replace the caller's result, error or CancelledError.
    with contextlib.suppress(OSError):
        sock.close()


class ConnectRace(LoopRace[AddrInfoType]):
    """A race of TCP connects over addr_infos, with one owner for all its sockets."""

    __slots__ = (
        "delay",
        "history",
        "local_addr_infos",
        "policy",
        "socket_factory",
        "sockets",
        "start_times",
        "target",
        "timeout",
        "trace",
        "writer_callbacks",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        delay: float | DelayPolicy | None,
        *,
        local_addr_infos: list[AddrInfoType] | None = None,
        socket_factory: SocketFactoryType | None = None,
        attempt_timeout: float | None = None,
        trace: TraceType | None = None,
        history: AddressHistory | None = None,
        max_in_flight: int | None = None,
        timeout: float | None = None,
    ) -> None:
        policy, delay, delay_after = plan_delay(self, delay, history)
        schedule = Schedule(delay, is_failure, delay_after, max_in_flight, attempt_timeout)
        # The deadline counts from now: the call's start, lookups included.
        deadline = None if timeout is None else loop.time() + timeout
        super().__init__(loop, schedule, deadline)
        self.timeout = timeout
        self.target = ""  # " to host:port", for the deadline's message (the host-name layer)
        self.delay = delay
        self.policy = policy
        self.local_addr_infos = local_addr_infos
        self.socket_factory = socket_factory
        self.trace = trace
        self.history = history
        self.sockets: dict[int, socket.socket] = {}
        # When each attempt started, for the history only (each object a race in flight
        # holds counts when thousands are: see bench/ section 5).
        self.start_times: list[float] = [] if history is not None else _NOT_KEPT
        self.writer_callbacks = uses_writer_callbacks(loop)

    def emit(self, event: _trace.TraceEvent) -> None:
        """Hand *event* to the trace callable; an exception from it ends the race."""
        try:
            self.trace(event)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - re-raised to the caller by run()
            self.report_bug(exc)

    def launch(self, item: AddrInfoType, index: int) -> Attempt | None:
        """Create, bind and start connecting the socket of attempt *index*."""
        if self.history is not None:
            # Before anything can fail: start_times is indexed by attempt.
            self.start_times.append(self.loop.time())
        address = item[4]
        if "%" in address[0]:
            address = connect_address(address)
        sock = make_socket(item, self.local_addr_infos, self.socket_factory)
        self.sockets[index] = sock
        if self.trace is not None:
            self.emit(_trace.AttemptStarted(index, item, self.loop.time()))
        return start_connect(
            self.loop, sock, address, index, self.report, writer_callbacks=self.writer_callbacks
        )

    def on_failure(self, index: int, error: BaseException) -> None:
        """Name the address in the error, and trace it."""
        tag_error(error, self.started[index])
        if self.history is not None:
            self.history.record_failure(self.started[index][4], failure_kind(error))
        if self.trace is not None:
            self.emit(_trace.AttemptFailed(index, self.started[index], error, self.loop.time()))

    def on_success(self, index: int) -> None:
        """Record and trace the winner."""
        if self.history is not None:
            elapsed = self.loop.time() - self.start_times[index]
            self.history.record_success(self.started[index][4], elapsed)
        if self.trace is not None:
            self.emit(_trace.AttemptSucceeded(index, self.started[index], self.loop.time()))

    def on_abort(self, index: int) -> None:
        """Trace an attempt stopped because the race ended; record it if it was overtaken."""
        if self.schedule.expired:
            # Still connecting when the overall deadline passed: this attempt failed by
            # it, and the error raised names it with the others.
            error = TimeoutError(f"still connecting when the {self.timeout:g} s deadline passed")
            self.errors[index] = error
            self.on_failure(index, error)
            return
        winner = self.schedule.winner
        if self.history is not None and winner is not None and index < winner:
            # Started before the winner and still pending when the winner connected:
            # for Happy Eyeballs this address was too slow, i.e. it timed out.
            self.history.record_failure(self.started[index][4], "timeout")
        if self.trace is not None:
            self.emit(_trace.AttemptCancelled(index, self.started[index], self.loop.time()))

    def delay_after(self, item: AddrInfoType, index: int) -> float:
        """The configured delay, or the adaptive one when history knows *item*."""
        delay: float = self.delay  # type: ignore[assignment]
        if delay == 0:
            return delay
        measured = self.history.connect_time(item[4])  # type: ignore[union-attr]
        if measured is None:
            return delay
        adaptive = self.history.delay_for(measured)  # type: ignore[union-attr]
        if adaptive != delay and self.trace is not None:
            self.emit(_trace.DelayAdjusted(index, item, adaptive, measured, self.loop.time()))
        return adaptive

    def policy_delay_after(self, item: AddrInfoType, index: int) -> float:
        """The delay after attempt *index*: history's if it knows *item*, else the policy's.

        Both are clamped into RFC 8305's ``[MIN_DELAY, MAX_DELAY]``. An error from
        the policy (a bug in it) ends the race and is raised to the caller.
        """
        history = self.history
        if history is not None:
            measured = history.connect_time(item[4])
            if measured is not None:
                adaptive = min(max(history.delay_for(measured), MIN_DELAY), MAX_DELAY)
                if self.trace is not None:
                    now = self.loop.time()
                    self.emit(_trace.DelayAdjusted(index, item, adaptive, measured, now))
                return adaptive
        policy: DelayPolicy = self.policy  # type: ignore[assignment]
        try:
            delay = effective_delay(policy, item, index, len(self.schedule.pending))
        except Exception as exc:  # noqa: BLE001 - re-raised to the caller by run()
            self.report_bug(exc)
            return MAX_DELAY  # unused: the race is over
        if self.trace is not None:
            self.emit(_trace.DelayAdjusted(index, item, delay, None, self.loop.time(), policy.name))
        return delay

    def discard(self, index: int) -> None:
        """A failed attempt's socket is closed at once: a long race holds no dead fds."""
        sock = self.sockets.pop(index, None)
        if sock is not None:
            _close_quietly(sock)

    def close_losers(self) -> socket.socket | None:
        """Close every socket but the winner's, exactly once; return the winner's."""
        index = self.schedule.winner
        winner = self.sockets.pop(index, None) if index is not None else None
        sockets, self.sockets = self.sockets, {}
        for sock in sockets.values():
            _close_quietly(sock)
        return winner

    async def connect(self, *, all_errors: bool) -> tuple[socket.socket, AddrInfoType]:
        """Run the race; the winner's socket and addr_info.

        Raises:
            OSError: Every attempt failed (CPython's aggregation; see ``_errors``).
            ExceptionGroup: The same, with ``all_errors=True``.
            asyncio.CancelledError: The caller was cancelled; nothing is left open,
                not even a socket that had already won.
        """
        try:
            winner = await self.run()
        except BaseException:
            self.schedule.winner = None
            self.close_losers()
            self.forget_errors()
            raise
        sock = self.close_losers()
        if winner is None or sock is None:
            errors = [e for e in self.errors if isinstance(e, Exception)]
            self.forget_errors()
            try:
                raise race_failure(self, errors, all_errors=all_errors)
            finally:
                # On 3.12+, an attempt's error holds its frames up to run() and this
                # frame (a frame keeps its caller once it ends): this frame holding
                # the errors too would be a cycle only the cyclic GC frees.
                del errors
        self.forget_errors()
        return sock, self.started[winner]


def race_failure(race: ConnectRace, errors: list[Exception], *, all_errors: bool) -> BaseException:
    """The error of a race that ended without a winner (both drivers' races).

    The overall deadline's, if it passed; else every attempt's, aggregated.
    """
    if race.schedule.expired:
        return deadline_error(race.timeout, errors, race.target)  # type: ignore[arg-type]
    if not errors:
        return OSError("no addresses to connect to")
    return aggregate_errors(errors, all_errors=all_errors)


def check_addresses(
    addr_infos: Iterable[AddrInfoType], local_addr_infos: Iterable[AddrInfoType] | None
) -> tuple[list[AddrInfoType], list[AddrInfoType] | None]:
    """``start_connection``'s addresses (both drivers'), checked and listed."""
    entries = check_addr_infos(addr_infos)
    if not entries:
        raise ValueError("addr_infos must not be empty")
    check_ip_literals(entries, "addr_infos")
    local = None
    if local_addr_infos is not None:
        local = check_addr_infos(local_addr_infos, "local_addr_infos")
        check_ip_literals(local, "local_addr_infos")
    return entries, local


def plan_delay(
    race: ConnectRace, delay: float | DelayPolicy | None, history: AddressHistory | None
) -> tuple[DelayPolicy | None, float | None, Callable[[AddrInfoType, int], float] | None]:
    """A race's policy, the schedule's numeric delay, and its ``delay_after``.

    The schedule calls out for each delay only with a history to adapt from or a
    policy to ask; a plain number (the common case) costs nothing more. Shared by
    both drivers' races (``ConnectRace`` here, ``_blocking.BlockingRace``).
    """
    if delay is None or isinstance(delay, (int, float)):
        return None, delay, race.delay_after if history is not None else None
    # Any positive number: it makes the schedule stagger, and delay_after (always
    # called then) gives every actual delay.
    return delay, MAX_DELAY, race.policy_delay_after


def apply_history(
    history: object,
    entries: list[AddrInfoType],
    loop: asyncio.AbstractEventLoop,
    trace: TraceType | None,
) -> list[AddrInfoType]:
    """Order *entries* by *history* (RFC 8305 section 4), tracing any change.

    *trace* is the caller's callable before a race starts, or a race's ``emit``
    while it runs (so that an exception from the caller's callable ends the race).
    """
    if not isinstance(history, AddressHistory):
        raise TypeError(f"history must be an AddressHistory or None, got {history!r}")
    ordered, reasons = sort_by_history(history, entries)  # entries are validated already
    if reasons and trace is not None:
        trace(_trace.HistoryReordered(tuple(entries), tuple(ordered), tuple(reasons), loop.time()))
    return ordered


async def start_connection(
    addr_infos: Iterable[AddrInfoType],
    *,
    local_addr_infos: Iterable[AddrInfoType] | None = None,
    happy_eyeballs_delay: float | DelayPolicy | None = None,
    interleave: int | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    socket_factory: SocketFactoryType | None = None,
    attempt_timeout: float | None = None,
    all_errors: bool = False,
    trace: TraceType | None = None,
    history: AddressHistory | None = None,
    max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT,
    timeout: float | None = None,  # noqa: ASYNC109 - the race must know it: see Raises
) -> socket.socket:
    """Connect to the first address that answers, Happy Eyeballs style (RFC 8305).

    Attempts start staggered in time: the next begins *happy_eyeballs_delay* seconds
    after the previous one started, or at once when the most recent one fails. The
    first connection wins and every other socket is closed. The winner is a connected,
    non-blocking socket for ``loop.create_connection(sock=...)``; the caller owns it.

    Args:
        addr_infos: The addresses, as ``getaddrinfo`` 5-tuples with IP-literal
            sockaddrs. Any iterable; not mutated.
        local_addr_infos: Local addresses to bind to. Each attempt tries those of its
            own family in order; an attempt with none of its family fails.
        happy_eyeballs_delay: Seconds between attempt starts (RFC 8305 recommends
            0.25). ``None``: one attempt at a time. ``0``: all at once (CPython's
            meaning; aiohappyeyeballs treats 0 like ``None``). Or a
            :class:`~happydial.DelayPolicy` that picks each delay (clamped to
            10 ms - 2 s; see :doc:`/guides/delays`).
        interleave: Reorder by family first (RFC 8305 section 4), with this many
            addresses of the first family first. ``None`` means 1 when a delay is
            given and no reordering otherwise; ``0`` keeps the given order.
        loop: The running loop (accepted for compatibility; another loop is an error).
        socket_factory: Makes each attempt's socket from its addr_info, e.g. to set
            options before the SYN. Its socket is made non-blocking, and closed by us
            if that attempt loses.
        attempt_timeout: Seconds after which a pending attempt fails with
            :class:`TimeoutError` (and the next starts). ``None``: the OS decides.
        all_errors: Raise an :class:`ExceptionGroup` of every attempt's error instead
            of one :class:`OSError` (CPython's ``create_connection`` meaning).
        trace: Called with a :mod:`trace event <happydial>` at every step.
        history: An :class:`~happydial.AddressHistory` to order the addresses by
            what worked before and to pace attempts by measured connect times; the
            outcome of this call is recorded in it. ``None`` (the default, as
            upstream): stateless.
        max_in_flight: At most this many attempts in flight at once (6, as curl). When
            the next start is due and that many are in flight, the oldest is dropped:
            it fails with :class:`TimeoutError`. With a delay of 0, the next start
            waits for a slot instead. ``None``: no cap.
        timeout: An overall deadline in seconds for the whole call, all attempts
            included (unlike *attempt_timeout*, which bounds each one). ``None``
            (the default): none.

    Returns:
        The connected socket.

    Raises:
        TimeoutError: *timeout* passed (whatever *all_errors* says). Its
            ``__cause__`` groups every attempt's error, those still connecting then
            included, each naming its address.
        OSError: Every attempt failed. Its ``__cause__`` is an :class:`ExceptionGroup`
            of each attempt's error, each naming its address (see
            :func:`happydial.failed_addr_infos`).
        ExceptionGroup: Every attempt failed and *all_errors* is true.
        TypeError: An argument has the wrong type.
        ValueError: An argument has a bad value (empty *addr_infos*, a negative or
            NaN delay, a host name instead of an IP address, ...).
    """
    if _trace.RECORDING.get() is not None:  # inside happydial.recording()
        from ._report import record_call  # noqa: PLC0415 - loaded by recording() already

        return await record_call(start_connection, locals())
    entries, local = check_addresses(addr_infos, local_addr_infos)
    delay, per_attempt, count = check_start_options(
        happy_eyeballs_delay, attempt_timeout, interleave, socket_factory, trace
    )
    cap, deadline = check_limits(max_in_flight, timeout)
    running = check_loop(loop)
    if count is None and delay is not None:
        count = 1  # CPython's default: Happy Eyeballs on means interleaving on
    if count and len(entries) > 1:
        entries = interleave_families(entries, count)
    if history is not None:
        entries = apply_history(history, entries, running, trace)
    race = ConnectRace(
        running,
        delay,
        local_addr_infos=local,
        socket_factory=socket_factory,
        attempt_timeout=per_attempt,
        trace=trace,
        history=history,
        max_in_flight=cap,
        timeout=deadline,
    )
    race.add(entries)
    sock, _ = await race.connect(all_errors=bool(all_errors))
    return sock
