"""``staggered_race``: the generic primitive, with CPython's semantics.

It runs coroutine functions as tasks, driven by ``_driver.LoopRace`` on the schedule
of ``_schedule.py``: the next
one starts *delay* seconds after the previous one started, or as soon as the most
recently started one fails. The first to return wins; the others are cancelled and
awaited before this returns. Unlike :func:`happydial.start_connection`, anything a
coroutine raises counts as its failure (only ``KeyboardInterrupt`` and
``SystemExit`` propagate at once), because the primitive knows nothing of sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Generic, TypeVar

from ._driver import LoopRace
from ._schedule import Schedule
from ._sockets import TaskAttempt, being_cancelled
from ._validate import check_delay, check_loop

__all__ = ["staggered_race"]

T = TypeVar("T")


def _is_failure(error: BaseException) -> bool:
    """Anything a coroutine raises fails its attempt, but these two (as CPython)."""
    return not isinstance(error, (KeyboardInterrupt, SystemExit))


class _CoroutineRace(LoopRace[Callable[[], Awaitable[T]]], Generic[T]):
    __slots__ = ("results", "source")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float | None) -> None:
        super().__init__(loop, Schedule(delay, _is_failure))
        self.results: dict[int, T] = {}
        self.source: Iterator[Callable[[], Awaitable[T]]] = iter(())

    def launch(self, item: Callable[[], Awaitable[T]], index: int) -> TaskAttempt:
        return TaskAttempt(self.loop.create_task(self._run_one(item, index)))

    async def _run_one(self, coro_fn: Callable[[], Awaitable[T]], index: int) -> None:
        try:
            result = await coro_fn()
        except asyncio.CancelledError as exc:
            if being_cancelled():
                raise  # aborted by the race, or the whole task was cancelled
            self.report(index, exc)  # the coroutine raised it by itself
        except BaseException as exc:  # noqa: BLE001 - classified by is_failure()
            self.report(index, exc)
        else:
            self.results[index] = result
            self.report(index, None)

    def need_items(self) -> None:
        """Consume the iterable lazily: the next function only when it is due (as CPython)."""
        try:
            items = _take_one(self.source)
        except BaseException as exc:  # noqa: BLE001 - re-raised by run(), as CPython does
            # This runs in a timer callback or an attempt's report as often as in
            # the caller's task: an error must end the race, not be logged by the loop.
            self.schedule.crash(exc)
            return
        if items:
            self.schedule.add(items)
        else:
            self.schedule.stop_feeding()


def _take_one(source: Iterator[T]) -> list[T]:
    for item in source:
        return [item]
    return []


async def staggered_race(
    coro_fns: Iterable[Callable[[], Awaitable[T]]],
    delay: float | None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
) -> tuple[T | None, int | None, list[BaseException | None]]:
    """Run coroutine functions staggered in time; the first to succeed wins.

    Args:
        coro_fns: Functions returning awaitables. Any iterable, consumed lazily: the
            next function is taken only when its attempt starts.
        delay: Seconds between starts; ``None`` runs them one after another, and
            ``0`` starts them all at once (as CPython).
        loop: The running loop, if given (another loop is an error).

    Returns:
        ``(winner_result, winner_index, exceptions)``: the result and index of the
        winner (``None`` and ``None`` if all failed) and one slot per started
        attempt: the exception it raised, ``CancelledError`` if it was cancelled
        because another won, else ``None``.

    Raises:
        TypeError: *delay* is not a number or ``None``.
        ValueError: *delay* is negative, NaN or infinite.
        KeyboardInterrupt: Raised by an attempt (as is ``SystemExit``).
    """
    checked = check_delay(delay, "delay", allow_zero=True)
    given: object = coro_fns  # typed callers aside, anything may arrive here
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        raise TypeError(f"coro_fns must be an iterable of coroutine functions, got {coro_fns!r}")
    running = check_loop(loop)
    race: _CoroutineRace[T] = _CoroutineRace(running, checked)
    race.source = iter(coro_fns)
    race.keep_feeding()
    try:
        winner = await race.run()
    finally:
        exceptions = _unwrap(race)
        race.forget_errors()
    result = None if winner is None else race.results[winner]
    try:
        return result, winner, exceptions
    finally:
        # On 3.12+, an error raised by a coroutine that ran eagerly holds its frames
        # up to this one (a frame keeps its caller once it ends): this frame holding
        # the race and the errors too would be a cycle only the cyclic GC frees.
        del race, exceptions


def _unwrap(race: _CoroutineRace[T]) -> list[BaseException | None]:
    exceptions: list[BaseException | None] = []
    for index, error in enumerate(race.errors):
        if error is None and index != race.schedule.winner and index not in race.results:
            exceptions.append(asyncio.CancelledError())
        else:
            exceptions.append(error)
    return exceptions
