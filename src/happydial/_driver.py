"""The asyncio driver of the schedule: the loop, the one timer, the attempts.

:class:`LoopRace` runs a :class:`~happydial._schedule.Schedule` on an asyncio loop.
The schedule says what to do (launch attempt *i*, wait, need items, finished); this
class does it, and turns what happens on the loop (an attempt's outcome, the delay
timer, an attempt's timeout, the caller's cancellation) into the schedule's inputs.
Subclasses say what an attempt is (a socket connect in ``_racer.py``, a coroutine in
``_staggered.py``) and add their hooks (trace, history).

What lives here and not in the schedule, because it is about the loop:

* **One delay timer**, armed two or three loop iterations late by the loop's
  :class:`_DelayArming`, so that fast races never create a ``TimerHandle``.
* **Attempt timeouts**: the schedule keeps each pending attempt's deadline; one
  ``TimerHandle`` at the earliest of them tells the schedule the time when it comes
  (:meth:`Schedule.time_passed`), and is moved on to the next one then.
* **The overall deadline**, one ``TimerHandle`` per race that has one: when it fires,
  the schedule expires and the pending attempts are aborted.
* **Dropped attempts**: when the schedule asks to drop the oldest attempt to keep
  ``max_in_flight``, it is aborted and reported failed with a ``TimeoutError``.
* **Outcomes reported while an attempt is being launched** (a connect that fails at
  once, a trace hook that raises, a task that runs eagerly): queued, and handed to
  the schedule once the attempt is registered and its delay is known, so that an
  attempt is never reported before it exists.
* **Aborted tasks** are awaited before :meth:`LoopRace.run` returns, and what a
  timed-out task attempt holds is released only once its task has ended.

When :meth:`LoopRace.run` returns, no timer, callback or task of the race is left on
the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from ._schedule import DROP, FAILED, IDLE, IGNORED, NEED_ITEMS, TIMED_OUT, WAIT, Schedule, Step
from ._sockets import Attempt

__all__ = ["LoopRace", "abort_error"]

ItemT = TypeVar("ItemT")

# Marks a programming error reported while an attempt was being launched.
_BUG = -1


class LoopRace(Generic[ItemT]):
    """Drives a schedule on an asyncio loop. Subclasses implement the attempts."""

    # Slots: a race object is made per connection, and most of a cheap race's
    # cost is building it (see bench/).
    __slots__ = (
        "_aborted",
        "_attempts",
        "_busy",
        "_deadline_timer",
        "_deferred",
        "_done",
        "_expiry_at",
        "_expiry_timer",
        "_finished",
        "_launching",
        "_pumping",
        "_timer",
        "_timer_at",
        "deadline",
        "errors",
        "loop",
        "schedule",
        "started",
        "when_finished",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        schedule: Schedule[ItemT],
        deadline: float | None = None,
    ) -> None:
        self.loop = loop
        self.schedule = schedule
        self.deadline = deadline  # the loop time at which the race expires, if any
        self._deadline_timer: asyncio.TimerHandle | None = None
        # The schedule never rebinds these lists: read them here without a hop.
        self.started = schedule.started
        self.errors = schedule.errors
        self._attempts: dict[int, Attempt] = {}
        # The timer at the earliest attempt deadline, when the schedule has any.
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._expiry_at = 0.0
        # These three are made when first needed: most races never need them.
        self._aborted: list[asyncio.Task[None]] | None = None
        self._busy: dict[int, asyncio.Task[None]] | None = None
        # The delay timer: a TimerHandle, or the loop's _DelayArming while it waits there.
        self._timer: asyncio.Handle | _DelayArming | None = None
        self._timer_at: float | None = None
        self._pumping = False
        self._launching = False
        self._deferred: list[tuple[int, BaseException | None]] | None = None
        self._finished = False
        self.when_finished: Callable[[], object] | None = None
        # Awaited by run(). A cancelled caller cancels this future too, which is why
        # the race's own state is the schedule's phase, not this future's.
        self._done: asyncio.Future[None] = loop.create_future()

    # -- what subclasses provide ---------------------------------------------

    def launch(self, item: ItemT, index: int) -> Attempt | None:
        """Start attempt *index*; report through :meth:`report`. ``None``: nothing to abort."""
        raise NotImplementedError

    def need_items(self) -> None:
        """A start is due and the queue is empty (default: wait for :meth:`add`)."""

    def discard(self, index: int) -> None:
        """Attempt *index* is over and lost: release what it holds (default: nothing)."""

    def on_success(self, index: int) -> None:
        """Attempt *index* won (called before the others are aborted)."""

    def on_failure(self, index: int, error: BaseException) -> None:
        """Attempt *index* failed with *error* (called before the next one starts)."""

    def on_abort(self, index: int) -> None:
        """Attempt *index* was still pending when the race ended."""

    # -- inputs from the caller and the loop ----------------------------------

    def add(self, items: Iterable[ItemT]) -> None:
        """Queue more items; a due attempt starts at once."""
        schedule = self.schedule
        schedule.add(items)
        if schedule.phase is not IDLE:  # before run(), there is nothing to do yet
            self._pump()

    def requeue(self, items: Iterable[ItemT]) -> None:
        """Replace the untried items by *items*; a due attempt starts at once."""
        self.schedule.requeue(items)
        self._pump()

    def keep_feeding(self) -> None:
        """Announce that :meth:`add` may be called after the race has started."""
        self.schedule.keep_feeding()

    def stop_feeding(self) -> None:
        """No more items will come; a race with nothing left to try ends."""
        self.schedule.stop_feeding()
        self._pump()

    def report(self, index: int, error: BaseException | None) -> None:
        """An attempt's outcome: ``None`` for success, else why it failed."""
        if self._launching:
            self._defer(index, error)
            return
        schedule = self.schedule
        if error is None:
            if not schedule.succeeded(index):
                return
            self._attempts.pop(index, None)
            self.on_success(index)
            # The schedule is DONE: wind up now, unless the pump running below us
            # (an attempt that won while it was being launched) will.
            if not self._pumping and not self._finished:
                self._finish()
            return
        verdict = schedule.failed(index, error)
        if verdict is IGNORED:
            return
        self._attempts.pop(index, None)
        self._discard(index)
        if verdict is FAILED:
            self.on_failure(index, error)
        self._pump()

    def report_bug(self, exc: BaseException) -> None:
        """End the race with a programming error found outside an attempt's outcome.

        Found while the race is being wound up (a trace hook of an aborted attempt),
        it is still raised by :meth:`run`. Found after :meth:`run` returned (a lookup
        abandoned once the race was won), it has no effect: it must not undo a
        connection that was already handed over.
        """
        if self._launching:
            self._defer(_BUG, exc)  # handled once the attempt is registered
            return
        self.schedule.crash(exc)
        self._pump()

    # -- doing what the schedule says ----------------------------------------

    def _pump(self) -> None:
        # Iterative, and never re-entered: an attempt that fails while it is being
        # launched (an unreachable network, a bind error) makes the next one due,
        # and this loop starts it; with a long list of such addresses, recursion
        # would grow the stack per address.
        if self._pumping or self._finished:
            return
        self._pumping = True
        try:
            schedule = self.schedule
            while True:
                step = schedule.step()
                if type(step) is int:
                    self._launch(step, schedule.started[step])
                elif step is WAIT:
                    at = schedule.next_at
                    if at != self._timer_at:
                        # Move the one delay timer to the schedule's next start.
                        if self._timer is not None:
                            self._cancel_delay()
                        self._timer_at = at
                        if at is not None:
                            self._timer = arming = _arming(self.loop)
                            arming.add(self, self.loop)
                    return
                elif step is NEED_ITEMS:
                    self.need_items()  # it may add items or stop feeding: ask again
                elif step is DROP or step is TIMED_OUT:
                    self._drop(step, schedule.dropping)  # type: ignore[arg-type]
                else:
                    self._finish()
                    return
        finally:
            self._pumping = False

    def _launch(self, index: int, item: ItemT) -> None:
        self._launching = True
        try:
            attempt = self.launch(item, index)
        except BaseException as exc:  # noqa: BLE001 - classified by the schedule
            # Creating or binding the socket failed (or a bug): the attempt's outcome.
            attempt = None
            self._defer(index, exc)
        finally:
            self._launching = False
        if attempt is not None:
            self._attempts[index] = attempt
        schedule = self.schedule
        schedule.launched(index, self.loop.time())
        if schedule.attempt_timeout is not None and self._expiry_timer is None:
            self._arm_expiry()
        if self._deferred:
            self._handle_deferred()

    def _defer(self, index: int, error: BaseException | None) -> None:
        """Hold an outcome reported while an attempt is being launched."""
        if self._deferred is None:
            self._deferred = [(index, error)]
        else:
            self._deferred.append((index, error))

    def _handle_deferred(self) -> None:
        # Outcomes reported while launching, now that the attempt is registered. Not
        # in _launch: an error raised by launch() has that frame in its traceback, and
        # a local holding the error there would be a cycle only the cyclic GC frees.
        deferred, self._deferred = self._deferred, None
        for done_index, error in deferred or ():  # _launch checked that there are some
            if done_index == _BUG:
                self.report_bug(error)  # type: ignore[arg-type]
            else:
                self.report(done_index, error)

    def arm_delay(self, context: contextvars.Context) -> None:
        """Create the delay timer, for ``next_at`` (called by the loop's :class:`_DelayArming`).

        It runs in *context*, the one the race asked for it in: the context of the call
        that made the race, whose hooks (a trace reading a tracing span) the next
        attempt's launch runs.
        """
        self._timer = self.loop.call_at(
            self._timer_at,  # type: ignore[arg-type]
            self._on_delay,
            context=context,
        )

    def _cancel_delay(self) -> None:
        timer = self._timer
        self._timer = None
        if type(timer) is _DelayArming:
            timer.discard(self)
        else:
            timer.cancel()  # type: ignore[union-attr]

    def _on_delay(self) -> None:
        self._timer = None
        self._timer_at = None
        self.schedule.delay_elapsed()
        self._pump()

    def _on_deadline(self) -> None:
        self._deadline_timer = None
        self.schedule.expire()
        self._pump()

    def _arm_expiry(self) -> None:
        """Set the expiry timer at the schedule's earliest attempt deadline, if unset."""
        at = self.schedule.next_expiry
        if at is not None and self._expiry_timer is None:
            self._expiry_at = at
            self._expiry_timer = self.loop.call_at(at, self._on_expiry)

    def _on_expiry(self) -> None:
        # Not cancelled when its attempt reports (a cancelled TimerHandle stays in
        # asyncio's heap): the schedule knows which attempts are still pending, and
        # the timer moves on to the next deadline.
        self._expiry_timer = None
        self.schedule.time_passed(self._expiry_at)  # the timer's time, not a clock read
        self._pump()
        if not self._finished:
            self._arm_expiry()  # unless a launch in the pump armed it

    def _drop(self, step: Step, index: int) -> None:
        """Abort attempt *index* as the schedule asks: out of time, or to keep the cap."""
        self._stop(index, abort_error(step, self.schedule))

    def _stop(self, index: int, error: BaseException) -> None:
        """Abort pending attempt *index* and report it failed with *error*."""
        task = self._abort(self._attempts.pop(index))
        if task is not None:
            # What the attempt holds is released only once its task has ended: on a
            # proactor loop, closing a socket under an overlapped connect still in
            # flight is the dangerous order.
            if self._busy is None:
                self._busy = {}
            self._busy[index] = task
        self.report(index, error)

    def _abort(self, attempt: Attempt) -> asyncio.Task[None] | None:
        """Stop *attempt* now; remember its task, if any, to await it later."""
        task = attempt.abort()
        if task is not None:
            if self._aborted is None:
                self._aborted = [task]
            else:
                self._aborted.append(task)
        return task

    def _discard(self, index: int) -> None:
        """Release attempt *index*'s resources, once its task (if aborted) has ended."""
        busy = self._busy
        task = busy.pop(index, None) if busy else None
        if task is None or task.done():
            self.discard(index)
        else:
            task.add_done_callback(lambda _: self.discard(index))

    def _finish(self) -> None:
        # First, so that a hook called below (a trace) cannot finish the race again.
        self._finished = True
        if self._timer is not None:
            self._cancel_delay()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        attempts, self._attempts = self._attempts, {}
        for attempt in attempts.values():
            self._abort(attempt)
        pending = self.schedule.pending
        for index in pending[:]:  # a copy, in start order
            self.on_abort(index)
        pending.clear()
        hook, self.when_finished = self.when_finished, None  # once; and no cycle through it
        if hook is not None:
            hook()
        if not self._done.done():
            self._done.set_result(None)

    # -- the race ---------------------------------------------------------------

    async def run(self) -> int | None:
        """Run the race to its end; the winner's index, or ``None`` if every attempt failed.

        Raises:
            asyncio.CancelledError: The caller was cancelled. Everything was stopped first.
            BaseException: A programming error raised by an attempt.
        """
        self.schedule.start()
        if self.deadline is not None:
            self._deadline_timer = self.loop.call_at(self.deadline, self._on_deadline)
        self._pump()
        try:
            await self._done
        except asyncio.CancelledError:
            if not self._finished:
                self.schedule.abandon()
                self._pump()
            if self._aborted:
                await self._wait_aborted()
            raise
        if self._aborted:
            await self._wait_aborted()
        schedule = self.schedule
        bug = schedule.bug
        if bug is not None:
            schedule.bug = None
            try:
                raise bug
            finally:
                # The traceback holds this frame: a frame holding the error too
                # would be a cycle only the cyclic GC frees (with the whole race).
                del bug
        return schedule.winner

    def forget_errors(self) -> None:
        """Drop the attempts' errors once they were handed on (raised or discarded).

        An error raised while an attempt started carries a traceback whose frames
        hold this race; the race holding the error would make a reference cycle
        that keeps the race, its loop, trace and history alive until the cyclic
        GC runs (CPython's create_connection breaks the same cycles).
        """
        self.errors.clear()

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


