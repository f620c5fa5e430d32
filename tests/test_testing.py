"""The shipped test helpers: the virtual clock loop and the fake network."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from happydial.testing import FakeNetwork, VirtualClockLoop, run_virtual


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
