"""Shared fixtures: loops to run on, and a guard that fails tests that leak.

Every async test body runs through :func:`_run_checked`, which fails the test if a
task, a timer or a ready callback is still on the loop when the body returns, and
pytest's ``filterwarnings = error`` turns an unclosed socket's ``ResourceWarning``
into a failure too.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings

import happydial._sources
from happydial import AddrInfoType, SourceAddressCache
from happydial.testing import VirtualClockLoop

# In CI, property tests draw the same examples on every run, so a red CI is
# reproducible from its log; run locally, they explore new inputs each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

T = TypeVar("T")
Runner = Callable[[Callable[[], Awaitable[T]]], T]

uvloop: Any
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a test dependency on CPython/Unix
    uvloop = None

EAGER = sys.version_info >= (3, 12)


def _leftovers(loop: asyncio.AbstractEventLoop) -> list[str]:
    current = asyncio.current_task()
    problems = [f"task left running: {t!r}" for t in asyncio.all_tasks(loop) if t is not current]
    scheduled = getattr(loop, "_scheduled", [])  # asyncio's loops; uvloop keeps its own
    problems += [f"timer left scheduled: {h!r}" for h in scheduled if not h.cancelled()]
    ready = getattr(loop, "_ready", [])
    problems += [f"callback left ready: {h!r}" for h in ready if not h.cancelled()]
    return problems


def _run_checked(loop: asyncio.AbstractEventLoop, main: Callable[[], Awaitable[T]]) -> T:
    async def wrapper() -> T:
        result = await main()
        problems = _leftovers(loop)
        if problems:
            pytest.fail("the call left things behind:\n" + "\n".join(problems))
        return result

    try:
        return loop.run_until_complete(wrapper())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        gc.collect()  # surface ResourceWarnings of sockets dropped without close()


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        if uvloop is None:  # pragma: no cover - uvloop is a test dependency
            pytest.skip("uvloop is not installed")
        new_loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return new_loop
    if kind.endswith("eager") and not EAGER:
        pytest.skip("the eager task factory needs Python 3.12+")
    loop = VirtualClockLoop() if kind.startswith("virtual") else asyncio.new_event_loop()
    if kind.endswith("eager"):
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


@pytest.fixture(params=["asyncio", "uvloop", "asyncio-eager"])
def run(request: pytest.FixtureRequest) -> Runner[Any]:
    """Run an async function on a real loop: asyncio, uvloop, and asyncio with eager tasks."""
    kind: str = request.param
    return lambda main: _run_checked(_new_loop(kind), main)


@pytest.fixture(params=["virtual", "virtual-eager"])
def vrun(request: pytest.FixtureRequest) -> Runner[Any]:
    """Run an async function on a fresh virtual-clock loop (plain and eager tasks)."""
    kind: str = request.param
    return lambda main: _run_checked(_new_loop(kind), main)


def open_fds() -> set[int]:
    """The descriptors this process has open now."""
    return {int(path.name) for path in Path("/proc/self/fd").iterdir()}


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail the test if it leaves descriptors open."""
    gc.collect()
    before = open_fds()
    yield
    gc.collect()
    leaked = open_fds() - before
    assert not leaked, f"descriptors left open: {sorted(leaked)}"


def documentation_source(addr_info: AddrInfoType) -> str:
    """A source address for *addr_info* as on a dual-stack host with global addresses.

    connect() orders answers by RFC 6724 with the source the kernel would choose;
    the test machine's own addresses (a ULA-only IPv6 here, none elsewhere) must not
    decide what the tests see. Loopback destinations keep their own loopback source.
    """
    host: str = addr_info[4][0]
    if host in ("::1", "127.0.0.1") or host.startswith("127."):
        return host
    return "2001:db8:ffff::1" if addr_info[0] == socket.AF_INET6 else "198.51.100.1"


@pytest.fixture(autouse=True)
def _hermetic_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees the same source addresses, whatever this host's network is."""
    monkeypatch.setattr(
        happydial._sources, "_DEFAULT", SourceAddressCache(probe=documentation_source)
    )


@pytest.fixture(autouse=True, scope="session")
def _warm_up_uvloop() -> None:
    """uvloop opens process-wide descriptors on first use; do that before fd counting."""
    if uvloop is not None:
        loop = uvloop.new_event_loop()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
