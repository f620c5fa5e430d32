"""Test helpers: a virtual-clock event loop and a scripted fake network.

They let a test state "this address answers after 300 ms, that one is refused
after 50 ms" and then assert the exact loop time at which each attempt started,
without sleeping for real (the approach of trio's ``autojump_clock``).

* :class:`VirtualClockLoop` is a selector event loop whose clock jumps straight to
  the next scheduled timer whenever nothing is ready to run.
* :class:`FakeNetwork` scripts connection outcomes per address, on either of the
  two ways an attempt connects (see ``happydial._sockets``):

  - ``path="writer"``, the path asyncio's selector loops and uvloop take in
    production: the socket's ``connect_ex`` answers ``EINPROGRESS`` (or an errno
    at once), the racer registers a writer callback on the loop, the socket turns
    writable at the scripted time and ``getsockopt(SOL_SOCKET, SO_ERROR)`` gives
    the scripted outcome. The loop is not touched.
  - ``path="task"`` (the default): the loop's ``sock_connect`` is replaced by the
    script, so each attempt awaits it in a task (the path of Windows' proactor
    loop and of loops with an overridden ``sock_connect``).

  Its sockets are real ``socket.socket`` objects (so leak checks and
  ``ResourceWarning`` still apply) whose ``bind`` is recorded, not performed.

Example::

    loop = VirtualClockLoop()
    net = FakeNetwork(loop, path="writer")
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
from ._sockets import uses_writer_callbacks

__all__ = ["FakeNetwork", "FakeSocket", "Outcome", "Path", "VirtualClockLoop", "run_virtual"]

#: What a scripted connect does: connect, or fail with ``ECONNREFUSED``,
#: ``ENETUNREACH`` or ``ECONNRESET``, or never answer.
Outcome = Literal["connect", "refuse", "unreachable", "reset", "hang"]
#: How :class:`FakeNetwork`'s attempts connect: ``"writer"`` (``connect_ex`` and a
#: writer callback, as on asyncio's selector loops and uvloop) or ``"task"``
#: (``loop.sock_connect`` in a task per attempt, as on other loops).
Path = Literal["writer", "task"]

# The errno each failing outcome stands for, as the kernel reports it.
_ERRNOS = {
    "connect": 0,
    "refuse": errno.ECONNREFUSED,
    "unreachable": errno.ENETUNREACH,
    "reset": errno.ECONNRESET,
}

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


@dataclass(frozen=True)
class _Script:
    delay: float
    outcome: Outcome | BaseException
    at_once: bool = False


_HANG = _Script(0.0, "hang")


class FakeSocket(socket.socket):
    """A real socket whose ``bind``, ``connect_ex`` and ``SO_ERROR`` are scripted.

    On the task path it is an unconnected socket of the destination's family. On
    the writer path its descriptor is one end of a local datagram pair that the
    network keeps unwritable until the scripted time, so a writer callback on any
    loop (the virtual one, asyncio's, uvloop) fires exactly then.

    Attributes:
        network: The :class:`FakeNetwork` that made it.
        addr_info: The destination it was made for.
        bound_to: The local address passed to ``bind``, if any.
        connect_address: The address ``connect_ex`` or ``sock_connect`` was called with.
        close_count: How many times ``close`` was called (twice is a bug).
    """

    network: FakeNetwork
    addr_info: AddrInfoType
    bound_to: tuple[Any, ...] | None = None
    connect_address: tuple[Any, ...] | None = None
    close_count = 0
    _peer: socket.socket | None = None
    _ready: asyncio.TimerHandle | None = None
    _so_error = 0
    _connecting = False

    def bind(self, address: Any) -> None:
        """Record the local address; fail if the network was told to."""
        error = self.network.bind_errors.get(address[0])
        if error is not None:
            raise error
        self.bound_to = address

    def connect_ex(self, address: Any) -> int:
        """Start the scripted connect (writer path): ``EINPROGRESS``, or the outcome at once."""
        return self.network._connect_ex(self, address)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        """``SO_ERROR`` is the scripted outcome once writable (0 before, like the kernel)."""
        if self._peer is not None and (level, optname) == (socket.SOL_SOCKET, socket.SO_ERROR):
            # Reading SO_ERROR clears it, as in the kernel.
            error, self._so_error = self._so_error, 0
            return error
        if buflen is None:
            return super().getsockopt(level, optname)
        return super().getsockopt(level, optname, buflen)

    def close(self) -> None:
        """Close for real, and count it; a connect still in flight ends now."""
        self.close_count += 1
        if self._ready is not None:
            self._ready.cancel()
            self._ready = None
        if self._connecting:
            self.network._ended(self)
        if self._peer is not None:
            self._peer.close()
        super().close()


@dataclass
class FakeNetwork:
    """Scripted connect outcomes per host, on a (virtual-clock) loop.

    Args:
        loop: The loop the attempts run on.
        path: How attempts connect: ``"writer"`` through the socket's ``connect_ex``
            and a writer callback (the path asyncio's selector loops and uvloop take
            in production; the loop must be one of those), or ``"task"`` (the
            default) through ``loop.sock_connect``, which is then replaced on the
            loop by :meth:`sock_connect`. A script means the same on both paths, at
            the same times. The writer path relies on how Linux reports the send
            buffer of an ``AF_UNIX`` datagram socket (see ``_in_flight``).

    Attributes:
        path: The path given.
        start_times: Loop time at which each host's connect began.
        end_times: Loop time at which each host's connect ended (any outcome, or
            the socket closed while it was in flight).
        sockets: Every socket made by :meth:`socket_factory`, in creation order.
        bind_errors: Host -> error raised by ``bind`` to that local address.
        factory_errors: Host -> error raised by the factory for that destination.

    Raises:
        ValueError: *path* is not ``"writer"`` or ``"task"``, or it is ``"writer"``
            and *loop* would not take that path.
    """

    loop: asyncio.AbstractEventLoop
    path: Path = "task"
    start_times: dict[str, float] = field(default_factory=dict)
    end_times: dict[str, float] = field(default_factory=dict)
    sockets: list[FakeSocket] = field(default_factory=list)
    bind_errors: dict[str, BaseException] = field(default_factory=dict)
    factory_errors: dict[str, BaseException] = field(default_factory=dict)
    _scripts: dict[str, _Script] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        """Install the scripted ``sock_connect`` on the loop (task path)."""
        if self.path == "task":
            self.loop.sock_connect = self.sock_connect  # type: ignore[method-assign]
        elif self.path != "writer":
            raise ValueError(f"path must be 'writer' or 'task', got {self.path!r}")
        elif not uses_writer_callbacks(self.loop):
            raise ValueError(
                f"path='writer' needs a loop that connects through writer callbacks"
                f" (asyncio's selector loops, uvloop), got {self.loop!r}"
            )

    def script(
        self,
        host: str,
        *,
        delay: float = 0.0,
        outcome: Outcome | BaseException = "connect",
        at_once: bool = False,
    ) -> None:
        """Say what connecting to *host* does, and after how many seconds.

        ``"hang"`` never completes (a dead address: the SYN goes nowhere); an
        exception instance is raised as is. *host* ``"*"`` scripts every host that
        has no script of its own (unscripted hosts hang by default).

        With *at_once*, the outcome is known the instant the connect is called, as
        an unreachable network is: ``connect_ex`` returns its errno (0 for
        ``"connect"``) or raises the exception, and ``sock_connect`` raises or
        returns without waiting. On the writer path an exception can only be raised
        that way (``getsockopt`` never raises), so it needs *at_once*.

        Raises:
            ValueError: *at_once* with a *delay*, or a delayed exception on the
                writer path.
        """
        if at_once and delay:
            raise ValueError(f"at_once means no delay, got delay={delay!r}")
        if self.path == "writer" and isinstance(outcome, BaseException) and not at_once:
            raise ValueError(
                f"on the writer path an exception is raised by connect_ex, at once:"
                f" script {outcome!r} with at_once=True"
            )
        self._scripts[host] = _Script(delay, outcome, at_once)

    def _script_of(self, sock: socket.socket, address: Any) -> tuple[str, _Script]:
        host: str = sock.addr_info[4][0] if isinstance(sock, FakeSocket) else address[0]
        if isinstance(sock, FakeSocket):
            sock.connect_address = address
        script = self._scripts.get(host) or self._scripts.get("*", _HANG)
        self.start_times[host] = self.loop.time()
        return host, script

    def socket_factory(self, addr_info: AddrInfoType) -> socket.socket:
        """A ``socket_factory`` for the racer: a :class:`FakeSocket` per attempt."""
        error = self.factory_errors.get(addr_info[4][0])
        if error is not None:
            raise error
        family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
        if self.path == "writer":
            ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            # The smallest send buffer the kernel allows; see _in_flight().
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
            sock = FakeSocket(family, type_, proto, ours.detach())
            sock._peer = peer
        else:
            sock = FakeSocket(family, type_, proto)
        sock.network = self
        sock.addr_info = addr_info
        self.sockets.append(sock)
        return sock

    def _connect_ex(self, sock: FakeSocket, address: Any) -> int:
        host, script = self._script_of(sock, address)
        outcome = script.outcome
        if isinstance(outcome, BaseException):  # script() allows it only at once here
            self.end_times[host] = self.loop.time()
            raise outcome
        if outcome == "hang":
            self._in_flight(sock)
            return errno.EINPROGRESS
        code = _ERRNOS[outcome]
        if script.at_once:
            self.end_times[host] = self.loop.time()
            return code
        self._in_flight(sock)
        sock._ready = self.loop.call_later(script.delay, self._make_writable, sock, code)
        return errno.EINPROGRESS

    @staticmethod
    def _in_flight(sock: FakeSocket) -> None:
        assert sock._peer is not None  # noqa: S101 - made by socket_factory(path="writer")
        sock.setblocking(False)  # noqa: FBT003 - the socket API's own signature
        # A datagram of half the send buffer, unread by the peer, keeps more than a
        # quarter of the buffer in use: the kernel then reports the socket not
        # writable (unix_writable()) until the peer reads it.
        sock.send(bytes(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2))
        sock._connecting = True

    def _make_writable(self, sock: FakeSocket, code: int) -> None:
        sock._ready = None
        sock._so_error = code
        sock._peer.recv(1 << 16)  # type: ignore[union-attr] # writer path: it has a peer
        self._ended(sock)

    def _ended(self, sock: FakeSocket) -> None:
        sock._connecting = False
        self.end_times[sock.addr_info[4][0]] = self.loop.time()

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        """The scripted replacement for ``loop.sock_connect`` (task path)."""
        host, script = self._script_of(sock, address)
        try:
            if script.outcome == "hang":
                await self.loop.create_future()
            if not script.at_once:
                await asyncio.sleep(script.delay)
        finally:
            self.end_times[host] = self.loop.time()
        outcome = script.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        code = _ERRNOS[outcome]
        if code:
            raise OSError(code, f"Connect call failed {address}")

    @property
    def open_sockets(self) -> list[FakeSocket]:
        """Sockets not closed yet."""
        return [s for s in self.sockets if s.fileno() != -1]
