"""staggered_race: CPython's semantics, on a virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from happydial import staggered_race

from .conftest import Runner


def attempt(
    log: list[tuple[str, float]], name: str, delay: float, result: Any
) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        loop = asyncio.get_running_loop()
        log.append((name, loop.time()))
        await asyncio.sleep(delay)
        if isinstance(result, BaseException):
            raise result
        return result

    return run


DELAY = 0.25


@dataclass(frozen=True)
class Row:
    """One race: each coroutine sleeps, then returns or raises; what must follow."""

    plan: list[tuple[float, Any]]  # per coroutine: (seconds it runs, result or exception)
    delay: float | None
    starts: list[float]  # when each coroutine started
    winner: int | None
    ends_at: float


ROWS = {
    "a slow first, the second wins": Row(
        plan=[(9, "a"), (0.1, "b")], delay=DELAY, starts=[0, DELAY], winner=1, ends_at=DELAY + 0.1
    ),
    "a failure starts the next at once": Row(
        plan=[(0.1, ValueError("x")), (0.1, "b")],
        delay=DELAY,
        starts=[0, 0.1],
        winner=1,
        ends_at=0.2,
    ),
    "no delay: one at a time": Row(
        plan=[(0.3, ValueError("x")), (0.1, "b")],
        delay=None,
        starts=[0, 0.3],
        winner=1,
        ends_at=0.4,
    ),
    "delay 0: all at once": Row(
        plan=[(0.3, "a"), (0.1, "b"), (0.2, "c")], delay=0, starts=[0, 0, 0], winner=1, ends_at=0.1
    ),
    "an older failure moves nothing": Row(
        plan=[(0.3, ValueError("x")), (9, "b"), (0.1, "c")],
        delay=0.2,
        starts=[0, 0.2, 0.4],
        winner=2,
        ends_at=0.5,
    ),
    "every coroutine fails": Row(
        plan=[(0.1, ValueError("x")), (0.1, KeyError("y"))],
        delay=DELAY,
        starts=[0, 0.1],
        winner=None,
        ends_at=0.2,
    ),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_schedule(vrun: Runner[Any], row: Row) -> None:
    plan, delay, starts, winner, end = row.plan, row.delay, row.starts, row.winner, row.ends_at

    async def main() -> None:
        log: list[tuple[str, float]] = []
        fns = [attempt(log, str(i), d, r) for i, (d, r) in enumerate(plan)]
        result, index, exceptions = await staggered_race(fns, delay)
        assert [t for _, t in log] == pytest.approx(starts)
        assert index == winner
        assert asyncio.get_running_loop().time() == pytest.approx(end)
        assert len(exceptions) == len(starts)
        if winner is not None:
            assert result == plan[winner][1]
            assert exceptions[winner] is None
            for i, exc in enumerate(exceptions):
                if i != winner and not isinstance(plan[i][1], BaseException):
                    assert isinstance(exc, asyncio.CancelledError)
        else:
            assert result is None
            assert [type(e) for e in exceptions] == [type(r) for _, r in plan]

    vrun(main)


def test_iterable_is_consumed_lazily(vrun: Runner[Any]) -> None:
    async def main() -> None:
        log: list[tuple[str, float]] = []
        taken: list[float] = []

        def fns() -> Iterator[Callable[[], Awaitable[Any]]]:
            loop = asyncio.get_running_loop()
            for i in range(3):
                taken.append(loop.time())
                yield attempt(log, str(i), 5.0 if i < 2 else 0.1, i)

        result, index, _ = await staggered_race(fns(), 0.5)
        assert (result, index) == (2, 2)
        assert taken == [0.0, 0.5, 1.0]

    vrun(main)


def test_empty(vrun: Runner[Any]) -> None:
    async def main() -> None:
        assert await staggered_race([], 0.25) == (None, None, [])

    vrun(main)


def test_keyboard_interrupt_propagates(vrun: Runner[Any]) -> None:
    async def main() -> None:
        log: list[tuple[str, float]] = []
        with pytest.raises(KeyboardInterrupt):
            await staggered_race(
                [attempt(log, "a", 9, "a"), attempt(log, "b", 0.1, KeyboardInterrupt())], 0.1
            )

    vrun(main)


def test_coroutine_raising_cancelled_error_counts_as_failure(vrun: Runner[Any]) -> None:
    async def main() -> None:
        log: list[tuple[str, float]] = []
        result, index, exceptions = await staggered_race(
            [attempt(log, "a", 0.1, asyncio.CancelledError()), attempt(log, "b", 0.1, "b")], 1.0
        )
        assert (result, index) == ("b", 1)
        assert isinstance(exceptions[0], asyncio.CancelledError)

    vrun(main)


def test_caller_cancellation(vrun: Runner[Any]) -> None:
    async def main() -> None:
        log: list[tuple[str, float]] = []
        task = asyncio.ensure_future(
            staggered_race([attempt(log, "a", 9, "a"), attempt(log, "b", 9, "b")], 0.1)
        )
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    vrun(main)


def test_simultaneous_success_is_cancelled(vrun: Runner[Any]) -> None:
    # Both return at exactly 0.5 (binary fractions: no rounding). The first reported
    # wins, and the other is cancelled like any loser: its entry is CancelledError.
    async def main() -> None:
        log: list[tuple[str, float]] = []
        result, index, exceptions = await staggered_race(
            [attempt(log, "a", 0.5, "a"), attempt(log, "b", 0.25, "b")], 0.25
        )
        assert (result, index) == ("a", 0)
        assert log == [("a", 0.0), ("b", 0.25)]
        assert exceptions[0] is None
        assert type(exceptions[1]) is asyncio.CancelledError
        assert asyncio.get_running_loop().time() == 0.5

    vrun(main)


@pytest.mark.parametrize(
    ("delay", "exc", "match"),
    [(-1, ValueError, "delay must be a finite"), ("1", TypeError, "delay must be a number")],
)
def test_bad_delay(vrun: Runner[Any], delay: Any, exc: type[Exception], match: str) -> None:
    async def main() -> None:
        with pytest.raises(exc, match=match):
            await staggered_race([], delay)
        with pytest.raises(ValueError, match="loop must be the running event loop"):
            await staggered_race([], 0.1, loop=object())  # type: ignore[arg-type]

    vrun(main)


def test_coro_fns_must_be_iterable(vrun: Runner[Any]) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="coro_fns must be an iterable of coroutine functions"):
            await staggered_race(5, 0.1)  # type: ignore[arg-type]

    vrun(main)
