"""The shipped test helpers: the virtual clock loop and the fake network."""

from __future__ import annotations

import asyncio
import errno
import inspect
import operator
import socket
import threading
from typing import Any

import pytest

from happydial import AddrInfoType, start_connection
from happydial.testing import FakeNetwork, FakeSocket, Outcome, VirtualClockLoop, run_virtual

from . import conftest
from .conftest import Runner


def test_virtual_time_jumps_to_the_next_timer() -> None:
    async def main() -> float:
        await asyncio.sleep(3600)
        return asyncio.get_running_loop().time()

    assert run_virtual(main) == 3600.0


def test_real_io_still_works_and_takes_no_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        receiving = asyncio.ensure_future(loop.sock_recv(a, 1))
        await asyncio.sleep(0)  # now waiting on the selector
        b.send(b"x")
        assert await receiving == b"x"
        # Watching one descriptor for reading and writing modifies its registration.
        loop.add_reader(a.fileno(), lambda: None)
        loop.add_writer(a.fileno(), lambda: None)
        loop.remove_reader(a.fileno())
        loop.remove_writer(a.fileno())
        a.close()
        b.close()
        return loop.time()

    assert run_virtual(main) == 0.0


def test_threads_wake_an_idle_loop() -> None:
    async def main() -> int:
        def slow() -> int:
            threading.Event().wait(0.05)  # the loop goes idle meanwhile
            return 42

        return await asyncio.get_running_loop().run_in_executor(None, slow)

    assert run_virtual(main) == 42


def test_a_deadlock_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("happydial.testing._REAL_WAIT_LIMIT", 0.01)

    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(RuntimeError, match="virtual clock loop deadlocked"):
        run_virtual(main)


def test_task_factory_is_installed() -> None:
    seen: list[str] = []

    def factory(
        loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object
    ) -> asyncio.Task[object]:
        seen.append("made")
        return asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]

    async def main() -> None:
        await asyncio.get_running_loop().create_task(asyncio.sleep(1))

    run_virtual(main, task_factory=factory)
    assert seen


def test_advance_ignores_negative() -> None:
    loop = VirtualClockLoop()
    loop.advance(-1)
    loop.advance(2.5)
    assert loop.time() == 2.5
    loop.close()


def test_fake_network_records_and_scripts() -> None:
    threads = threading.active_count()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script("192.0.2.1", delay=0.5, outcome="reset")
        sock = net.socket_factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 80)))
        with pytest.raises(ConnectionResetError):
            await loop.sock_connect(sock, ("192.0.2.1", 80))
        assert net.start_times == {"192.0.2.1": 0.0}
        assert net.end_times == {"192.0.2.1": 0.5}
        assert net.open_sockets == [sock]
        sock.close()
        assert net.open_sockets == []

    run_virtual(main)
    assert threading.active_count() == threads, "run_virtual left a thread behind"


# ---------------------------------------------------------------------------
# FakeNetwork on the writer path: connect_ex, a writer registration, SO_ERROR
# ---------------------------------------------------------------------------

V4_INFO: AddrInfoType = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 80))


def writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> asyncio.Future[float]:
    """A future set to the loop time at which *sock* turns writable (as the racer waits)."""
    done: asyncio.Future[float] = loop.create_future()

    def on_writable() -> None:
        loop.remove_writer(sock.fileno())
        done.set_result(loop.time())

    loop.add_writer(sock.fileno(), on_writable)
    return done


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        ("connect", 0),
        ("refuse", errno.ECONNREFUSED),
        ("unreachable", errno.ENETUNREACH),
        ("reset", errno.ECONNRESET),
    ],
)
def test_writer_path_scripts_writability_and_so_error(
    vrun: Runner[Any], outcome: Outcome, code: int
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop, path="writer")
        net.script("192.0.2.1", delay=0.5, outcome=outcome)
        sock = net.socket_factory(V4_INFO)
        assert isinstance(sock, FakeSocket)
        assert (sock.family, sock.type, sock.proto) == (socket.AF_INET, socket.SOCK_STREAM, 6)
        assert sock.connect_ex(("192.0.2.1", 80)) == errno.EINPROGRESS
        assert sock.connect_address == ("192.0.2.1", 80)
        # In flight: the kernel's SO_ERROR is 0 and the socket is not writable.
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert await writable(loop, sock) == 0.5
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == code
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # reading clears it
        assert net.start_times == {"192.0.2.1": 0.0}
        assert net.end_times == {"192.0.2.1": 0.5}
        # Other options are the real socket's.
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) > 0
        assert len(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4)) == 4
        sock.close()
        assert net.open_sockets == []
        assert sock.close_count == 1

    vrun(main)


