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
* The race is over when it has a winner or a bug, or when nothing is pending, nothing
  is queued and no more items may come.

Phases (h11 style: one name, not a combination of booleans)::

                 start                 a launch                delay elapsed, or the most
       IDLE  ------------->  DUE  ------------------>  STAGGERING  recent attempt failed
                             ^  |  <----------------------------+
                  add (an    |  | queue empty, more may come    |
                  item came) |  v                               | a win, a bug, the caller
                           STARVED                              | gave up, or nothing left
                                                                v
                                                              DONE

Where later rules belong: a cap on attempts in flight is one more condition before a
launch in :meth:`Schedule.step`; an overall deadline is one more input that ends the
race; a delay policy is the ``delay_after`` policy. Each stays a rule here, with the
driver unchanged but for arming one more time.

Invariants: each attempt is pending from its launch (:meth:`Schedule.step`) until its first
outcome, and an outcome counts only while its attempt is pending and the race is
not DONE; ``started`` and ``errors`` only grow (one slot per attempt, in start
order) and are never rebound, so a driver may hold them; ``next_at`` is set only in
STAGGERING.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = [
    "DONE",
    "DUE",
    "FAILED",
    "FATAL",
    "FINISHED",
    "IDLE",
    "IGNORED",
    "NEED_ITEMS",
    "STAGGERING",
    "STARVED",
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
    DONE = "done"  # a winner, a bug, or nothing left to try


class Step(enum.Enum):
    """What :meth:`Schedule.step` asks of the driver, when it is not a launch."""

    WAIT = "wait"  # until an outcome, an item, or next_at (when set)
    NEED_ITEMS = "need items"  # a start is due and the queue is empty: add or stop_feeding
    FINISHED = "finished"  # DONE: abort what is pending, hand over the result


# Module constants, not ``Phase.DUE``: on Python 3.11 an enum member looked up on its
# class costs about 0.25 us, and a race does a dozen such lookups (see bench/).
IDLE, DUE, STARVED, STAGGERING, DONE = Phase
WAIT, NEED_ITEMS, FINISHED = Step


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
    """

    # Slots: a race is made per connection (see bench/).
    __slots__ = (
        "bug",
        "delay",
        "delay_after",
        "errors",
        "feeding",
        "is_failure",
        "items",
        "next_at",
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
    ) -> None:
        self.delay = delay
        self.is_failure = is_failure
        self.delay_after = delay_after
        self.phase = IDLE
        self.items: deque[ItemT] = deque()  # queued, not started
        self.started: list[ItemT] = []  # attempt index -> item
        self.errors: list[BaseException | None] = []  # attempt index -> its failure
        self.pending: set[int] = set()
        self.winner: int | None = None
        self.bug: BaseException | None = None
        self.feeding = False  # whether add() may still be called
        self.next_at: float | None = None  # when the next start is due (STAGGERING)

    # -- inputs --------------------------------------------------------------

    def start(self) -> None:
        """The race begins: the first attempt is due."""
        if self.phase is IDLE:
            self.phase = DUE

    def add(self, items: Iterable[ItemT]) -> None:
        """Queue more items; a start that was waiting for one is due again."""
        self.items.extend(items)
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

    def delay_elapsed(self) -> None:
        """``next_at`` has come: the next attempt is due."""
        if self.phase is STAGGERING and self.next_at is not None:
            self.next_at = None
            self.phase = DUE

    def succeeded(self, index: int) -> bool:
        """Attempt *index* connected; whether that made it the winner."""
        if index not in self.pending or self.phase is DONE:
            return False
        self.pending.discard(index)
        self.winner = index
        self.phase = DONE  # _done(), inline: every race's winning path
        self.next_at = None
        return True

    def failed(self, index: int, error: BaseException) -> Verdict:
        """Attempt *index* ended with *error*; see :class:`Verdict`."""
        if index not in self.pending or self.phase is DONE:
            return IGNORED
        self.pending.discard(index)
        if not self.is_failure(error):
            self.crash(error)
            return FATAL
        self.errors[index] = error
        if index == len(self.started) - 1:  # the most recently started one
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

    # -- output --------------------------------------------------------------

    def step(self) -> int | Step:
        """What the driver should do next.

        An int *i*: launch attempt *i* with item ``started[i]``; it is pending from
        now, and the driver calls :meth:`launched` once it has started it (an int,
        not an object: this runs for every attempt of every race, see bench/).
        ``WAIT``: an outcome, :meth:`add`, or (with ``next_at`` set)
        :meth:`delay_elapsed` comes next.
        """
        phase = self.phase
        if phase is DUE:
            if self.items:
                item = self.items.popleft()
                index = len(self.started)
                self.started.append(item)
                self.errors.append(None)
                self.pending.add(index)
                self.phase = STAGGERING
                return index
            if self.feeding:
                self.phase = STARVED
                return NEED_ITEMS
            self.phase = STAGGERING
            self._maybe_done()
            phase = self.phase
        if phase is DONE:
            return FINISHED
        return WAIT

    # -- internals -----------------------------------------------------------

    def _maybe_done(self) -> None:
        if not self.pending and not self.items and not self.feeding:
            self._done()

    def _done(self) -> None:
        self.phase = DONE
        self.next_at = None
