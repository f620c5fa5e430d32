"""Shared fixtures: loops to run on, and guards that fail tests that leak or hide errors.

Every async test body runs through :func:`_run_checked`, which fails the test if a
task, a timer, a ready callback or a reader/writer registration is still on the
loop when the body returns (asyncio's loops are read directly; uvloop's are counted
through wrappers, see :func:`_track_registrations`), and pytest's
``filterwarnings = error`` turns an unclosed socket's ``ResourceWarning`` into a
failure too. Closing a socket that a fixture loop still watches fails the test at
once (:func:`_close_checked`).

Every loop of every test (ours, ``run_virtual``'s, ``asyncio.run``'s, uvloop's)
reports to :func:`_loop_error`: an exception raised inside a loop callback, or a
"Task exception was never retrieved", fails the test instead of only being logged.
Under ``CI=true``, :func:`require` turns a skip for a missing piece of the test
machine (uvloop, IPv6 loopback) into a failure, as the network lab's fixture does.
A test that hangs fails after the per-test timeout (pyproject: pytest-timeout).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
import os
import selectors
import socket
import sys
import weakref
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings

import happydial._ipv6only
import happydial._sources
from happydial import AddrInfoType, SourceAddressCache
from happydial.testing import VirtualClockLoop

from .integration_helpers import has_ipv6_loopback
from .lab.netns import Lab, LabUnavailableError

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
CI = os.environ.get("CI") == "true"


def machine_has(condition: bool, reason: str) -> bool:
    """*condition*, a thing the test machine must have; under ``CI=true``, false fails.

    For uvloop and IPv6 loopback: in CI, a test that silently skipped or shrank
    without them would drop the coverage it exists for.
    """
    if not condition and CI:
        pytest.fail(f"CI must run this test, but: {reason}")
    return condition


def require(condition: bool, reason: str) -> None:
    """Skip the test when *condition* is false; under ``CI=true``, fail it instead."""
    if not machine_has(condition, reason):
        pytest.skip(reason)


@pytest.fixture
def ipv6_loopback() -> None:
    """Skip a test that needs ``::1`` where there is none; fail it under ``CI=true``."""
    require(has_ipv6_loopback(), "no IPv6 loopback (::1 cannot be bound)")


# -- loop errors -------------------------------------------------------------------

# What loops reported to their exception handler during the current test.
_loop_errors: list[str] = []
# Loop -> what to do at once when it reports (stop the test body: a race that lost
# an outcome to a callback error would otherwise hang until the timeout).
_on_loop_error: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Callable[[], object]] = (
    weakref.WeakKeyDictionary()
)


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    message = context.get("message", context)
    _loop_errors.append(f"{message}: {exc!r}" if exc else str(message))
    stop = _on_loop_error.get(loop)
    if stop is not None:
        stop()


def _patch_exception_handlers() -> None:
    """Route every loop's ``call_exception_handler`` through :func:`_loop_error`.

    On the classes, not per loop, so loops the tests make themselves are covered
    too. The original still runs (the error stays in the captured log).
    """
    classes: list[Any] = [asyncio.BaseEventLoop]
    if uvloop is not None:
        classes.append(uvloop.Loop)  # uvloop calls it through the Python attribute too
    for cls in classes:
        original = cls.call_exception_handler

        def call_exception_handler(
            self: asyncio.AbstractEventLoop, context: dict[str, Any], _original: Any = original
        ) -> None:
            _loop_error(self, context)
            _original(self, context)

        cls.call_exception_handler = call_exception_handler


_patch_exception_handlers()


def _fail_on_loop_errors() -> None:
    if _loop_errors:
        errors = "\n".join(_loop_errors)
        _loop_errors.clear()
        pytest.fail("the loop's exception handler was called:\n" + errors)


@pytest.fixture(autouse=True)
def _no_loop_errors() -> Iterator[None]:
    """Fail any test during which a loop called its exception handler."""
    _loop_errors.clear()
    yield
    gc.collect()  # a task whose exception was never retrieved reports when collected
    _fail_on_loop_errors()


# -- leftovers ---------------------------------------------------------------------

_EVENTS = {selectors.EVENT_READ: "reader", selectors.EVENT_WRITE: "writer"}


def _track_registrations(loop: asyncio.AbstractEventLoop) -> None:
    """Count uvloop's reader/writer registrations (it has no selector map to read)."""
    registered: dict[tuple[str, int], object] = {}
    for kind in ("reader", "writer"):
        add, remove = getattr(loop, f"add_{kind}"), getattr(loop, f"remove_{kind}")

        def add_fd(fd: Any, callback: Any, *args: Any, _add: Any = add, _kind: str = kind) -> None:
            key = (_kind, fd if isinstance(fd, int) else fd.fileno())
            if key in registered:
                # Nothing in this suite watches one descriptor twice: the first
                # watcher's descriptor was closed without remove_*, and its number
                # reused. uvloop then modifies the stale watcher, and the new
                # descriptor is never watched: fail now rather than hang.
                message = f"{_kind} on fd {key[1]} registered again without remove_{_kind}"
                _loop_error(loop, {"message": f"{message}; it was {registered[key]!r}"})
            _add(fd, callback, *args)
            registered[key] = callback

        def remove_fd(fd: Any, _remove: Any = remove, _kind: str = kind) -> bool:
            registered.pop((_kind, fd if isinstance(fd, int) else fd.fileno()), None)
            return bool(_remove(fd))

        setattr(loop, f"add_{kind}", add_fd)
        setattr(loop, f"remove_{kind}", remove_fd)
    loop._happydial_registered = registered  # type: ignore[attr-defined]
    _track_callbacks(loop)


