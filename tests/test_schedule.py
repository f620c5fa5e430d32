"""The sans-I/O schedule on its own: inputs in, steps out, no loop and no clock.

Each test drives :class:`happydial._schedule.Schedule` the way a driver would and
checks the phase, the step and the state after each input. The asyncio driver is
tested through the racer (``test_racer.py``, ``test_staggered.py``, the chaos model);
these pin the rules themselves, so a blocking driver can rely on them too.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect

import pytest

from happydial import _schedule
from happydial._schedule import (
    DONE,
    DROP,
    DUE,
    FAILED,
    FATAL,
    FINISHED,
    FULL,
    IDLE,
    IGNORED,
    NEED_ITEMS,
    STAGGERING,
    STARVED,
    TIMED_OUT,
    WAIT,
    Schedule,
)


def connection_errors(error: BaseException) -> bool:
    return isinstance(error, OSError)


def make(delay: float | None = 0.25, items: tuple[str, ...] = ("a", "b", "c")) -> Schedule[str]:
    schedule: Schedule[str] = Schedule(delay, connection_errors)
    schedule.add(items)
    return schedule


def launch(schedule: Schedule[str], now: float) -> tuple[int, str]:
    """Take the next step, which must be a launch, and report it started at *now*."""
    index = schedule.step()
    assert isinstance(index, int), index
    schedule.launched(index, now)
    return index, schedule.started[index]


def test_the_core_imports_no_io() -> None:
    tree = ast.parse(inspect.getsource(_schedule))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module or "")
    assert modules == {"__future__", "enum", "collections", "collections.abc", "typing"}


def test_nothing_starts_before_start() -> None:
    schedule = make()
    assert schedule.phase is IDLE
    assert schedule.step() is WAIT
    schedule.start()
    schedule.start()  # a second start changes nothing
    assert schedule.phase is DUE
    assert launch(schedule, 10.0) == (0, "a")


def test_the_next_attempt_is_due_delay_after_the_previous_started() -> None:
    schedule = make(delay=0.25)
    schedule.start()
    launch(schedule, 10.0)
    assert (schedule.phase, schedule.next_at) == (STAGGERING, 10.25)
    assert schedule.step() is WAIT
    schedule.delay_elapsed()
    assert (schedule.phase, schedule.next_at) == (DUE, None)
    assert launch(schedule, 10.25) == (1, "b")
    assert schedule.next_at == 10.5
    assert schedule.pending == [0, 1]


def test_a_failure_of_the_most_recent_attempt_starts_the_next_at_once() -> None:
    schedule = make()
    schedule.start()
    launch(schedule, 0.0)
    error = OSError("refused")
    assert schedule.failed(0, error) is FAILED
    assert (schedule.phase, schedule.next_at) == (DUE, None)
    assert launch(schedule, 0.01) == (1, "b")
    assert schedule.errors == [error, None]


def test_a_failure_of_an_older_attempt_moves_nothing() -> None:
    schedule = make()
    schedule.start()
    launch(schedule, 0.0)
    schedule.delay_elapsed()
    launch(schedule, 0.25)
    assert schedule.failed(0, OSError("refused")) is FAILED
    assert (schedule.phase, schedule.next_at) == (STAGGERING, 0.5)
    assert schedule.step() is WAIT


def test_no_delay_means_one_attempt_at_a_time() -> None:
    schedule = make(delay=None)
    schedule.start()
    launch(schedule, 0.0)
    assert (schedule.phase, schedule.next_at) == (STAGGERING, None)
    schedule.delay_elapsed()  # no timer is due: changes nothing
    assert schedule.step() is WAIT
    schedule.failed(0, OSError("refused"))
    assert launch(schedule, 1.0) == (1, "b")


def test_delay_zero_starts_every_attempt_at_once() -> None:
    schedule = make(delay=0)
    schedule.start()
    assert [launch(schedule, 0.0) for _ in range(3)] == [(0, "a"), (1, "b"), (2, "c")]
    # The last one has no successor: nothing is due, the race waits for outcomes.
    assert (schedule.phase, schedule.step()) == (STAGGERING, WAIT)


def test_the_delay_policy_sees_each_attempt() -> None:
    seen: list[tuple[str, int]] = []

    def delay_after(item: str, index: int) -> float:
        seen.append((item, index))
        return 0.1 * (index + 1)

    schedule: Schedule[str] = Schedule(0.25, connection_errors, delay_after)
    schedule.add(["a", "b", "c"])
    schedule.start()
    launch(schedule, 1.0)
    schedule.delay_elapsed()
    assert schedule.next_at is None
    launch(schedule, 1.1)
    assert schedule.next_at == pytest.approx(1.3)
    schedule.delay_elapsed()
    launch(schedule, 1.3)  # the last item: no successor, the policy is not asked
    assert seen == [("a", 0), ("b", 1)]
    assert schedule.next_at is None


def test_a_policy_that_ends_the_race_is_not_undone() -> None:
    def delay_after(item: str, index: int) -> float:
        schedule.crash(ValueError("trace hook"))
        return 0.25

    schedule: Schedule[str] = Schedule(0.25, connection_errors, delay_after)
    schedule.add(["a", "b"])
    schedule.start()
    launch(schedule, 0.0)
    assert (schedule.phase, schedule.next_at, schedule.step()) == (DONE, None, FINISHED)


def test_an_empty_queue_asks_for_items_while_more_may_come() -> None:
    schedule = make(items=())
    schedule.keep_feeding()
    schedule.start()
    assert schedule.step() is NEED_ITEMS
    assert schedule.phase is STARVED
    assert schedule.step() is WAIT  # asked once; the driver adds or stops feeding
    schedule.add([])
    assert schedule.phase is STARVED
    schedule.add(["a"])
    assert schedule.phase is DUE
    assert launch(schedule, 0.0) == (0, "a")
    # Another may come, so the next start is timed even with an empty queue.
    assert schedule.next_at == 0.25


def test_items_added_while_staggering_wait_for_their_turn() -> None:
    schedule = make(items=("a",))
    schedule.keep_feeding()
    schedule.start()
    launch(schedule, 0.0)
    schedule.add(["b"])
    assert (schedule.phase, schedule.step()) == (STAGGERING, WAIT)


def test_items_start_in_the_order_they_were_added() -> None:
    schedule = make(delay=0, items=("a", "b"))
    schedule.keep_feeding()
    schedule.start()
    assert launch(schedule, 0.0) == (0, "a")
    schedule.add(iter(["c", "d"]))  # any iterable, behind what is queued
    schedule.add([])
    schedule.add(("e",))
    assert schedule.queued == ["b", "c", "d", "e"]
    schedule.queued.clear()  # a copy: the queue is the schedule's
    started = [launch(schedule, 0.0)[1] for _ in range(4)]
    assert (started, schedule.queued) == (["b", "c", "d", "e"], [])
    assert schedule.pending == [0, 1, 2, 3, 4]  # in start order: the oldest first


def test_requeue_replaces_the_untried_items() -> None:
    schedule = make(items=("a", "b"))
    schedule.keep_feeding()
    schedule.start()
    launch(schedule, 0.0)
    schedule.requeue(["c", "b"])
    assert schedule.queued == ["c", "b"]
    schedule.delay_elapsed()
    assert launch(schedule, 0.25) == (1, "c")


def test_stop_feeding_ends_a_race_with_nothing_left() -> None:
    schedule = make(items=())
    schedule.keep_feeding()
    schedule.start()
    assert schedule.step() is NEED_ITEMS
    schedule.stop_feeding()
    assert (schedule.phase, schedule.step(), schedule.winner) == (DONE, FINISHED, None)


def test_stop_feeding_waits_for_pending_attempts() -> None:
    schedule = make(items=("a",))
    schedule.keep_feeding()
    schedule.start()
    launch(schedule, 0.0)
    schedule.stop_feeding()
    assert schedule.phase is STAGGERING
    schedule.failed(0, OSError("refused"))
    assert schedule.phase is DUE
    assert schedule.step() is FINISHED  # nothing queued, nothing pending, none to come


def test_the_first_success_wins_and_later_outcomes_count_for_nothing() -> None:
    schedule = make()
    schedule.start()
    launch(schedule, 0.0)
    schedule.delay_elapsed()
    launch(schedule, 0.25)
    assert schedule.succeeded(1) is True
    assert (schedule.phase, schedule.winner, schedule.pending) == (DONE, 1, [0])
    assert schedule.succeeded(0) is False
    assert schedule.failed(0, OSError("late")) is IGNORED
    assert schedule.errors == [None, None]
    assert schedule.step() is FINISHED


def test_an_outcome_of_an_attempt_not_pending_is_ignored() -> None:
    schedule = make()
    schedule.start()
    launch(schedule, 0.0)
    assert schedule.failed(0, OSError("refused")) is FAILED
    assert schedule.failed(0, OSError("again")) is IGNORED
    assert schedule.succeeded(0) is False
    assert schedule.succeeded(7) is False


def test_an_error_the_policy_refuses_ends_the_race_as_a_bug() -> None:
    schedule = make()
    schedule.start()
    launch(schedule, 0.0)
    bug = ValueError("bad socket_factory")
    assert schedule.failed(0, bug) is FATAL
    assert (schedule.phase, schedule.bug, schedule.errors) == (DONE, bug, [None])


def test_crash_keeps_the_first_bug() -> None:
    schedule = make()
    schedule.start()
    first, second = ValueError("first"), ValueError("second")
    schedule.crash(first)
    schedule.crash(second)
    assert (schedule.phase, schedule.bug) == (DONE, first)


def test_abandon_ends_the_race_with_attempts_pending() -> None:
    schedule = make()
    schedule.start()
    launch(schedule, 0.0)
    schedule.abandon()
    assert (schedule.phase, schedule.pending, schedule.winner) == (DONE, [0], None)
    assert schedule.step() is FINISHED


def test_every_attempt_failing_ends_the_race_without_a_winner() -> None:
    schedule = make(items=("a", "b"))
    schedule.start()
    launch(schedule, 0.0)
    schedule.failed(0, OSError("a"))
    launch(schedule, 0.0)
    schedule.failed(1, OSError("b"))
    assert schedule.step() is FINISHED
    assert [str(e) for e in schedule.errors] == ["a", "b"]


@dataclasses.dataclass(frozen=True)
class Row:
    """One race in the table: attempts fail or win at given times, and what follows."""

    name: str
    delay: float | None
    outcomes: dict[str, tuple[float, bool]]  # item -> (when it reports, whether it wins)
    starts: dict[str, float]  # item -> when it started
    winner: str | None
    attempt_timeout: float | None = None
    timed_out: tuple[str, ...] = ()  # the attempts the schedule timed out, in order


ROWS = [
    Row(
        name="first wins before the delay",
        delay=0.25,
        outcomes={"a": (0.1, True)},
        starts={"a": 0.0},
        winner="a",
    ),
    Row(
        name="a black hole, then the second wins",
        delay=0.25,
        outcomes={"b": (0.2, True)},
        starts={"a": 0.0, "b": 0.25},
        winner="b",
    ),
    Row(
        name="a refusal starts the next at once",
        delay=0.25,
        outcomes={"a": (0.05, False), "b": (0.1, True)},
        starts={"a": 0.0, "b": 0.05},
        winner="b",
    ),
    Row(
        name="all fail, staggered",
        delay=0.25,
        outcomes={"a": (1.0, False), "b": (1.0, False), "c": (1.0, False)},
        starts={"a": 0.0, "b": 0.25, "c": 0.5},
        winner=None,
    ),
    Row(
        name="one at a time",
        delay=None,
        outcomes={"a": (1.0, False), "b": (1.5, True)},
        starts={"a": 0.0, "b": 1.0},
        winner="b",
    ),
    Row(
        name="one at a time, a black hole times out, the next wins",
        delay=None,
        attempt_timeout=2.0,
        outcomes={"b": (0.3, True)},
        starts={"a": 0.0, "b": 2.0},
        winner="b",
        timed_out=("a",),
    ),
    Row(
        name="an older attempt timing out moves nothing",
        delay=0.25,
        attempt_timeout=0.4,
        outcomes={"c": (0.1, True)},
        # a times out at 0.4 while b is the most recent: c still starts at 0.5.
        starts={"a": 0.0, "b": 0.25, "c": 0.5},
        winner="c",
        timed_out=("a",),
    ),
    Row(
        name="the most recent attempt timing out starts the next at once",
        delay=1.0,
        attempt_timeout=0.4,
        outcomes={"b": (0.4, False), "c": (0.1, True)},
        starts={"a": 0.0, "b": 0.4, "c": 0.8},
        winner="c",
        timed_out=("a",),
    ),
    Row(
        name="a success at the instant of its deadline counts",
        delay=0.25,
        attempt_timeout=0.5,
        outcomes={"a": (0.5, True)},
        starts={"a": 0.0, "b": 0.25},
        winner="a",
    ),
    Row(
        name="every attempt timing out ends the race without a winner",
        delay=0.25,
        attempt_timeout=0.3,
        outcomes={},
        # a (at 0.3) and b (at 0.55) time out while a newer one is in flight; c at 0.8.
        starts={"a": 0.0, "b": 0.25, "c": 0.5},
        winner=None,
        timed_out=("a", "b", "c"),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_scenarios_on_a_simulated_clock(row: Row) -> None:
    """A tiny driver: the earliest of the next start, the next attempt deadline and the
    next outcome happens; an outcome at the instant of a timer comes first (it was
    already on its way)."""
    schedule: Schedule[str] = Schedule(
        row.delay, connection_errors, attempt_timeout=row.attempt_timeout
    )
    schedule.add(("a", "b", "c"))
    schedule.start()
    now = 0.0
    starts: dict[str, float] = {}
    timed_out: list[str] = []
    due: dict[int, tuple[float, bool]] = {}
    while True:
        step = schedule.step()
        if isinstance(step, int):
            item = schedule.started[step]
            starts[item] = now
            when, wins = row.outcomes.get(item, (99.0, False))
            due[step] = (now + when, wins)
            schedule.launched(step, now)
            continue
        if step is TIMED_OUT:
            index = schedule.dropping
            assert index is not None
            del due[index]  # the driver aborts it
            timed_out.append(schedule.started[index])
            assert schedule.failed(index, TimeoutError("attempt_timeout")) is FAILED
            continue
        if step is FINISHED:
            break
        index = min(due, key=lambda i: due[i][0])
        timers = [t for t in (schedule.next_at, schedule.next_expiry) if t is not None]
        if timers and min(timers) < due[index][0]:
            now = min(timers)
            schedule.time_passed(now)
            continue
        now, wins = due.pop(index)
        if wins:
            schedule.succeeded(index)
        else:
            schedule.failed(index, OSError(f"attempt {index}"))
    assert starts == pytest.approx(row.starts)
    assert (schedule.started[schedule.winner] if schedule.winner is not None else None) == (
        row.winner
    )
    assert tuple(timed_out) == row.timed_out
    assert schedule.expiries == {}
    assert schedule.next_expiry is None


# -- limits: max_in_flight and the overall deadline ----------------------------------


def capped(delay: float | None, cap: int, items: tuple[str, ...]) -> Schedule[str]:
    schedule: Schedule[str] = Schedule(delay, connection_errors, max_in_flight=cap)
    schedule.add(items)
    schedule.start()
    return schedule


def test_the_cap_asks_to_drop_the_oldest_before_a_launch() -> None:
    schedule = capped(0.25, 2, ("a", "b", "c", "d"))
    launch(schedule, 0.0)
    schedule.delay_elapsed()
    launch(schedule, 0.25)
    schedule.delay_elapsed()
    assert schedule.pending == [0, 1]
    # The third start is due with two in flight: drop the oldest first.
    assert schedule.step() is DROP
    assert schedule.dropping == 0
    assert schedule.step() is DROP  # asking again changes nothing until it is reported
    assert schedule.failed(0, TimeoutError("dropped")) is FAILED
    assert (schedule.phase, schedule.pending) == (DUE, [1])
    assert launch(schedule, 0.5) == (2, "c")
    assert schedule.errors[0] is not None


def test_with_a_cap_of_one_the_dropped_attempt_is_the_latest() -> None:
    schedule = capped(0.25, 1, ("a", "b"))
    launch(schedule, 0.0)
    schedule.delay_elapsed()
    assert schedule.step() is DROP
    assert schedule.dropping == 0
    schedule.failed(0, TimeoutError("dropped"))
    assert schedule.phase is DUE
    assert launch(schedule, 0.25) == (1, "b")


def test_with_delay_zero_the_cap_waits_for_a_slot() -> None:
    schedule = capped(0, 2, ("a", "b", "c", "d"))
    launch(schedule, 0.0)
    launch(schedule, 0.0)
    assert schedule.step() is WAIT
    assert schedule.phase is FULL
    schedule.add(["e"])
    assert schedule.phase is FULL  # more items do not make room
    # An older attempt failing frees a slot: the next starts at once.
    assert schedule.failed(0, OSError("refused")) is FAILED
    assert schedule.phase is DUE
    assert launch(schedule, 0.1) == (2, "c")


def test_a_win_while_full_ends_the_race() -> None:
    schedule = capped(0, 1, ("a", "b"))
    launch(schedule, 0.0)
    assert schedule.step() is WAIT
    assert schedule.succeeded(0)
    assert schedule.step() is FINISHED


def test_no_cap_never_drops() -> None:
    schedule = capped(0.25, 10, tuple("abcdefghij"))
    for i in range(10):
        launch(schedule, i * 0.25)
        schedule.delay_elapsed()
    assert schedule.pending == list(range(10))


def test_expire_ends_the_race_and_keeps_the_pending_for_the_driver() -> None:
    schedule = capped(0.25, 6, ("a", "b", "c"))
    launch(schedule, 0.0)
    schedule.delay_elapsed()
    launch(schedule, 0.25)
    schedule.expire()
    assert (schedule.phase, schedule.expired, schedule.next_at) == (DONE, True, None)
    assert schedule.pending == [0, 1]  # the driver aborts them and names them
    assert schedule.step() is FINISHED
    assert schedule.failed(0, OSError("late")) is IGNORED


def test_expire_after_the_end_changes_nothing() -> None:
    schedule = capped(0.25, 6, ("a",))
    launch(schedule, 0.0)
    assert schedule.succeeded(0)
    schedule.expire()
    assert (schedule.expired, schedule.winner) == (False, 0)


# -- per-attempt deadlines (attempt_timeout) -------------------------------------------


def timed(delay: float | None, timeout: float, items: tuple[str, ...]) -> Schedule[str]:
    schedule: Schedule[str] = Schedule(delay, connection_errors, attempt_timeout=timeout)
    schedule.add(items)
    schedule.start()
    return schedule


def deadlines(schedule: Schedule[str]) -> tuple[dict[int, float], float | None]:
    return dict(schedule.expiries), schedule.next_expiry


def test_each_pending_attempt_has_a_deadline_in_start_order() -> None:
    schedule = timed(0.25, 1.0, ("a", "b", "c"))
    launch(schedule, 0.0)
    schedule.time_passed(0.25)
    launch(schedule, 0.25)
    assert deadlines(schedule) == ({0: 1.0, 1: 1.25}, 1.0)
    assert schedule.failed(0, OSError("refused")) is FAILED
    assert deadlines(schedule) == ({1: 1.25}, 1.25)
    schedule.time_passed(1.2)  # before the deadline: nothing runs out
    assert schedule.overdue is None
    assert schedule.succeeded(1)
    assert deadlines(schedule) == ({}, None)


def test_a_timeout_is_handled_before_a_start_due_at_the_same_instant() -> None:
    schedule = timed(0.25, 0.25, ("a", "b"))
    launch(schedule, 0.0)
    schedule.time_passed(0.25)  # a's deadline and b's start, both now
    assert (schedule.phase, schedule.next_at) == (DUE, None)
    assert schedule.step() is TIMED_OUT
    assert schedule.dropping == 0
    assert schedule.failed(0, TimeoutError("attempt_timeout")) is FAILED
    assert launch(schedule, 0.25) == (1, "b")


def test_several_attempts_run_out_at_once_oldest_first() -> None:
    schedule = timed(0, 1.0, ("a", "b", "c"))  # delay 0: all start at once
    for _ in range(3):
        launch(schedule, 0.0)
    schedule.time_passed(5.0)
    order = []
    while (step := schedule.step()) is TIMED_OUT:
        assert schedule.dropping is not None
        order.append(schedule.dropping)
        schedule.failed(schedule.dropping, TimeoutError("attempt_timeout"))
    assert order == [0, 1, 2]
    assert (step, schedule.phase, schedule.winner) == (FINISHED, DONE, None)


def test_an_attempt_that_reported_after_running_out_is_not_aborted() -> None:
    schedule = timed(0, 1.0, ("a", "b"))
    launch(schedule, 0.0)
    launch(schedule, 0.0)
    schedule.time_passed(1.0)
    assert schedule.failed(0, OSError("refused, on its way before the timer")) is FAILED
    assert schedule.step() is TIMED_OUT
    assert schedule.dropping == 1
    assert schedule.succeeded(1) is True  # the driver's abort lost to a success: it counts
    assert schedule.step() is FINISHED


def test_running_out_after_the_end_asks_for_nothing() -> None:
    schedule = timed(0.25, 1.0, ("a", "b"))
    launch(schedule, 0.0)
    schedule.time_passed(1.0)
    schedule.abandon()  # the caller gave up first
    assert (schedule.expiries, schedule.overdue) == ({}, None)
    assert schedule.step() is FINISHED


def test_a_launch_after_the_race_ended_gets_no_deadline() -> None:
    schedule = timed(0.25, 1.0, ("a",))
    index = schedule.step()
    schedule.crash(RuntimeError("a trace hook raised while attempt 0 was launched"))
    schedule.launched(index, 0.0)  # type: ignore[arg-type]
    assert deadlines(schedule) == ({}, None)


def test_without_attempt_timeout_nothing_runs_out() -> None:
    schedule = make(delay=None)
    schedule.start()
    launch(schedule, 0.0)
    schedule.time_passed(1e9)
    assert (schedule.expiries, schedule.overdue, schedule.step()) == ({}, None, WAIT)


def test_running_out_of_attempts_that_all_reported_since_asks_for_nothing() -> None:
    schedule = timed(0.25, 1.0, ("a", "b"))
    launch(schedule, 0.0)
    schedule.time_passed(1.0)  # a's deadline, and b's start
    assert schedule.failed(0, OSError("refused, on its way before the timer")) is FAILED
    assert launch(schedule, 1.0) == (1, "b")  # no TIMED_OUT first: a already reported
