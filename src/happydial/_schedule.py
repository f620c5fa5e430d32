"""The attempt schedule of RFC 8305 section 5, as pure state: no I/O, no clock, no loop.

:class:`Schedule` holds the rules of a race and nothing else. A driver (the asyncio
one in ``_driver.py``; a blocking one later) owns the loop, the timer, the attempts
and their sockets. It tells the schedule what happened through the *inputs* and asks
it what to do next with :meth:`Schedule.step`. The schedule never calls out, except
to the two plain policies it is given (is an error a failure of its attempt, and how
long after an attempt starts the next one is due), so nothing re-enters it.

The rules:

* The first attempt starts at once. The next starts ``delay`` seconds after the
  previous one *started*, or at once when the most recently started attempt fails
  (section 5). An older attempt failing moves nothing: newer attempts are in flight.
* ``delay=None``: one attempt at a time, the next when the previous one fails.
  ``delay=0``: every attempt at once (CPython's meaning; aiohappyeyeballs treats 0
  like ``None``).
* Items may arrive while the race runs (:meth:`Schedule.add`), for the host-name
  layer and for ``staggered_race``'s lazy iterable: an attempt that is due when the
  queue is empty starts when one arrives.
* The first success wins. An error the failure policy does not accept (a programming
  error) ends the race at once; the driver re-raises it.
* ``max_in_flight``: when a start is due and that many attempts are in flight, the
  oldest is dropped (the driver aborts it and reports it failed) to make room, as
  curl 8.20 does: an attempt that has outlived every delay since is the least likely
  to answer, and waiting for it would stall the race behind black holes. With
  ``delay=0`` (everything at once) there is no "oldest by a delay": the start waits
  for a slot (FULL) until an attempt fails.
* ``attempt_timeout``: an attempt still pending that long after it started fails
  with a timeout. The schedule keeps each pending attempt's deadline; the driver
  tells it the time (:meth:`Schedule.time_passed`) and aborts what
  :meth:`Schedule.step` says has run out (``TIMED_OUT``, index in ``dropping``).
* An overall deadline (:meth:`Schedule.expire`) ends the race; the pending attempts
  are the driver's to abort, and their failures are the deadline's.
* The race is over when it has a winner or a bug, or when nothing is pending, nothing
  is queued and no more items may come.

Phases (h11 style: one name, not a combination of booleans)::

                 start                 a launch                delay elapsed, or the most
       IDLE  ------------->  DUE  ------------------>  STAGGERING  recent attempt failed
                             ^  |  <----------------------------+
                  add (an    |  | queue empty, more may come    |
                  item came) |  v                               | a win, a bug, the caller
                           STARVED                              | gave up, the deadline,
                                                                v or nothing left
              DUE  <--- a failure frees a slot ---  FULL       DONE
              DUE  --- delay 0 and max_in_flight --->

In DUE with ``max_in_flight`` attempts in flight and a delay, :meth:`Schedule.step`
asks the driver to drop the oldest (``DROP``, index in ``dropping``) before it
launches; a delay policy is the ``delay_after`` policy. In any phase but DONE, an
attempt whose deadline :meth:`Schedule.time_passed` found passed is aborted first
(``TIMED_OUT``), before anything new is launched: it frees its slot, and if it was
the most recent attempt, its failure makes the next start due (section 5).

Invariants: each attempt is pending from its launch (:meth:`Schedule.step`) until its first
outcome, and an outcome counts only while its attempt is pending and the race is
not DONE; ``started`` and ``errors`` only grow (one slot per attempt, in start
order) and are never rebound, so a driver may hold them; ``pending`` lists the pending
attempts in start order (ascending indices); ``next_at`` is set only in
STAGGERING; ``expiries`` holds the deadlines of pending attempts only, in start order,
which is also deadline order (one ``attempt_timeout``, starts in time order), so its
first value is the earliest.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = [
    "DONE",
    "DROP",
    "DUE",
    "FAILED",
    "FATAL",
    "FINISHED",
    "FULL",
    "IDLE",
    "IGNORED",
    "NEED_ITEMS",
    "STAGGERING",
    "STARVED",
    "TIMED_OUT",
    "WAIT",
    "Phase",
    "Schedule",
    "Step",
    "Verdict",
]

ItemT = TypeVar("ItemT")


class Phase(enum.Enum):
    """Where a race is; see the module's diagram."""

    IDLE = "idle"  # made; nothing started yet
    DUE = "due"  # an attempt should start now
    STARVED = "starved"  # an attempt is due, but the queue is empty and more may come
    STAGGERING = "staggering"  # attempts in flight; the next at next_at or on a failure
    FULL = "full"  # a start is due, but max_in_flight attempts are in flight (delay 0)
    DONE = "done"  # a winner, a bug, the deadline, or nothing left to try