def _track_callbacks(loop: asyncio.AbstractEventLoop) -> None:
    """Count uvloop's scheduled callbacks and timers (it keeps them out of Python's view).

    Every handle that ``call_soon``, ``call_later`` or ``call_at`` returns is
    remembered until its callback runs; one neither run nor cancelled is a leftover.
    """
    pending: dict[asyncio.Handle, tuple[str, object]] = {}
    for name, at in (("call_soon", 0), ("call_later", 1), ("call_at", 1)):
        schedule = getattr(loop, name)
        kind = "callback left ready" if at == 0 else "timer left scheduled"

        def tracked(
            *args: Any, _schedule: Any = schedule, _at: int = at, _kind: str = kind, **kw: Any
        ) -> Any:
            callback = args[_at]
            cell: list[asyncio.Handle] = []

            @functools.wraps(callback)
            def run(*cb_args: Any) -> Any:
                pending.pop(cell[0], None)
                return callback(*cb_args)

            handle = _schedule(*args[:_at], run, *args[_at + 1 :], **kw)
            cell.append(handle)
            pending[handle] = (_kind, callback)
            return handle

        setattr(loop, name, tracked)
    loop._happydial_pending = pending  # type: ignore[attr-defined]


def _watchers(loop: asyncio.AbstractEventLoop, fd: int) -> dict[str, object]:
    """What *loop* does when *fd* is ready: kind ("reader", "writer") -> callback."""
    selector = getattr(loop, "_selector", None)
    if selector is not None:
        key = selector.get_map().get(fd)
        handles = zip(("reader", "writer"), key.data if key is not None else (), strict=False)
        return {kind: handle for kind, handle in handles if handle is not None}
    registered = getattr(loop, "_happydial_registered", {})
    return {
        kind: registered[(kind, fd)] for kind in ("reader", "writer") if (kind, fd) in registered
    }


# The fixtures' loops, for the close() check below.
_tracked_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_close_socket = socket.socket.close


def _close_checked(sock: socket.socket) -> None:
    """``socket.close``, failing the test if one of our loops still watches the fd.

    Closing a watched descriptor is the bug (a missing ``remove_writer``). asyncio
    then fails later on a bad descriptor, and uvloop (libuv) aborts the whole process
    at its next poll, with no test report. So the watcher is removed first, and the
    error fails the test (and stops its body) at once, naming the callback.
    """
    fd = sock.fileno()
    for loop in list(_tracked_loops) if fd >= 0 else ():
        if loop.is_closed():  # what it watched is gone with it
            _tracked_loops.discard(loop)
            continue
        for kind, callback in _watchers(loop, fd).items():
            _loop_error(
                loop, {"message": f"fd {fd} closed while its {kind} is registered: {callback!r}"}
            )
            getattr(loop, f"remove_{kind}")(fd)
    _close_socket(sock)


socket.socket.close = _close_checked  # type: ignore[method-assign,assignment]


