"""The asyncio driver's own rules, with attempts that report while they are launched."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from happydial._driver import LoopRace
from happydial._schedule import Schedule
from happydial._sockets import Attempt

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