class Step(enum.Enum):
    """What :meth:`Schedule.step` asks of the driver, when it is not a launch."""

    WAIT = "wait"  # until an outcome, an item, or next_at (when set)
    NEED_ITEMS = "need items"  # a start is due and the queue is empty: add or stop_feeding
    FINISHED = "finished"  # DONE: abort what is pending, hand over the result
    DROP = "drop"  # abort attempt `dropping` and report it failed: max_in_flight is reached
    TIMED_OUT = "timed out"  # abort attempt `dropping` and report it failed: attempt_timeout


# Module constants, not ``Phase.DUE``: on Python 3.11 an enum member looked up on its
# class costs about 0.25 us, and a race does a dozen such lookups (see bench/).
IDLE, DUE, STARVED, STAGGERING, FULL, DONE = Phase
WAIT, NEED_ITEMS, FINISHED, DROP, TIMED_OUT = Step


class Verdict(enum.Enum):
    """What an error reported by :meth:`Schedule.failed` meant."""

    IGNORED = "ignored"  # not pending (already over, or the race is DONE)
    FAILED = "failed"  # a failure of its attempt: the race goes on
    FATAL = "fatal"  # not a failure (a programming error): the race is DONE


IGNORED, FAILED, FATAL = Verdict


class Schedule(Generic[ItemT]):
    """The state of one race, its inputs, and what to do next.

    Args:
        delay: Seconds from one start to the next; ``None``: one at a time.
        is_failure: Whether an error fails its attempt (the race goes on) rather
            than the race (a programming error, re-raised by the driver).
        delay_after: The delay after attempt ``(item, index)`` started, when it is
            not always *delay* (adaptive from history). Called only when *delay*
            is set and another attempt may follow.
        max_in_flight: At most this many attempts pending at once; ``None``: no cap.
        attempt_timeout: Seconds after its start at which a pending attempt has
            run out (see :meth:`time_passed`); ``None``: never.
    """

    # Slots: a race is made per connection (see bench/).
    __slots__ = (
        "attempt_timeout",
        "bug",
        "delay",
        "delay_after",
        "dropping",
        "errors",
        "expired",
        "expiries",
        "feeding",
        "is_failure",
        "items",
        "max_in_flight",
        "next_at",
        "overdue",
        "pending",
        "phase",
        "started",
        "winner",
    )

    def __init__(
        self,
        delay: float | None,
        is_failure: Callable[[BaseException], bool],
        delay_after: Callable[[ItemT, int], float] | None = None,
        max_in_flight: int | None = None,
        attempt_timeout: float | None = None,
    ) -> None:
        self.delay = delay
        self.is_failure = is_failure
        self.delay_after = delay_after
        self.max_in_flight = max_in_flight
        self.attempt_timeout = attempt_timeout
        self.expiries: dict[int, float] = {}  # pending attempt -> when it runs out
        self.overdue: deque[int] | None = None  # ran out, to abort (made when first needed)
        self.dropping: int | None = None  # the attempt a DROP or TIMED_OUT step asks to abort
        self.expired = False  # the overall deadline ended the race
        self.phase = IDLE
        # Queued, not started, the next to start *last* (a stack: pop() is O(1)); a list,
        # not a deque: a deque costs about 1.3 KB (its blocks), a short list under 100 bytes,
        # and a race is made per connection (bench/, 2,000 in flight). See ``queued``.
        self.items: list[ItemT] = []
        self.started: list[ItemT] = []  # attempt index -> item
        self.errors: list[BaseException | None] = []  # attempt index -> its failure
        # In start order, so the oldest is first; a list: a set costs 216 bytes.
        self.pending: list[int] = []
        self.winner: int | None = None
        self.bug: BaseException | None = None
        self.feeding = False  # whether add() may still be called
        self.next_at: float | None = None  # when the next start is due (STAGGERING)

    # -- inputs --------------------------------------------------------------

    def start(self) -> None:
        """The race begins: the first attempt is due."""
        if self.phase is IDLE:
            self.phase = DUE

    @property
    def queued(self) -> list[ItemT]:
        """The items queued and not started, in the order they will start (a copy)."""
        return self.items[::-1]

    def add(self, items: Iterable[ItemT]) -> None:
        """Queue more items; a start that was waiting for one is due again."""
        new = list(items)
        if new:
            new.reverse()
            self.items[:0] = new  # behind what is queued: first in, first out
        if self.phase is STARVED and self.items:
            self.phase = DUE

    def requeue(self, items: Iterable[ItemT]) -> None:
        """Replace the queued items by *items* (the host-name layer re-sorts them)."""
        self.items.clear()
        self.add(items)

    def keep_feeding(self) -> None:
        """Announce that :meth:`add` may be called after the race has started."""
        self.feeding = True

    def stop_feeding(self) -> None:
        """No more items will come; a race with nothing left to try is DONE."""
        self.feeding = False
        self._maybe_done()

    def launched(self, index: int, now: float) -> None:
        """Attempt *index*, the latest launch, started at *now*."""
        if self.attempt_timeout is not None and index in self.pending and self.phase is not DONE:
            self.expiries[index] = now + self.attempt_timeout
        if self.delay is None or not (self.items or self.feeding):
            return  # the next start waits for a failure, or there is none
        delay = (
            self.delay if self.delay_after is None else self.delay_after(self.started[index], index)
        )
        # The policy may have ended the race (a trace hook raising): DONE stays DONE,
        # and so does a start an outcome reported in the meantime made due.
        if self.phase is not STAGGERING:
            return
        if delay > 0:
            self.next_at = now + delay
        else:
            self.phase = DUE  # delay 0: every attempt at once

    def progressed(self, index: int, at: float) -> None:
        """Attempt *index* made progress short of success (TCP connected, TLS follows).

        If it is the most recent attempt and the next start waits for the delay, that
        start comes no sooner than *at*: the Happy Eyeballs v3 draft extends the Next
        Connection Attempt Timer once the transport handshake completes, to leave the
        rest of the establishment (the TLS handshake) its time. Never earlier.
        """
        if (
            self.phase is STAGGERING
            and self.next_at is not None
            and index == len(self.started) - 1
            and at > self.next_at
        ):
            self.next_at = at

    def delay_elapsed(self) -> None:
        """``next_at`` has come: the next attempt is due."""
        if self.phase is STAGGERING and self.next_at is not None:
            self.next_at = None
            self.phase = DUE

    def time_passed(self, now: float) -> None:
        """The driver's clock reads *now*: a start or attempt deadlines may have come.

        A start due by *now* becomes due; every pending attempt whose deadline is
        *now* or earlier has run out, and :meth:`step` asks the driver to abort each
        (``TIMED_OUT``), oldest first, before anything else.
        """
        next_at = self.next_at
        if next_at is not None and now >= next_at:
            self.delay_elapsed()
        expiries = self.expiries
        while expiries:
            index, at = next(iter(expiries.items()))
            if at > now:
                break
            del expiries[index]
            if self.overdue is None:
                self.overdue = deque()
            self.overdue.append(index)

    @property
    def next_expiry(self) -> float | None:
        """The earliest deadline of a pending attempt, or ``None``."""
        return next(iter(self.expiries.values()), None)

    def succeeded(self, index: int) -> bool:
        """Attempt *index* connected; whether that made it the winner."""
        if index not in self.pending or self.phase is DONE:
            return False
        self.pending.remove(index)
        self.winner = index
        self.phase = DONE  # _done(), inline: every race's winning path
        self.next_at = None
        if self.attempt_timeout is not None:
            self.expiries.clear()
        return True

    def failed(self, index: int, error: BaseException) -> Verdict:
        """Attempt *index* ended with *error*; see :class:`Verdict`."""
        if index not in self.pending or self.phase is DONE:
            return IGNORED
        self.pending.remove(index)
        if self.attempt_timeout is not None:
            self.expiries.pop(index, None)
        if not self.is_failure(error):
            self.crash(error)
            return FATAL
        self.errors[index] = error
        if index == len(self.started) - 1 or self.phase is FULL:
            # The most recently started one failed (section 5), or a slot is free.
            self.next_at = None
            self.phase = DUE
        else:
            self._maybe_done()
        return FAILED

    def crash(self, error: BaseException) -> None:
        """A programming error outside an attempt's outcome (a trace hook): DONE.

        The first one is kept; once DONE it changes nothing else.
        """
        if self.bug is None:
            self.bug = error
        self._done()

    def abandon(self) -> None:
        """The caller gave up (cancelled): DONE, whatever is pending."""
        self._done()

    def expire(self) -> None:
        """The overall deadline passed: DONE, and the pending attempts failed by it."""
        if self.phase is not DONE:
            self.expired = True
            self._done()

    # -- output --------------------------------------------------------------

    def step(self) -> int | Step:
        """What the driver should do next.

        An int *i*: launch attempt *i* with item ``started[i]``; it is pending from
        now, and the driver calls :meth:`launched` once it has started it (an int,
        not an object: this runs for every attempt of every race, see bench/).
        ``WAIT``: an outcome, :meth:`add`, or (with ``next_at`` set)
        :meth:`delay_elapsed` comes next. ``DROP``: abort attempt ``dropping``
        and report it failed (:meth:`failed`), then ask again.
        """
        if self.overdue:  # rare: only when time_passed found attempts out of time
            step = self._next_overdue()
            if step is not None:
                return step
        phase = self.phase
        if phase is DUE:
            if self.items:
                cap = self.max_in_flight
                if cap is not None and len(self.pending) >= cap:
                    if self.delay == 0:
                        self.phase = FULL  # everything at once: wait for a slot
                        return WAIT
                    self.dropping = self.pending[0]  # the oldest: see the module's rules
                    return DROP
                item = self.items.pop()
                index = len(self.started)
                self.started.append(item)
                self.errors.append(None)
                self.pending.append(index)
                self.phase = STAGGERING
                return index
            if self.feeding:
                self.phase = STARVED
                return NEED_ITEMS
            self.phase = STAGGERING
            self._maybe_done()
            phase = self.phase
        return FINISHED if phase is DONE else WAIT

    # -- internals -----------------------------------------------------------

    def _maybe_done(self) -> None:
        if not self.pending and not self.items and not self.feeding:
            self._done()

    def _next_overdue(self) -> Step | None:
        overdue = self.overdue
        while overdue:  # an attempt that reported since time_passed is no longer pending
            index = overdue.popleft()
            if index in self.pending and self.phase is not DONE:
                self.dropping = index
                return TIMED_OUT
        return None

    def _done(self) -> None:
        self.phase = DONE
        self.next_at = None
        self.expiries.clear()
        self.overdue = None
