"""Test helpers: a virtual-clock event loop and a scripted fake network.

They let a test state "this address answers after 300 ms, that one is refused
after 50 ms" and then assert the exact loop time at which each attempt started,
without sleeping for real (the approach of trio's ``autojump_clock``).

* :class:`VirtualClockLoop` is a selector event loop whose clock jumps straight to
  the next scheduled timer whenever nothing is ready to run.
* :class:`FakeNetwork` scripts connection outcomes per address. Its sockets are
  real, unconnected ``socket.socket`` objects (so leak checks and
  ``ResourceWarning`` still apply) whose ``bind`` is recorded, not performed; the
  loop's ``sock_connect`` is replaced by the script.

Example::

    loop = VirtualClockLoop()
    net = FakeNetwork(loop)
    net.script("2001:db8::1", delay=10.0, outcome="hang")
    net.script("192.0.2.1", delay=0.05)
    sock = loop.run_until_complete(
        start_connection(addr_infos, happy_eyeballs_delay=0.25, socket_factory=net.socket_factory)
    )
    assert net.start_times == {"2001:db8::1": 0.0, "192.0.2.1": 0.25}
"""

from __future__ import annotations

import asyncio
import errno
import selectors
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._addresses import AddrInfoType

__all__ = ["FakeNetwork", "FakeSocket", "Outcome", "VirtualClockLoop", "run_virtual"]

Outcome = Literal["connect", "refuse", "unreachable", "reset", "hang"]

# How long (in real seconds) a virtual loop with nothing scheduled may wait for a
# thread or a real socket before it declares the test deadlocked.
_REAL_WAIT_LIMIT = 10.0


class _VirtualSelector(selectors.BaseSelector):
    """Polls the real selector without blocking, and advances the clock instead."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        """Wrap the platform's default selector, advancing *loop*'s clock."""
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:
            # Nothing is scheduled: only a thread or a real socket can wake us.
            ready = self._real.select(_REAL_WAIT_LIMIT)
            if not ready:
                raise RuntimeError(
                    "virtual clock loop deadlocked: nothing scheduled, nothing ready"
                )
            return ready
        self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop on virtual time, starting at 0.0.

    Whenever no callback is ready, time jumps to the next timer, so
    ``await asyncio.sleep(3600)`` returns at once with ``loop.time() == 3600``.
    Real I/O still works (it is polled without blocking), but it takes no virtual
    time, so tests should use :class:`FakeNetwork` rather than real sockets.
    """

    def __init__(self) -> None:
        """Create the loop with its clock at 0.0."""
        self._now = 0.0
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        """The virtual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (what the loop does by itself when idle)."""
        if seconds > 0:
            self._now += seconds


def run_virtual(main: Callable[[], Awaitable[Any]], *, task_factory: Any = None) -> Any:
    """Run ``main()`` on a fresh :class:`VirtualClockLoop`, close the loop, return the result."""
    loop = VirtualClockLoop()
    try:
        if task_factory is not None:
            loop.set_task_factory(task_factory)
        return loop.run_until_complete(main())
    finally:
        loop.close()


@dataclass
class _Script:
    delay: float
    outcome: Outcome | BaseException


class FakeSocket(socket.socket):
    """An unconnected real socket whose ``bind`` and ``connect`` are scripted."""

    network: FakeNetwork
    addr_info: AddrInfoType
    bound_to: tuple[Any, ...] | None = None
    close_count = 0

    def bind(self, address: Any) -> None:
        """Record the local address; fail if the network was told to."""
        error = self.network.bind_errors.get(address[0])
        if error is not None:
            raise error
        self.bound_to = address

    def close(self) -> None:
        """Close for real, and count it (closing twice is a bug the tests look for)."""
        self.close_count += 1
        super().close()


@dataclass
class FakeNetwork:
    """Scripted connect outcomes per host, on a (virtual-clock) loop.

    Args:
        loop: The loop to install on: its ``sock_connect`` is replaced.

    Attributes:
        start_times: Loop time at which each host's connect began.
        end_times: Loop time at which each host's connect ended (any outcome).
        sockets: Every socket made by :meth:`socket_factory`, in creation order.
        bind_errors: Host -> error raised by ``bind`` to that local address.
        factory_errors: Host -> error raised by the factory for that destination.
    """

    loop: asyncio.AbstractEventLoop
    start_times: dict[str, float] = field(default_factory=dict)
    end_times: dict[str, float] = field(default_factory=dict)
    sockets: list[FakeSocket] = field(default_factory=list)
    bind_errors: dict[str, BaseException] = field(default_factory=dict)
    factory_errors: dict[str, BaseException] = field(default_factory=dict)
    _scripts: dict[str, _Script] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Install the scripted ``sock_connect`` on the loop."""
        self.loop.sock_connect = self.sock_connect  # type: ignore[method-assign]

    def script(
        self, host: str, *, delay: float = 0.0, outcome: Outcome | BaseException = "connect"
    ) -> None:
        """Say what connecting to *host* does, and after how many seconds.

        ``"hang"`` never completes (a dead address: the SYN goes nowhere); an
        exception instance is raised as is.
        """
        self._scripts[host] = _Script(delay, outcome)

    def socket_factory(self, addr_info: AddrInfoType) -> socket.socket:
        """A ``socket_factory`` for the racer: a :class:`FakeSocket` per attempt."""
        error = self.factory_errors.get(addr_info[4][0])
        if error is not None:
            raise error
        sock = FakeSocket(addr_info[0], addr_info[1], addr_info[2])
        sock.network = self
        sock.addr_info = addr_info
        self.sockets.append(sock)
        return sock

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:  # noqa: ARG002 - loop.sock_connect's signature
        """The scripted replacement for ``loop.sock_connect``."""
        host = address[0]
        self.start_times[host] = self.loop.time()
        script = self._scripts.get(host, _Script(0.0, "hang"))
        try:
            if script.outcome == "hang":
                await self.loop.create_future()
            await asyncio.sleep(script.delay)
        finally:
            self.end_times[host] = self.loop.time()
        outcome = script.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        codes = {
            "refuse": errno.ECONNREFUSED,
            "unreachable": errno.ENETUNREACH,
            "reset": errno.ECONNRESET,
        }
        if outcome in codes:
            raise OSError(codes[outcome], f"Connect call failed {address}")

    @property
    def open_sockets(self) -> list[FakeSocket]:
        """Sockets not closed yet."""
        return [s for s in self.sockets if s.fileno() != -1]
