"""Model-checked chaos: thousands of random races on the virtual clock (issue 9).

Each seed generates a scenario (``chaos_model.generate``): 1-12 addresses of both
families with random connect delays (exact ties and a coarse 50 ms grid included,
to collide with the attempt delay) and outcomes (connect, refused, reset,
unreachable, RuntimeError, hang, factory OSError, bind error, no local address of
the family, and rarely a programming error), a random attempt delay, interleave,
attempt_timeout, addresses added mid-race through ``ConnectRace``, and a caller
cancellation at a random instant. The run is checked against the reference model
(exact start times, winner, error, end time, end of every connect) and against the
contract: exactly one socket escapes on success, every other socket is closed
exactly once, cancellation propagates, and nothing outlives the call (``vrun``).

Every seed runs on both connect paths (``FakeNetwork(path=...)``): the writer
callbacks of asyncio's selector loops and uvloop (``connect_ex``, a writer
registration, ``SO_ERROR``), and a task per attempt. The model is the same, but for
what the writer path can only do at once (see ``chaos_model``). The run ends with
the count of races checked per path.

A failure names its seed; rerun it alone with ``HAPPYDIAL_CHAOS_SEEDS=123 pytest
tests/test_chaos.py`` (a comma-separated list works too). ``HAPPYDIAL_SOAK=1`` runs
ten times as many seeds.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import Any

import pytest

from happydial import AddrInfoType, failed_addr_infos, start_connection
from happydial._racer import ConnectRace
from happydial.testing import FakeNetwork, FakeSocket, Path

from .chaos_model import (
    LOCAL_V4,
    LOCAL_V6,
    V6,
    WRITER_AT_ONCE,
    Addr,
    Outcome,
    Scenario,
    generate,
    model_outcomes,
)
from .conftest import CHAOS_RACES, Runner, _leftovers

SOAK = os.environ.get("HAPPYDIAL_SOAK", "") not in ("", "0")
SEEDS_PER_BLOCK = 500 * (10 if SOAK else 1)
BLOCKS = 8
_ONLY = os.environ.get("HAPPYDIAL_CHAOS_SEEDS", "")
SEED_BLOCKS: list[list[int]] = (
    [[int(s) for s in _ONLY.split(",")]]
    if _ONLY
    else [list(range(b * SEEDS_PER_BLOCK, (b + 1) * SEEDS_PER_BLOCK)) for b in range(BLOCKS)]
)


def addr_info(addr: Addr | str, port: int = 80) -> AddrInfoType:
    host = addr if isinstance(addr, str) else addr.host
    if ":" in host:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


class Observed:
    def __init__(self) -> None:
        self.launches: list[tuple[str, float]] = []
        self.result: Any = None
        self.error: BaseException | None = None
        self.end = 0.0
        self.net: FakeNetwork | None = None
        self.bugs: dict[str, ValueError] = {}
        self.start_times: dict[str, float] = {}
        self.end_times: dict[str, float] = {}
        self.path = "task"


def install(sc: Scenario, net: FakeNetwork, seen: Observed) -> None:
    """Script the fake network as the scenario says (fresh exception objects per run)."""
    for addr in sc.all_addrs():
        outcome = addr.outcome
        at_once = outcome == "unreachable_now" or (
            net.path == "writer" and outcome in WRITER_AT_ONCE
        )
        delay = 0.0 if at_once else addr.delay
        if outcome in ("connect", "refuse", "reset", "unreachable"):
            net.script(addr.host, delay=delay, outcome=outcome)  # type: ignore[arg-type]
        elif outcome == "unreachable_now":
            net.script(addr.host, outcome="unreachable", at_once=True)
        elif outcome == "runtime":
            net.script(addr.host, delay=delay, outcome=RuntimeError("fd in use"), at_once=at_once)
        elif outcome == "bug_connect":
            seen.bugs[addr.host] = ValueError(f"bug connecting to {addr.host}")
            net.script(addr.host, delay=delay, outcome=seen.bugs[addr.host], at_once=at_once)
        elif outcome == "hang":
            net.script(addr.host, outcome="hang")
        elif outcome == "factory":
            net.factory_errors[addr.host] = OSError(errno.EMFILE, "Too many open files")
        else:
            seen.bugs[addr.host] = ValueError(f"bug making a socket for {addr.host}")
            net.factory_errors[addr.host] = seen.bugs[addr.host]


def local_addr_infos(sc: Scenario, net: FakeNetwork) -> list[AddrInfoType] | None:
    if sc.local is None:
        return None
    result = []
    for family, host in ((V6, LOCAL_V6), (socket.AF_INET, LOCAL_V4)):
        mode = sc.local[family]
        if mode == "missing":
            continue
        if mode == "bind":
            net.bind_errors[host] = OSError(errno.EADDRINUSE, "Address already in use")
        result.append(addr_info(host, 0))
    return result


WATCHDOG = 10_000.0  # virtual seconds: a race still running then never ends


async def run_real(sc: Scenario, path: Path) -> Observed:
    """Play *sc* on the running virtual loop; times are relative to the call's start."""
    seen = Observed()
    loop = asyncio.get_running_loop()
    base = loop.time()
    net = FakeNetwork(loop, path=path)
    seen.net = net
    seen.path = path
    install(sc, net, seen)
    local = local_addr_infos(sc, net)

    def factory(info: AddrInfoType) -> socket.socket:
        seen.launches.append((info[4][0], loop.time() - base))
        return net.socket_factory(info)

    handles: list[asyncio.Handle] = []
    coro: Any
    if sc.race_mode:
        race = ConnectRace(
            loop,
            sc.delay,
            local_addr_infos=local,
            socket_factory=factory,
            attempt_timeout=sc.attempt_timeout,
            max_in_flight=sc.max_in_flight,
        )
        race.keep_feeding()
        race.add([addr_info(a) for a in sc.addrs])
        for i, (at, batch) in enumerate(sc.batches):
            last = i == len(sc.batches) - 1 and sc.stop_at is None
            items = [addr_info(a) for a in batch]
            handles.append(loop.call_at(base + at, feed, race, items, last))
        if sc.stop_at is not None:
            handles.append(loop.call_at(base + sc.stop_at, race.stop_feeding))
        coro = race.connect(all_errors=sc.all_errors)
    else:
        coro = start_connection(
            [addr_info(a) for a in sc.addrs],
            local_addr_infos=local,
            happy_eyeballs_delay=sc.delay,
            interleave=sc.interleave,
            socket_factory=factory,
            attempt_timeout=sc.attempt_timeout,
            all_errors=sc.all_errors,
            max_in_flight=sc.max_in_flight,
        )
    task = loop.create_task(coro)
    if sc.cancel_at is not None:
        handles.append(loop.call_at(base + sc.cancel_at, task.cancel))
    watchdog = loop.call_at(base + WATCHDOG, task.cancel)
    try:
        result = await task
    except BaseException as exc:  # CancelledError included: the caller's
        seen.error = exc
    else:
        seen.result = result[0] if sc.race_mode else result
    finally:
        seen.end = loop.time() - base
        watchdog.cancel()
        for handle in handles:
            handle.cancel()
    assert seen.end < WATCHDOG, "the race never ended"
    seen.start_times = {h: t - base for h, t in net.start_times.items()}
    seen.end_times = {h: t - base for h, t in net.end_times.items()}
    return seen


