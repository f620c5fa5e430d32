"""start_connection with real sockets on loopback, on asyncio, uvloop and eager tasks.

A dead address is a listener whose accept queue is full: the kernel drops further
SYNs to it, so a connect hangs as it would towards a black-holed host.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from happydial import AddrInfoType, failed_addr_infos, start_connection

from . import integration_helpers as helpers
from .conftest import Runner, open_fds
from .integration_helpers import ai


@pytest.fixture
def live() -> Iterator[int]:
    with helpers.listening("127.0.0.1") as srv:
        yield srv.getsockname()[1]


@pytest.fixture
def dead() -> Iterator[int]:
    with helpers.dead("127.0.0.2") as port:
        yield port


@pytest.fixture
def refused() -> Iterator[int]:
    with helpers.refusing("127.0.0.1") as port:
        yield port


def test_single_address(run: Runner[Any], live: int, no_fd_leak: None) -> None:
    async def main() -> None:
        sock = await start_connection([ai("127.0.0.1", live)], happy_eyeballs_delay=0.25)
        assert sock.getpeername() == ("127.0.0.1", live)
        assert not sock.getblocking()
        sock.close()

    run(main)


def test_dead_first_then_live(run: Runner[Any], live: int, dead: int, no_fd_leak: None) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        sock = await start_connection(
            [ai("127.0.0.2", dead), ai("127.0.0.1", live)], happy_eyeballs_delay=0.05
        )
        assert loop.time() - start >= 0.049  # uvloop's clock has 1 ms resolution
        assert sock.getpeername() == ("127.0.0.1", live)
        sock.close()

    run(main)


def test_refused_everywhere(run: Runner[Any], refused: int, no_fd_leak: None) -> None:
    async def main() -> None:
        addrs = [ai("127.0.0.1", refused), ai("127.0.0.3", refused)]
        with pytest.raises(ConnectionRefusedError) as info:
            await start_connection(addrs, happy_eyeballs_delay=0.25)
        assert info.value.errno == errno.ECONNREFUSED
        assert failed_addr_infos(info.value) == addrs

    run(main)


def test_handoff_to_create_connection(run: Runner[Any], live: int, no_fd_leak: None) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = await start_connection([ai("127.0.0.1", live)])
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=sock)
        transport.close()
        await asyncio.sleep(0)

    run(main)


@pytest.mark.parametrize("at", [0.0, 0.02, 0.07])
def test_cancellation_mid_race(
    run: Runner[Any], dead: int, refused: int, at: float, no_fd_leak: None
) -> None:
    async def main() -> None:
        addrs = [ai("127.0.0.2", dead), ai("127.0.0.2", dead), ai("127.0.0.1", refused)]
        task = asyncio.ensure_future(start_connection(addrs, happy_eyeballs_delay=0.03))
        await asyncio.sleep(at)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)


def test_socket_factory_sets_options(run: Runner[Any], live: int, no_fd_leak: None) -> None:
    def factory(addr_info: AddrInfoType) -> socket.socket:
        sock = socket.socket(addr_info[0], addr_info[1], addr_info[2])
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    async def main() -> None:
        sock = await start_connection([ai("127.0.0.1", live)], socket_factory=factory)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        sock.close()

    run(main)


def test_local_bind(run: Runner[Any], live: int, no_fd_leak: None) -> None:
    async def main() -> None:
        local = [ai("::1", 0), ai("127.0.0.5", 0)]
        sock = await start_connection([ai("127.0.0.1", live)], local_addr_infos=local)
        assert sock.getsockname()[0] == "127.0.0.5"
        sock.close()

    run(main)


class _InstantSocket(socket.socket):
    """A socket whose connect completes or fails without waiting (rare in practice)."""

    result: int | OSError = 0

    def connect_ex(self, address: Any) -> int:  # noqa: ARG002 - socket.connect_ex's signature
        if isinstance(self.result, OSError):
            raise self.result
        return self.result


@pytest.mark.parametrize(
    "result", [0, errno.ENETUNREACH, OSError(errno.EACCES, "Permission denied")]
)
def test_connect_that_ends_at_once(
    run: Runner[Any], result: int | OSError, no_fd_leak: None
) -> None:
    def factory(addr_info: AddrInfoType) -> socket.socket:
        sock = _InstantSocket(addr_info[0], addr_info[1], addr_info[2])
        sock.result = result
        return sock

    async def main() -> None:
        addr = ai("192.0.2.1", 80)
        if result == 0:
            sock = await start_connection([addr], socket_factory=factory)
            sock.close()
        else:
            with pytest.raises(OSError) as info:
                await start_connection([addr, addr], socket_factory=factory, happy_eyeballs_delay=0)
            assert len(failed_addr_infos(info.value)) == 2

    run(main)


def test_fds_back_at_baseline_after_many_races(
    run: Runner[Any], live: int, dead: int, refused: int
) -> None:
    before = open_fds()

    async def main() -> None:
        addrs = [ai("127.0.0.2", dead), ai("127.0.0.1", refused), ai("127.0.0.1", live)]
        for _ in range(20):
            sock = await start_connection(addrs, happy_eyeballs_delay=0.001, interleave=0)
            sock.close()

    run(main)
    assert open_fds() - before == set()


def test_attempt_timeout_on_real_sockets(run: Runner[Any], dead: int, no_fd_leak: None) -> None:
    async def main() -> None:
        addrs = [ai("127.0.0.2", dead), ai("127.0.0.2", dead)]
        with pytest.raises(TimeoutError, match=r"connect timed out after 0\.05 s") as info:
            await start_connection(addrs, attempt_timeout=0.05, happy_eyeballs_delay=1.0)
        assert len(failed_addr_infos(info.value)) == 2

    run(main)
