"""The I/O seam: make one attempt's socket, bind it, and start its connect.

Everything that touches a real socket lives here, so the race in ``_racer.py`` is
pure scheduling. An attempt reports its outcome by calling ``report(index, error)``
exactly once (``error`` is ``None`` on success) unless it is aborted first; after
:meth:`abort` it never reports.

Two ways to connect:

* **Writer callbacks** on loops that implement them and keep asyncio's stock
  ``sock_connect`` (the selector loops and uvloop): a non-blocking ``connect_ex``,
  then one ``add_writer`` until the kernel says the handshake is done. No task, no
  future, no coroutine per attempt: this is most of the CPU a race costs.
* **``loop.sock_connect`` in a task** everywhere else: Windows' proactor loop, which
  has no ``add_writer``, and any loop whose ``sock_connect`` was overridden (an
  instrumented loop, or the virtual network of :mod:`happydial.testing`). Aborting
  cancels the task, and the caller awaits it before closing the socket.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Callable
from typing import Any, Protocol

from ._addresses import AddrInfoType, SocketFactoryType, zone_to_scope_id
from ._errors import format_sockaddr, no_local_address_error

__all__ = [
    "Attempt",
    "Report",
    "TaskAttempt",
    "WriterAttempt",
    "being_cancelled",
    "connect_address",
    "make_socket",
    "start_connect",
    "uses_writer_callbacks",
]

Report = Callable[[int, BaseException | None], None]

_NONBLOCK: int = getattr(socket, "SOCK_NONBLOCK", 0)
_IN_PROGRESS = frozenset((errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN))
_writer_capable: dict[type, bool] = {}


def uses_writer_callbacks(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether *loop* has asyncio's (or uvloop's) own ``sock_connect`` and ``add_writer``."""
    cls = type(loop)
    capable = _writer_capable.get(cls)
    if capable is None:
        method = cls.sock_connect
        capable = method is BaseSelectorEventLoop.sock_connect or (
            getattr(method, "__module__", None) == "uvloop.loop"
        )
        _writer_capable[cls] = capable
    # An instance-level override (a test double) must be honoured too.
    return capable and "sock_connect" not in getattr(loop, "__dict__", ())


# fe80::/10, the IPv6 link-local prefix: "fe8", "fe9", "fea" and "feb" as text.
_LINK_LOCAL_PREFIXES = frozenset(("fe8", "fe9", "fea", "feb"))

# What the racer calls on a socket a factory returned. A socket.socket has all of
# them; a test double (aiohappyeyeballs' suites pass MagicMock sockets) may too.
_SOCKET_METHODS = ("setblocking", "fileno", "close")


def _check_scope(sockaddr: tuple[Any, ...]) -> None:
    """A link-local address means nothing without its interface: say so, clearly."""
    host = sockaddr[0]
    scope = sockaddr[3] if len(sockaddr) > 3 else 0
    if scope == 0 and "%" not in host:
        # The kernel's answer would be a bare EINVAL ("Invalid argument").
        raise OSError(
            errno.EINVAL,
            f"link-local address {host} needs a scope id (the interface to use), as"
            f" {host}%eth0 or (host, port, 0, if_nametoindex('eth0'))",
        )