def feed(race: ConnectRace, items: list[AddrInfoType], last: bool) -> None:
    race.add(items)
    if last:
        race.stop_feeding()


def observed_result(sc: Scenario, seen: Observed) -> tuple[object, ...]:
    error = seen.error
    if error is None:
        assert isinstance(seen.result, FakeSocket), seen.result
        return ("win", seen.result.addr_info[4][0])
    if isinstance(error, asyncio.CancelledError):
        return ("cancel",)
    if isinstance(error, ValueError) and not isinstance(error, BaseExceptionGroup):
        host = next(h for h, bug in seen.bugs.items() if bug is error)
        return ("bug", host)
    assert isinstance(error, (OSError, RuntimeError, ExceptionGroup)), repr(error)
    group = error if isinstance(error, ExceptionGroup) else error.__cause__
    if not seen.launches:
        assert str(error) == "no addresses to connect to"
        return ("fail", type(error).__name__, getattr(error, "errno", None), ())
    assert isinstance(group, ExceptionGroup), repr(error)
    per = tuple(
        (info[4][0], type(e).__name__, getattr(e, "errno", None))
        for info, e in zip(failed_addr_infos(error), group.exceptions, strict=True)
    )
    # Every attempt failed: each error is tagged with its address, in start order.
    assert [h for h, _, _ in per] == [h for h, _ in seen.launches]
    return ("fail", type(error).__name__, getattr(error, "errno", None), per)