def test_writer_path_at_once_outcomes(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop, path="writer")
        bug = ValueError("bad sockaddr")
        net.script("192.0.2.1", outcome="unreachable", at_once=True)
        net.script("192.0.2.2", outcome="connect", at_once=True)
        net.script("192.0.2.3", outcome=bug, at_once=True)
        await asyncio.sleep(1)
        codes = []
        for host in ("192.0.2.1", "192.0.2.2"):
            sock = net.socket_factory((*V4_INFO[:4], (host, 80)))
            codes.append(sock.connect_ex((host, 80)))
            sock.close()
        sock = net.socket_factory((*V4_INFO[:4], ("192.0.2.3", 80)))
        with pytest.raises(ValueError, match="bad sockaddr") as info:
            sock.connect_ex(("192.0.2.3", 80))
        assert info.value is bug
        sock.close()
        assert codes == [errno.ENETUNREACH, 0]
        assert net.start_times == dict.fromkeys(("192.0.2.1", "192.0.2.2", "192.0.2.3"), 1.0)
        assert net.end_times == net.start_times

    vrun(main)


def test_writer_path_close_ends_a_connect_in_flight(vrun: Runner[Any]) -> None:
    # Closing stops the scripted timer (the leak guard would see it) and records the end.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop, path="writer")
        net.script("*", delay=5.0)
        net.script("192.0.2.2", outcome="hang")
        pending = net.socket_factory(V4_INFO)
        hanging = net.socket_factory((*V4_INFO[:4], ("192.0.2.2", 80)))
        assert pending.connect_ex(("192.0.2.1", 80)) == errno.EINPROGRESS
        assert hanging.connect_ex(("192.0.2.2", 80)) == errno.EINPROGRESS
        await asyncio.sleep(0.25)
        pending.close()
        hanging.close()
        assert net.end_times == {"192.0.2.1": 0.25, "192.0.2.2": 0.25}

    vrun(main)


def test_writer_path_on_every_real_loop(run: Runner[Any]) -> None:
    # asyncio's selector loop and uvloop both take the writer path, and the fake's
    # writability reaches their writer callbacks at the scripted time.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop, path="writer")
        net.script("2001:db8::1", outcome="hang")
        net.script("192.0.2.1", delay=0.05)
        start = loop.time()
        sock = await start_connection(
            [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 80, 0, 0)), V4_INFO],
            happy_eyeballs_delay=0.02,
            socket_factory=net.socket_factory,
        )
        elapsed = loop.time() - start
        assert isinstance(sock, FakeSocket)
        assert sock.connect_address == ("192.0.2.1", 80)
        assert 0.069 <= elapsed < 1.0  # 20 ms delay, then 50 ms; uvloop's clock is in ms
        assert [s.close_count for s in net.sockets] == [1, 0]
        sock.close()

    run(main)


