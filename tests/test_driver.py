"""The asyncio driver's own rules, with attempts that report while they are launched."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import socket
from typing import Any

import pytest

from happydial import AddrInfoType, _driver, start_connection
from happydial._driver import LoopRace
from happydial._schedule import Schedule
from happydial._sockets import Attempt
from happydial.testing import FakeNetwork, Path

from .conftest import Runner


class _HookError(Exception):
    pass


class _ReportsAtOnce(LoopRace[str]):
    """Each launch raises a bug in a hook, then fails at once: both while launching."""

    __slots__ = ()

    def launch(self, item: str, index: int) -> Attempt | None:
        self.report_bug(_HookError(item))
        self.report(index, OSError(f"{item} refused at once"))
        return None


def test_outcomes_reported_while_launching_are_handled_in_order(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        race = _ReportsAtOnce(loop, Schedule(0.25, lambda e: isinstance(e, OSError)), None)
        race.add(["a", "b"])
        with pytest.raises(_HookError, match=r"^a$"):
            await race.run()
        # The bug came first and ended the race: the failure reported after it (and
        # the next attempt it would have started) counts for nothing.
        assert race.started == ["a"]
        assert race.errors == [None]
        assert loop.time() == 0

    vrun(main)


# -- the delay timer: armed two or three iterations late, by one object per loop --------


class _AfterIterations(LoopRace[int]):
    """Attempt *item* succeeds after that many loop iterations (0: never reports)."""

    __slots__ = ()

    def launch(self, item: int, index: int) -> Attempt | None:
        if item:
            self.loop.call_soon(self._countdown, item, index)
        return None

    def _countdown(self, left: int, index: int) -> None:
        if left > 1:
            self.loop.call_soon(self._countdown, left - 1, index)
        else:
            self.report(index, None)


def _counting_call_at(loop: asyncio.AbstractEventLoop) -> list[float]:
    """Record the times of every timer *loop* is asked to create from now on."""
    asked: list[float] = []
    call_at = loop.call_at

    def counting(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        asked.append(when)
        return call_at(when, *args, **kwargs)

    loop.call_at = counting  # type: ignore[method-assign,assignment]
    return asked


@pytest.mark.parametrize(("iterations", "timers"), [(1, 0), (2, 0), (4, 1), (10, 1)])
def test_a_race_won_within_two_iterations_creates_no_timer(iterations: int, timers: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        asked = _counting_call_at(loop)
        race = _AfterIterations(loop, Schedule(0.25, lambda e: isinstance(e, OSError)))
        race.add([iterations, 0])
        start = loop.time()
        assert await race.run() == 0
        assert asked == [pytest.approx(start + 0.25, abs=0.01)] * timers
        assert not _driver._ARMINGS[id(loop)][1].handle

    asyncio.run(main())


def test_the_races_of_one_loop_share_its_arming_and_leave_nothing_behind() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        schedules: list[Schedule[int]] = [
            Schedule(0.25, lambda e: isinstance(e, OSError)) for _ in range(3)
        ]
        races = [_AfterIterations(loop, schedule) for schedule in schedules]
        for race, iterations in zip(races, (1, 3, 6), strict=True):
            race.add([iterations, 0])
        runs = [asyncio.ensure_future(race.run()) for race in races]
        await asyncio.sleep(0)
        arming = _driver._ARMINGS[id(loop)][1]
        assert {id(race._timer) for race in races} == {id(arming)}
        assert arming.handle is not None
        assert await asyncio.gather(*runs) == [0, 0, 0]
        assert (len(arming.asked), len(arming.waiting), len(arming.ready)) == (0, 0, 0)
        assert arming.handle is None

    asyncio.run(main())


def test_a_loop_that_is_gone_is_forgotten() -> None:
    loop = asyncio.new_event_loop()
    try:
        armed = _driver._arming(loop)
        assert _driver._arming(loop) is armed  # one per loop
    finally:
        loop.close()
    key = id(loop)
    del loop
    gc.collect()
    assert key not in _driver._ARMINGS


def test_a_reused_id_gets_its_own_arming_and_keeps_it() -> None:
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    first_key, key = id(first), id(second)
    try:
        stale = _driver._arming(first)
        first_ref = _driver._ARMINGS[first_key][0]
        # As if *second* had the id of a loop that is gone: the entry is not second's.
        _driver._ARMINGS[key] = _driver._ARMINGS[first_key]
        fresh = _driver._arming(second)
        assert fresh is not stale
        assert _driver._ARMINGS[key][1] is fresh
        # And as if first's id had been taken by second before first's entry went:
        # first going (its weak reference's callback) must not drop second's entry.
        _driver._ARMINGS[first_key] = _driver._ARMINGS[key]
        forget = first_ref.__callback__
        assert forget is not None
        forget(first_ref)
        assert _driver._ARMINGS[first_key][1] is fresh
    finally:
        first.close()
        second.close()
        _driver._ARMINGS.pop(first_key, None)


_WHO: contextvars.ContextVar[str] = contextvars.ContextVar("_WHO", default="nobody")


@pytest.mark.parametrize("path", ["task", "writer"])
def test_every_race_runs_its_hooks_in_its_callers_context(vrun: Runner[Any], path: Path) -> None:
    # The delay timers of all of a loop's races are armed by one object (the first
    # race's call_soon): a second attempt, started by the delay timer, must still see
    # the context of the call that made its race (a trace hook reading a tracing span).
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop, path=path)
        seen: list[tuple[str, str, str]] = []

        async def one(who: str, dead: str, live: str) -> None:
            _WHO.set(who)
            net.script(dead, outcome="hang")
            net.script(live, delay=0.1)

            def trace(event: object) -> None:
                seen.append((who, _WHO.get(), type(event).__name__))

            sock = await start_connection(
                [_ai(dead), _ai(live)],
                happy_eyeballs_delay=0.25,
                socket_factory=net.socket_factory,
                trace=trace,
            )
            sock.close()

        await asyncio.gather(
            one("first", "192.0.2.1", "198.51.100.1"),
            one("second", "192.0.2.2", "198.51.100.2"),
            one("third", "192.0.2.3", "198.51.100.3"),
        )
        assert loop.time() == pytest.approx(0.35)
        assert {name for _, _, name in seen} >= {"AttemptStarted", "AttemptSucceeded"}
        assert [(race, hook) for race, hook, _ in seen if race != hook] == []
        assert sum(name == "AttemptStarted" for _, _, name in seen) == 6

    vrun(main)


def _ai(host: str) -> AddrInfoType:
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, 80))