def check_sockets(sc: Scenario, seen: Observed) -> None:
    net = seen.net
    assert net is not None
    winner = seen.result
    for sock in net.sockets:
        expected = 0 if sock is winner else 1
        assert sock.close_count == expected, (sock.addr_info, sock.close_count, winner)
    hosts = [h for h, _ in seen.launches]
    assert len(set(hosts)) == len(hosts), "an address was tried twice"
    made = [s.addr_info[4][0] for s in net.sockets]
    factory_failed = {a.host for a in sc.all_addrs() if a.outcome in ("factory", "bug_factory")}
    assert made == [h for h in hosts if h not in factory_failed]
    if winner is not None:
        assert not winner.getblocking()
        winner.close()
        assert winner.close_count == 1
    assert net.open_sockets == []


def matches(outcome: Outcome, seen: Observed, result: tuple[object, ...]) -> bool:
    starts, expected_result, end, ends = outcome
    launches = tuple((h, round(t, 6)) for h, t in seen.launches)
    if (starts, expected_result, end) != (launches, result, round(seen.end, 6)):
        return False
    model_ends = dict(ends)
    starts_by_host = dict(launches)
    for host, t in seen.end_times.items():
        if model_ends.get(host) != round(t, 6):
            return False
    # A connect that never ran was aborted in the instant it was launched.
    return all(
        host in seen.end_times or t == starts_by_host[host] for host, t in model_ends.items()
    )


def check(seed: int, sc: Scenario, expected: frozenset[Outcome], seen: Observed) -> None:
    result = None
    try:
        result = observed_result(sc, seen)
        check_sockets(sc, seen)
        launched = dict(seen.launches)
        for host, t in seen.start_times.items():
            assert t == launched[host], "a connect began later than its attempt"
        if sc.cancel_at is not None:
            assert seen.end <= sc.cancel_at + 1e-9, "the call outlived the caller's cancellation"
        assert any(matches(o, seen, result) for o in expected), "no model outcome matches"
    except AssertionError as exc:
        observed = (
            tuple((h, round(t, 6)) for h, t in seen.launches),
            result,
            round(seen.end, 6),
            sorted((h, round(t, 6)) for h, t in seen.end_times.items()),
        )
        pytest.fail(
            f"chaos seed {seed} failed: {exc}\n"
            f"rerun: HAPPYDIAL_CHAOS_SEEDS={seed} pytest tests/test_chaos.py -k {seen.path}\n"
            f"{sc.describe()}\nobserved: {observed}\nmodel:\n"
            + "\n".join(f"  {o}" for o in sorted(expected, key=repr)[:8])
        )


def run_seeds(vrun: Runner[Any], seeds: list[int], path: Path) -> None:
    """Run the seeds' races one after another on one virtual loop, each checked alone."""
    cases = [(seed, generate(seed)) for seed in seeds]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for seed, sc in cases:
            expected = model_outcomes(sc, path)
            seen = await run_real(sc, path)
            problems = _leftovers(loop)  # the vrun guard, after every race
            assert not problems, f"seed {seed} left things behind: {problems}"
            check(seed, sc, expected, seen)
            CHAOS_RACES[path] += 1

    vrun(main)


@pytest.mark.parametrize("path", ["writer", "task"])
@pytest.mark.parametrize("seeds", SEED_BLOCKS, ids=lambda s: f"seeds{s[0]}-{s[-1]}")
def test_chaos(vrun: Runner[Any], seeds: list[int], path: Path) -> None:
    run_seeds(vrun, seeds, path)


def test_generator_covers_the_interesting_cases() -> None:
    """The seeds of one block hit every fault, ties, mid-race adds and cancellations."""
    scenarios = [generate(seed) for seed in SEED_BLOCKS[0]]
    outcomes = {a.outcome for sc in scenarios for a in sc.all_addrs()}
    assert outcomes >= {
        "connect",
        "refuse",
        "reset",
        "unreachable",
        "unreachable_now",
        "runtime",
        "hang",
        "factory",
        "bug_factory",
        "bug_connect",
    }
    if _ONLY:
        return
    assert sum(sc.race_mode for sc in scenarios) > 30
    assert sum(sc.cancel_at is not None for sc in scenarios) > 30
    assert sum(sc.local is not None for sc in scenarios) > 30
    assert {sc.delay for sc in scenarios} >= {None, 0.0, 0.05, 0.25}
    ambiguous = sum(len(model_outcomes(sc)) > 1 for sc in scenarios)
    assert ambiguous > 0