def test_task_path_at_once_outcomes(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script("192.0.2.1", outcome="refuse", at_once=True)
        net.script("192.0.2.2", at_once=True)
        refused = net.socket_factory(V4_INFO)
        with pytest.raises(ConnectionRefusedError):
            await loop.sock_connect(refused, ("192.0.2.1", 80))
        connected = net.socket_factory((*V4_INFO[:4], ("192.0.2.2", 80)))
        await loop.sock_connect(connected, ("192.0.2.2", 80))
        assert loop.time() == 0.0
        refused.close()
        connected.close()

    vrun(main)


def test_fake_network_arguments(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(ValueError, match="path must be 'writer' or 'task', got 'fast'"):
            FakeNetwork(loop, path="fast")  # type: ignore[arg-type]
        net = FakeNetwork(loop, path="writer")
        with pytest.raises(ValueError, match=r"at_once means no delay, got delay=0\.5"):
            net.script("192.0.2.1", delay=0.5, at_once=True)
        with pytest.raises(ValueError, match="on the writer path an exception is raised by"):
            net.script("192.0.2.1", delay=0.5, outcome=RuntimeError("fd in use"))
        FakeNetwork(loop)  # the task path replaces loop.sock_connect...
        with pytest.raises(ValueError, match="path='writer' needs a loop that connects"):
            FakeNetwork(loop, path="writer")  # ...and then the racer would not use writers

    vrun(main)


def test_fake_network_signature_has_no_private_fields() -> None:
    params = inspect.signature(FakeNetwork).parameters
    assert list(params)[:2] == ["loop", "path"]
    assert params["path"].default == "task"
    assert not [name for name in params if name.startswith("_")]
    loop = VirtualClockLoop()
    assert "_scripts" not in repr(FakeNetwork(loop))
    loop.close()


# ---------------------------------------------------------------------------
# The suite's own guards (tests/conftest.py): each must fail a test that breaks it
# ---------------------------------------------------------------------------


def test_guard_a_callback_error_fails_the_test_at_once(run: Runner[Any]) -> None:
    # The body would wait forever for a result that the failed callback never sets:
    # the guard stops it at once, and names the error.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        never: asyncio.Future[None] = loop.create_future()
        loop.call_soon(operator.truediv, 1, 0)
        await never

    with pytest.raises(
        pytest.fail.Exception, match=r"(?s)exception handler was called.*ZeroDivisionError"
    ):
        run(main)


def test_guard_an_unretrieved_task_exception_fails_the_test(run: Runner[Any]) -> None:
    async def fails() -> None:
        raise KeyError("lost")

    async def main() -> None:
        asyncio.get_running_loop().create_task(fails())
        await asyncio.sleep(0)

    with pytest.raises(pytest.fail.Exception, match="Task exception was never retrieved"):
        run(main)


def test_guard_a_loop_of_our_own_reports_at_teardown() -> None:
    # A loop no fixture made (asyncio.run, run_virtual) reports too; the autouse
    # fixture fails the test at teardown. Here the report is read and cleared first.
    loop = VirtualClockLoop()
    loop.call_soon(operator.truediv, 1, 0)
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    assert len(conftest._loop_errors) == 1
    assert "ZeroDivisionError" in conftest._loop_errors.pop()


def test_guard_a_writer_left_registered_fails_the_test(run: Runner[Any]) -> None:
    a, b = socket.socketpair()

    async def main() -> None:
        asyncio.get_running_loop().add_writer(a.fileno(), lambda: None)

    with (
        a,
        b,
        pytest.raises(pytest.fail.Exception, match=f"writer left registered on fd {a.fileno()}"),
    ):
        run(main)


def test_guard_a_reused_fd_registered_again_fails_on_uvloop() -> None:
    conftest.require(conftest.uvloop is not None, "uvloop is not installed")
    loop = conftest._new_loop("uvloop")
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_writer(fd, lambda: None)  # as if its socket were then closed unwatched...
    [left] = conftest._registrations(loop)
    assert left.startswith(f"writer left registered on fd {fd}: <function")
    loop.add_writer(fd, lambda: None)  # ...and its number reused
    loop.remove_writer(fd)
    assert conftest._registrations(loop) == []
    loop.close()
    a.close()
    b.close()
    assert len(conftest._loop_errors) == 1
    assert conftest._loop_errors.pop().startswith(
        f"writer on fd {fd} registered again without remove_writer; it was"
    )


def test_guard_closing_a_watched_socket_fails_on_uvloop() -> None:
    # libuv would abort the process at its next poll: the watcher goes first.
    conftest.require(conftest.uvloop is not None, "uvloop is not installed")
    loop = conftest._new_loop("uvloop")
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_writer(fd, lambda: None)
    a.close()
    assert conftest._registrations(loop) == []
    loop.run_until_complete(asyncio.sleep(0))  # polls: no abort
    loop.close()
    b.close()
    assert len(conftest._loop_errors) == 1
    assert conftest._loop_errors.pop().startswith(
        f"fd {fd} closed while its writer is registered: <function"
    )


@pytest.mark.parametrize("schedule", ["call_soon", "call_later", "call_at"])
def test_guard_a_callback_left_scheduled_fails_the_test(run: Runner[Any], schedule: str) -> None:
    # uvloop keeps its handles out of Python's view: the guard counts them itself.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        if schedule == "call_soon":
            loop.call_soon(print, "late")
        else:
            getattr(loop, schedule)(60, print, "late")

    left = "callback left ready" if schedule == "call_soon" else "timer left scheduled"
    with pytest.raises(pytest.fail.Exception, match=f"{left}: .*print"):
        run(main)