def connect_address(sockaddr: tuple[Any, ...]) -> tuple[Any, ...]:
    """The sockaddr to pass to ``connect``: a ``%zone`` in the host becomes the scope id.

    ``socket.connect_ex(("fe80::1%eth0", port, 0, 0))`` takes the scope id from the
    tuple (0), not from the text, and the kernel refuses the address with EINVAL;
    ``loop.sock_connect`` resolves the zone first. aiohttp's resolvers produce
    exactly this spelling for scoped answers. Mapping an interface name to its index
    is a local call, not a lookup.

    Raises:
        OSError: The zone names no interface of this host (``ENXIO``), or it
            disagrees with a non-zero scope id in the tuple (``EINVAL``).
    """
    host = sockaddr[0]
    plain, _, zone = host.partition("%")
    if not zone:
        return sockaddr
    try:
        scope = zone_to_scope_id(zone, host)
    except ValueError:
        # A network condition of this attempt (an interface that is gone), not a bad
        # argument: an OSError, so the race goes on with the other addresses.
        raise OSError(
            errno.ENXIO, f"no network interface named {zone!r} for address {host}"
        ) from None
    given = sockaddr[3] if len(sockaddr) > 3 else 0
    if given and given != scope:
        raise OSError(
            errno.EINVAL, f"address {host} names interface {scope}, but its scope id is {given}"
        )
    flowinfo = sockaddr[2] if len(sockaddr) > 2 else 0
    return (plain, sockaddr[1], flowinfo, scope)


def make_socket(
    addr_info: AddrInfoType,
    local_addr_infos: list[AddrInfoType] | None,
    socket_factory: SocketFactoryType | None,
    *,
    blocking: bool = False,
) -> socket.socket:
    """Create, configure and bind the socket of one attempt.

    *blocking*: leave a socket made here (not by *socket_factory*) blocking, for a
    blocking ``connect()`` (the blocking driver's lone attempt, see ``_blocking``).

    Raises:
        OSError: Socket creation or binding failed; the socket (if any) is closed.
    """
    family, type_, proto, _, sockaddr = addr_info
    if family == socket.AF_INET6 and sockaddr[0][:3].lower() in _LINK_LOCAL_PREFIXES:
        _check_scope(sockaddr)
    if socket_factory is None:
        # Made non-blocking where the OS can (SOCK_NONBLOCK, Linux): one system call
        # fewer than setblocking(False) afterwards (see bench/blocking.py).
        sock = socket.socket(family, type_ if blocking else type_ | _NONBLOCK, proto)
    else:
        sock = socket_factory(addr_info)
        made: object = sock  # typed callers aside, a factory may return anything
        if not isinstance(made, socket.socket):
            _check_socket_like(made)
    try:
        if socket_factory is not None or not (_NONBLOCK or blocking):
            sock.setblocking(False)  # noqa: FBT003 - the socket API's own signature
        if local_addr_infos is not None:
            _bind(sock, family, local_addr_infos)
    except BaseException:
        sock.close()
        raise
    return sock


def _check_socket_like(made: object) -> None:
    """Accept any object with what the racer calls; name the factory otherwise."""
    missing = [name for name in _SOCKET_METHODS if not callable(getattr(made, name, None))]
    if missing:
        if hasattr(made, "close") and callable(made.close):
            made.close()  # it may hold a descriptor of its own
        raise TypeError(
            f"socket_factory must return a socket, got {type(made).__name__} {made!r}"
            f" (it has no {', '.join(missing)})"
        )


def _bind(sock: socket.socket, family: int, local_addr_infos: list[AddrInfoType]) -> None:
    """Bind to the first local address of *family* that works (CPython's rules)."""
    error: OSError | None = None
    for local in local_addr_infos:
        if local[0] != family:
            continue
        laddr = local[4]
        try:
            sock.bind(laddr)
        except OSError as exc:
            # Keep the whole OS message, as CPython does (aiohappyeyeballs keeps strerror only).
            error = OSError(
                exc.errno,
                f"error while attempting to bind on address {laddr!r}: {str(exc).lower()}",
            )
            error.__cause__ = exc
        else:
            return
    if error is None:
        error = no_local_address_error(family)
    try:
        raise error
    finally:
        # The raised error's traceback holds this frame: without this, the frame
        # would hold the error too, a cycle only the cyclic GC can free.
        error = None


class Attempt(Protocol):
    """One connect in flight, and how to stop it."""

    def abort(self) -> asyncio.Task[None] | None:
        """Stop it. Returns a task to await before closing the socket, if any."""


