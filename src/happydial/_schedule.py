"""The attempt schedule of RFC 8305 section 5, with no I/O of its own.

:class:`Schedule` decides *when* attempts start and *which* outcome ends the race;
subclasses decide *what* an attempt is (a socket connect in ``_racer.py``, a
coroutine in ``_staggered.py``). The rules:

* The first attempt starts at once. The next starts ``delay`` seconds after the
  previous one *started*, or at once when the most recently started attempt fails
  (section 5). An older attempt failing moves nothing: newer attempts are in flight.
* ``delay=None``: one attempt at a time, the next when the previous one fails.
  ``delay=0``: every attempt at once (CPython's meaning; aiohappyeyeballs treats 0
  like ``None``).
* ``attempt_timeout``: an attempt pending that long fails with :class:`TimeoutError`,
  which counts as a failure of that attempt like any other.
* Items may arrive while the race runs (:meth:`Schedule.add`), for the host-name
  layer: an attempt that is due when the queue is empty starts when one arrives.
* The first success wins. Every other attempt is aborted, and when :meth:`run`
  returns, no timer, callback or task of the schedule is left on the loop.

Invariants: each attempt reports at most once and only while pending; the
``_done`` future is the only future the schedule creates; a programming error
(anything that is not a connection failure) ends the race at once and is re-raised.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from ._sockets import Attempt

__all__ = ["Schedule", "check_delay"]

ItemT = TypeVar("ItemT")

# What counts as "this attempt failed, try the next one". Anything else is a bug in
# the caller's code (a socket_factory raising ValueError, a malformed address) and
# propagates at once, the same on every path. RuntimeError is uvloop's "fd in use by
# a transport" (aiohappyeyeballs #105).
FAILURES = (OSError, RuntimeError)

# Marks a programming error reported while an attempt was being launched.
_BUG = -1


def check_delay(value: object, name: str, *, allow_zero: bool) -> float | None:
    """Validate an optional, finite, non-negative number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a finite, {bound} number of seconds, got {value!r}")
    return float(value)