def abort_error(step: Step, schedule: Schedule[ItemT]) -> TimeoutError:
    """What an attempt the schedule aborts (``TIMED_OUT`` or ``DROP``) failed with.

    One wording for every driver.
    """
    if step is TIMED_OUT:
        return TimeoutError(f"connect timed out after {schedule.attempt_timeout} s")
    return TimeoutError(
        f"no answer before the next attempt was due; abandoned to keep at most"
        f" {schedule.max_in_flight} attempts in flight (max_in_flight)"
    )


class _DelayArming:
    """Arms the delay timers of one loop's races, two or three iterations late.

    A race's delay timer is armed two loop iterations after its attempt started, for
    the same time. On a LAN or loopback the attempt has usually connected (or failed)
    by then, and the race never creates a ``TimerHandle``: cancelled TimerHandles stay
    in asyncio's heap, whose Python-level comparisons made a timer cost more than the
    rest of the race (bench/). Two iterations, because a callback of an iteration runs
    before that iteration's I/O may be handled.

    One object per loop does the waiting for all its races: one ``call_soon`` per
    iteration while any race waits, where a handle per race and per iteration (each
    with a copied context) made four objects stay alive with every race in flight,
    and thousands of races in flight make the garbage collector run (bench/ section
    5). A race asked for before this iteration's tick waits three iterations, after it
    two: never fewer than two whole iterations.

    Each race's timer runs in the context the race asked in (kept as the value of its
    entry), not in the tick's: the tick serves every race of the loop, and a timer
    made in it would run one race's launches in another caller's context.
    """

    __slots__ = ("asked", "context", "handle", "ready", "waiting")

    def __init__(self) -> None:
        # race -> the context its timer runs in
        self.asked: dict[LoopRace[object], contextvars.Context] = {}  # since the last tick
        self.waiting: dict[LoopRace[object], contextvars.Context] = {}  # one tick done
        self.ready: dict[LoopRace[object], contextvars.Context] = {}  # armed at the next tick
        self.handle: asyncio.Handle | None = None
        # The ticks' own context: they read and set no variable, and a context given
        # to call_soon saves copying the current one per tick. One per loop, not one
        # for all: a context cannot be entered twice at once, and loops run in threads.
        self.context = contextvars.Context()

    def add(self, race: LoopRace[ItemT], loop: asyncio.AbstractEventLoop) -> None:
        """Arm *race*'s delay timer two or three iterations from now, in this context."""
        self.asked[race] = contextvars.copy_context()  # type: ignore[index]
        if self.handle is None:
            self.handle = loop.call_soon(self._tick, loop, context=self.context)

    def discard(self, race: LoopRace[ItemT]) -> None:
        """*race* no longer wants its timer armed (it moved, or the race ended)."""
        self.asked.pop(race, None)  # type: ignore[arg-type]
        self.waiting.pop(race, None)  # type: ignore[arg-type]
        self.ready.pop(race, None)  # type: ignore[arg-type]
        if not (self.asked or self.waiting or self.ready) and self.handle is not None:
            self.handle.cancel()  # nothing is left on the loop once the last race is over
            self.handle = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        due = self.ready
        self.ready, self.waiting, self.asked = self.waiting, self.asked, {}
        self.handle = None
        for race, context in due.items():
            race.arm_delay(context)
        if self.asked or self.waiting or self.ready:
            self.handle = loop.call_soon(self._tick, loop, context=self.context)


# One _DelayArming per loop, by id(loop); the weak reference forgets a loop that is
# gone (an id can be reused), and keeps this table from keeping loops alive.
_ARMINGS: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], _DelayArming]] = {}


def _arming(loop: asyncio.AbstractEventLoop) -> _DelayArming:
    """The :class:`_DelayArming` of *loop*, made the first time it is needed."""
    entry = _ARMINGS.get(id(loop))
    if entry is not None and entry[0]() is loop:
        return entry[1]
    key = id(loop)
    arming = _DelayArming()

    def forget(ref: weakref.ref[asyncio.AbstractEventLoop]) -> None:
        if (current := _ARMINGS.get(key)) is not None and current[0] is ref:
            del _ARMINGS[key]

    _ARMINGS[key] = (weakref.ref(loop, forget), arming)
    return arming