def _registrations(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Readers and writers still registered on *loop*, but its own wake-up pipe."""
    selector = getattr(loop, "_selector", None)
    if selector is not None:  # asyncio's selector loops (the virtual one too)
        own = loop._ssock.fileno()  # type: ignore[attr-defined]
        return [
            f"{_EVENTS.get(key.events, 'reader and writer')} left registered on fd"
            f" {key.fd}: {key.data!r}"
            for key in list(selector.get_map().values())
            if key.fd != own
        ]
    registered = getattr(loop, "_happydial_registered", {})
    return [f"{kind} left registered on fd {fd}: {cb!r}" for (kind, fd), cb in registered.items()]


def _leftovers(loop: asyncio.AbstractEventLoop) -> list[str]:
    current = asyncio.current_task()
    problems = [f"task left running: {t!r}" for t in asyncio.all_tasks(loop) if t is not current]
    scheduled = getattr(loop, "_scheduled", [])  # asyncio's loops; uvloop keeps its own
    problems += [f"timer left scheduled: {h!r}" for h in scheduled if not h.cancelled()]
    ready = getattr(loop, "_ready", [])
    problems += [f"callback left ready: {h!r}" for h in ready if not h.cancelled()]
    pending = getattr(loop, "_happydial_pending", {})  # uvloop's, counted
    problems += [f"{kind}: {cb!r}" for h, (kind, cb) in pending.items() if not h.cancelled()]
    return problems + _registrations(loop)


def _run_checked(loop: asyncio.AbstractEventLoop, main: Callable[[], Awaitable[T]]) -> T:
    async def wrapper() -> T:
        result = await main()
        problems = _leftovers(loop)
        if problems:
            pytest.fail("the call left things behind:\n" + "\n".join(problems))
        return result

    task = loop.create_task(wrapper())
    _on_loop_error[loop] = task.cancel
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        _fail_on_loop_errors()  # the body was stopped by a loop error: say which
        raise
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        gc.collect()  # surface ResourceWarnings of sockets dropped without close()
        _fail_on_loop_errors()


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        require(uvloop is not None, "uvloop is not installed")
        new_loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        _track_registrations(new_loop)
        _tracked_loops.add(new_loop)
        return new_loop
    if kind.endswith("eager") and not EAGER:
        pytest.skip("the eager task factory needs Python 3.12+")
    loop = VirtualClockLoop() if kind.startswith("virtual") else asyncio.new_event_loop()
    if kind.endswith("eager"):
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    _tracked_loops.add(loop)
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
    # And a NAT64 discovery of its own: nothing one test discovered (or configured)
    # through connect()'s default is seen by the next.
    monkeypatch.setattr(happydial._ipv6only, "_DEFAULT", happydial.Nat64Discovery())


@pytest.fixture(autouse=True, scope="session")
def _warm_up_uvloop() -> None:
    """uvloop opens process-wide descriptors on first use; do that before fd counting."""
    if uvloop is not None:
        loop = uvloop.new_event_loop()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Soak runs (``HAPPYDIAL_SOAK=1``) are ten times longer: so is their timeout."""
    if os.environ.get("HAPPYDIAL_SOAK", "") not in ("", "0"):
        for item in items:
            item.add_marker(pytest.mark.timeout(600))


# Races the chaos tests ran, per connect path (see tests/test_chaos.py).
CHAOS_RACES: collections.Counter[str] = collections.Counter()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many chaos races each connect path ran (a path with none is a lost check)."""
    if CHAOS_RACES:
        counts = ", ".join(f"{n} on the {path} path" for path, n in sorted(CHAOS_RACES.items()))
        terminalreporter.write_line(f"chaos: {sum(CHAOS_RACES.values())} races checked: {counts}")


# -- the network lab (tests/lab/), shared by every test_lab*.py file ---------------------


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The one network lab of the session (root only; a failure under ``CI=true``)."""
    try:
        the_lab = Lab.start()
    except LabUnavailableError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the network lab must run in CI, but: {exc}")
        pytest.skip(f"network lab unavailable: {exc}")
    try:
        yield the_lab
    finally:
        the_lab.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    """The loop a lab client runs its calls on."""
    if request.param == "uvloop":
        require(uvloop is not None, "uvloop is not installed")
    name: str = request.param
    return name