class WriterAttempt:
    """A connect watched by a writer callback on its descriptor."""

    __slots__ = ("_fd", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._loop = loop
        self._fd = fd

    def abort(self) -> None:
        """Stop watching the descriptor; nothing is left to await."""
        self._loop.remove_writer(self._fd)


class TaskAttempt:
    """An attempt running as a task (``loop.sock_connect``, or a coroutine)."""

    __slots__ = ("_task",)

    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    def abort(self) -> asyncio.Task[None]:
        """Cancel the task; the caller awaits it before closing what it holds."""
        self._task.cancel()
        return self._task


def start_connect(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    address: tuple[object, ...],
    index: int,
    report: Report,
    *,
    writer_callbacks: bool,
) -> Attempt | None:
    """Start connecting *sock* to *address*; the outcome goes to ``report(index, ...)``.

    *writer_callbacks* is :func:`uses_writer_callbacks` of *loop*, decided once per race.

    Returns:
        The attempt in flight, or ``None`` when it has already reported (the connect
        finished or failed at once).
    """
    if not writer_callbacks or not isinstance(sock, socket.socket):
        # A socket-like object from a factory (a test double, say) gets the loop's
        # own sock_connect, as upstream always does: its connect_ex and SO_ERROR
        # mean nothing we could rely on.
        return _start_with_task(loop, sock, address, index, report)
    try:
        err = sock.connect_ex(address)
    except OSError as exc:
        report(index, exc)
        return None
    if err in _IN_PROGRESS:
        fd = sock.fileno()
        loop.add_writer(fd, _on_writable, loop, sock, fd, address, index, report)
        return WriterAttempt(loop, fd)
    report(index, None if err == 0 else _immediate_error(err, address))
    return None


def _immediate_error(err: int, address: tuple[object, ...]) -> OSError:
    """The error of a connect that failed at once (ENETUNREACH, EADDRNOTAVAIL, ...).

    ``loop.sock_connect`` raises the OS's own error here, whose ``strerror`` (what
    aiohttp shows its users) is the OS's text; the address goes in the message too.
    """
    return OSError(err, os.strerror(err), format_sockaddr(address))


def _on_writable(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    fd: int,
    address: tuple[object, ...],
    index: int,
    report: Report,
) -> None:
    loop.remove_writer(fd)
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    # Same message as asyncio's sock_connect, which callers' logs already know.
    report(index, None if err == 0 else OSError(err, f"Connect call failed {address}"))


def being_cancelled() -> bool:
    """Whether the current task was asked to stop (rather than an awaitable raising).

    A function, not a ``task`` local: a frame holding its task while the task holds
    the CancelledError whose traceback holds the frame is a reference cycle.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _start_with_task(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    address: tuple[object, ...],
    index: int,
    report: Report,
) -> Attempt:
    return TaskAttempt(loop.create_task(_sock_connect(loop, sock, address, index, report)))


async def _sock_connect(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    address: tuple[object, ...],
    index: int,
    report: Report,
) -> None:
    # The report happens inside the task, not in a done callback, so it runs before
    # anyone awaiting the task resumes. A cancellation (abort) is not reported; any
    # other exception is handed to the race, which decides what it means.
    try:
        await loop.sock_connect(sock, address)
    except asyncio.CancelledError as exc:
        if being_cancelled():
            raise  # aborted by the race (or the caller's whole task was cancelled)
        # sock_connect raised it by itself (it awaited something another party
        # cancelled): that attempt failed, and the race goes on without it.
        error = OSError(f"connect to {format_sockaddr(address)} was cancelled by sock_connect")
        error.__cause__ = exc
        report(index, error)
    except BaseException as exc:  # noqa: BLE001 - the race classifies it
        # A BaseException that is not an Exception (a custom one, KeyboardInterrupt,
        # SystemExit) must end the race and reach the caller, not die in this task
        # with nobody waiting for it, which would leave the race hanging.
        report(index, exc)
    else:
        report(index, None)