class Schedule(Generic[ItemT]):
    """Runs attempts over a queue of items. Subclasses implement the attempts."""

    # Slots: a race object is made per connection, and most of a cheap race's
    # cost is building it (see bench/).
    __slots__ = (
        "_aborted",
        "_again",
        "_attempts",
        "_busy",
        "_deferred",
        "_done",
        "_due",
        "_feeding",
        "_finished",
        "_launching",
        "_pending",
        "_scheduling",
        "_timeouts",
        "_timer",
        "_timer_at",
        "attempt_timeout",
        "bug",
        "delay",
        "errors",
        "items",
        "loop",
        "started",
        "when_finished",
        "winner",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        delay: float | None,
        attempt_timeout: float | None,
    ) -> None:
        self.loop = loop
        self.delay = delay
        self.attempt_timeout = attempt_timeout
        self.items: deque[ItemT] = deque()
        self.started: list[ItemT] = []
        self.errors: list[BaseException | None] = []
        self.winner: int | None = None
        self.bug: BaseException | None = None
        self._feeding = False
        self._pending: set[int] = set()
        self._attempts: dict[int, Attempt] = {}
        self._timeouts: dict[int, asyncio.TimerHandle] = {}
        self._aborted: list[asyncio.Task[None]] = []
        self._busy: dict[int, asyncio.Task[None]] = {}
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0
        self._due = False
        self._launching = False
        self._scheduling = False
        self._again = False
        self._deferred: list[tuple[int, BaseException | None]] = []
        self._finished = False
        self.when_finished: Callable[[], object] | None = None
        # Awaited by run(). A cancelled caller cancels this future too, which is why
        # the race's own state is the _finished flag, not this future's.
        self._done: asyncio.Future[None] = loop.create_future()

    # -- what subclasses provide ---------------------------------------------

    def launch(self, item: ItemT, index: int) -> Attempt | None:
        """Start attempt *index*; report through :meth:`report`. ``None``: nothing to abort."""
        raise NotImplementedError

    def delay_after(self, item: ItemT, index: int) -> float:  # noqa: ARG002 - for subclasses
        """Seconds from the start of attempt *index* to the next start (default: ``delay``)."""
        return self.delay  # type: ignore[return-value]

    def is_failure(self, error: BaseException) -> bool:
        """Whether *error* fails its attempt (the next one starts) rather than the race."""
        return isinstance(error, FAILURES)

    def discard(self, index: int) -> None:
        """Attempt *index* is over and lost: release what it holds (default: nothing)."""

    def on_success(self, index: int) -> None:
        """Attempt *index* won (called before the others are aborted)."""

    def on_failure(self, index: int, error: BaseException) -> None:
        """Attempt *index* failed with *error* (called before the next one starts)."""

    def on_abort(self, index: int) -> None:
        """Attempt *index* was still pending when the race ended."""

    # -- feeding -------------------------------------------------------------

    def add(self, items: Iterable[ItemT]) -> None:
        """Queue more items; a due attempt starts at once."""
        self.items.extend(items)
        if self._due and self.items:
            self._start_next()

    def keep_feeding(self) -> None:
        """Announce that :meth:`add` may be called after the race has started."""
        self._feeding = True

    def stop_feeding(self) -> None:
        """No more items will come; a race with nothing left to try ends."""
        self._feeding = False
        self._maybe_finish()

    # -- the schedule --------------------------------------------------------

    def _start_next(self) -> None:
        # Iterative, not recursive: an attempt that fails while it is being launched
        # (an unreachable network, a bind error) asks for the next one, and with a
        # long list of such addresses recursion would grow the stack per address.
        if self._scheduling:
            self._again = True
            return
        self._scheduling = True
        try:
            self._again = True
            while self._again and not self._finished:
                self._again = False
                self._start_one()
        finally:
            self._scheduling = False

    def _start_one(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.items:
            self._due = True
            self._maybe_finish()
            return
        self._due = False
        item = self.items.popleft()
        index = len(self.started)
        self.started.append(item)
        self.errors.append(None)
        self._pending.add(index)
        self._launching = True
        try:
            attempt = self.launch(item, index)
        except BaseException as exc:  # noqa: BLE001 - classified; a bug is re-raised by run()
            if not self.is_failure(exc):
                self._pending.discard(index)
                self._fail_with_bug(exc)
                return
            # Creating or binding the socket failed: a failure of this attempt.
            attempt = None
            self._deferred.append((index, exc))
        finally:
            self._launching = False
        if attempt is not None:
            self._attempts[index] = attempt
        self._arm_timers(item, index)
        # Outcomes reported while launching are handled now that the attempt is
        # registered and its timers are armed.
        self._handle_deferred()

    def _arm_timers(self, item: ItemT, index: int) -> None:
        """The attempt's own timeout, and when the next attempt is due."""
        if self.attempt_timeout is not None:
            self._timeouts[index] = self.loop.call_later(
                self.attempt_timeout, self._on_attempt_timeout, index
            )
        if self.delay is not None and (self.items or self._feeding):
            delay = self.delay_after(item, index)
            if delay > 0:
                self._timer_at = self.loop.time() + delay
                self._timer = self.loop.call_soon(self._arm_delay, 2)
            else:
                self._again = True  # delay 0: every attempt at once

    def _handle_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for done_index, error in deferred:
            if done_index == _BUG:
                self.report_bug(error)  # type: ignore[arg-type]
            else:
                self.report(done_index, error)

    def _arm_delay(self, stages: int) -> None:
        # The delay timer is armed two loop iterations after the attempt started,
        # for the same deadline. On a LAN or loopback the attempt has usually
        # connected (or failed) by then, and the race never creates a TimerHandle:
        # cancelled TimerHandles stay in asyncio's heap, whose Python-level
        # comparisons made a timer cost more than the rest of the race (bench/).
        # Two iterations, because the first runs before that iteration's I/O.
        if stages > 1:
            self._timer = self.loop.call_soon(self._arm_delay, stages - 1)
        else:
            self._timer = self.loop.call_at(self._timer_at, self._on_delay)

    def _on_delay(self) -> None:
        self._timer = None
        self._start_next()

    def _on_attempt_timeout(self, index: int) -> None:
        self._timeouts.pop(index)
        # The timer is cancelled when the attempt reports, so it is still in flight.
        task = self._abort(self._attempts.pop(index))
        if task is not None:
            # What the attempt holds is released only once its task has ended: on a
            # proactor loop, closing a socket under an overlapped connect still in
            # flight is the dangerous order.
            self._busy[index] = task
        self.report(index, TimeoutError(f"connect timed out after {self.attempt_timeout} s"))

    def report(self, index: int, error: BaseException | None) -> None:
        """An attempt's outcome: ``None`` for success, else why it failed."""
        if self._launching:
            self._deferred.append((index, error))
            return
        if index not in self._pending or self._finished:
            return
        self._pending.discard(index)
        self._attempts.pop(index, None)
        timeout = self._timeouts.pop(index, None)
        if timeout is not None:
            timeout.cancel()
        if error is None:
            self.winner = index
            self.on_success(index)
            self._finish()
        elif not self.is_failure(error):
            self._discard(index)
            self._fail_with_bug(error)
        else:
            self.errors[index] = error
            self._discard(index)
            self.on_failure(index, error)
            if index == len(self.started) - 1:  # the most recently started one
                self._start_next()
            else:
                self._maybe_finish()

    def report_bug(self, exc: BaseException) -> None:
        """End the race with a programming error found outside an attempt's outcome.

        Found while the race is being wound up (a trace hook of an aborted attempt),
        it is still raised by :meth:`run`. Found after :meth:`run` returned (a lookup
        abandoned once the race was won), it has no effect: it must not undo a
        connection that was already handed over.
        """
        if self._launching:
            self._deferred.append((_BUG, exc))  # handled once the attempt is registered
            return
        if self.bug is None:
            self.bug = exc
        if not self._finished:
            self._finish()

    def _maybe_finish(self) -> None:
        if not self._pending and not self.items and not self._feeding and not self._finished:
            self._finish()

    def _abort(self, attempt: Attempt) -> asyncio.Task[None] | None:
        """Stop *attempt* now; remember its task, if any, to await it later."""
        task = attempt.abort()
        if task is not None:
            self._aborted.append(task)
        return task

    def _discard(self, index: int) -> None:
        """Release attempt *index*'s resources, once its task (if aborted) has ended."""
        task = self._busy.pop(index, None)
        if task is None or task.done():
            self.discard(index)
        else:
            task.add_done_callback(lambda _: self.discard(index))

    def _fail_with_bug(self, exc: BaseException) -> None:
        self.bug = exc
        self._finish()

    def _finish(self) -> None:
        # First, so that a hook called below (a trace) cannot finish the race again.
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for handle in self._timeouts.values():
            handle.cancel()
        self._timeouts.clear()
        attempts, self._attempts = self._attempts, {}
        for attempt in attempts.values():
            self._abort(attempt)
        for index in sorted(self._pending):
            self.on_abort(index)
        self._pending.clear()
        hook, self.when_finished = self.when_finished, None  # once; and no cycle through it
        if hook is not None:
            hook()
        if not self._done.done():
            self._done.set_result(None)

    async def run(self) -> int | None:
        """Run the race to its end; the winner's index, or ``None`` if every attempt failed.

        Raises:
            asyncio.CancelledError: The caller was cancelled. Everything was stopped first.
            BaseException: A programming error raised by an attempt.
        """
        self._start_next()
        try:
            await self._done
        except asyncio.CancelledError:
            if not self._finished:
                self._finish()
            if self._aborted:
                await self._wait_aborted()
            raise
        if self._aborted:
            await self._wait_aborted()
        bug = self.bug
        if bug is not None:
            self.bug = None
            try:
                raise bug
            finally:
                # The traceback holds this frame: a frame holding the error too
                # would be a cycle only the cyclic GC frees (with the whole race).
                del bug
        return self.winner

    def forget_errors(self) -> None:
        """Drop the attempts' errors once they were handed on (raised or discarded).

        An error raised while an attempt started carries a traceback whose frames
        hold this race; the race holding the error would make a reference cycle
        that keeps the race, its loop, trace and history alive until the cyclic
        GC runs (CPython's create_connection breaks the same cycles).
        """
        self.errors = []

    async def _wait_aborted(self) -> None:
        """Wait for aborted tasks to end, even if cancelled meanwhile (then re-raise)."""
        cancelled: asyncio.CancelledError | None = None
        while self._aborted:
            tasks, self._aborted = self._aborted, []
            try:
                await asyncio.wait(tasks)
            except asyncio.CancelledError as exc:
                cancelled = exc
                self._aborted.extend(t for t in tasks if not t.done())
        if cancelled is not None:
            raise cancelled
