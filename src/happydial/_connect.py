"""Host names: resolve IPv6 and IPv4 in parallel and race as soon as RFC 8305 allows.

The story of :func:`connect`, step by step:

1. An IP literal never touches a resolver (``_literal_addr_infos``).
2. Otherwise one lookup per family starts at once (section 3: "send AAAA and A
   queries together"). Python's peers ask ``getaddrinfo(AF_UNSPEC)``, which returns
   only when *both* answers are in: a slow AAAA then costs its full delay.
3. The race starts empty and is fed as answers arrive (``_Feeder``):
   an IPv6 answer is fed at once; an IPv4 answer that comes first waits at most
   ``resolution_delay`` for IPv6 (section 3), then is fed alone.
4. An answer that arrives while the race runs joins the *untried* addresses in
   interleaved order (section 4), the other family first, so the alternation goes on.
5. When a connection wins, lookups still running are abandoned: the default
   resolver runs ``getaddrinfo`` in a daemon thread of its own rather than the
   loop's executor, because ``asyncio.run()`` joins that executor at exit and a
   stuck AAAA lookup would hold the program for seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from . import _trace
from ._addresses import (
    AddrInfoType,
    SocketFactoryType,
    _check_count,
    _interleave,
    _is_int,
    check_addr_infos,
    literal_addr_info,
)
from ._history import AddressHistory
from ._racer import ConnectRace, _check_callable, apply_history, check_ip_literals
from ._resolver import Resolver, getaddrinfo_resolver
from ._schedule import check_delay
from ._trace import TraceType

__all__ = ["Resolver", "connect", "getaddrinfo_resolver"]


def _literal_addr_infos(host: str, port: int) -> list[AddrInfoType] | None:
    """The addr_info of an IP literal host (``%zone`` allowed), or ``None`` for a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return [literal_addr_info((host, port), f"host {host!r}")]


class _Feeder:
    """Feeds a race with lookup answers, by the rules of RFC 8305 sections 3 and 4."""

    def __init__(
        self,
        race: ConnectRace,
        host: str,
        families: list[int],
        resolution_delay: float,
        first_address_family_count: int,
    ) -> None:
        self.race = race
        self.host = host
        self.waiting = set(families)
        self.resolution_delay = resolution_delay
        self.count = first_address_family_count
        self.held: list[AddrInfoType] = []
        self.timer: asyncio.TimerHandle | None = None
        self.seen: set[tuple[Any, ...]] = set()
        self.errors: list[OSError] = []

    def answered(
        self, family: int, addr_infos: list[AddrInfoType] | None, error: OSError | None
    ) -> None:
        """One lookup ended, with addresses or with an error."""
        loop = self.race.loop
        self.waiting.discard(family)
        if error is not None:
            self.errors.append(error)
            if self.race.trace is not None:
                self.race.emit(_trace.ResolutionFailed(self.host, family, error, loop.time()))
        elif self.race.trace is not None:
            self.race.emit(
                _trace.ResolutionFinished(self.host, family, tuple(addr_infos or ()), loop.time())
            )
        fresh = []
        for entry in addr_infos or ():
            if entry[4] not in self.seen:  # zeroconf, for one, repeats addresses
                self.seen.add(entry[4])
                fresh.append(entry)
        if fresh and self.waiting and self._should_wait(family, fresh):
            self.held = fresh
            self.timer = loop.call_later(self.resolution_delay, self._release)
        else:
            self._feed(fresh + self._take_held())
        if not self.waiting:
            self.race.stop_feeding()

    def _should_wait(self, family: int, fresh: list[AddrInfoType]) -> bool:
        """Whether to hold an answer for the resolution delay, for the other family."""
        if family == socket.AF_INET:
            return True  # Section 3: IPv4 answered first; give IPv6 the resolution delay.
        # An IPv6 answer whose every address failed recently would go last anyway
        # (section 4 with history): give IPv4 the same short chance to answer first.
        history = self.race.history
        return history is not None and all(history.is_cooling(a[4]) for a in fresh)

    def _release(self) -> None:
        self.timer = None
        self._feed(self._take_held())

    def _take_held(self) -> list[AddrInfoType]:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        held, self.held = self.held, []
        return held

    def _feed(self, new: list[AddrInfoType]) -> None:
        """Merge *new* into the untried addresses, in interleaved order (section 4)."""
        if not new:
            return
        race = self.race
        combined = [*race.items, *new]
        race.items.clear()
        v6 = [a for a in combined if a[0] == socket.AF_INET6]
        v4 = [a for a in combined if a[0] != socket.AF_INET6]
        tried_v6 = sum(1 for a in race.started if a[0] == socket.AF_INET6)
        if not race.started or (race.started[-1][0] == socket.AF_INET6 and tried_v6 < self.count):
            # IPv6 (preferred by RFC 6724's default policy) still has some of its
            # First Address Family Count to use.
            merged = _interleave(v6 + v4, self.count - tried_v6)
        elif race.started[-1][0] == socket.AF_INET6:
            merged = _interleave(v4 + v6, 1)  # keep alternating: IPv4's turn
        else:
            merged = _interleave(v6 + v4, 1)  # keep alternating: IPv6's turn
        if race.history is not None:
            emit = race.emit if race.trace is not None else None
            merged = apply_history(race.history, merged, race.loop, emit)
        race.add(merged)

    def close(self) -> None:
        """Cancel the resolution-delay timer, if any."""
        self._take_held()


ResolverType = Resolver | Callable[[str, int, int], Awaitable[list[AddrInfoType]]]


async def _lookup(
    resolver: ResolverType, host: str, port: int, family: int, feeder: _Feeder
) -> None:
    loop = feeder.race.loop
    if feeder.race.trace is not None:
        feeder.race.emit(_trace.ResolutionStarted(host, family, loop.time()))
    try:
        answer = await resolver(host, port, family)
        entries = [a for a in check_addr_infos(answer, "resolver result") if a[0] == family]
        check_ip_literals(entries, "resolver result")
        if not entries:
            raise _no_address(family, host)  # noqa: TRY301 - one path for every "no address"
    except OSError as exc:
        feeder.answered(family, None, exc)
    except Exception as exc:
        # A bug in the resolver: end the race with it (not a "no address" answer).
        feeder.race.report_bug(exc)
        raise
    else:
        feeder.answered(family, entries, None)


def _no_address(family: int, host: str) -> socket.gaierror:
    name = "IPv6" if family == socket.AF_INET6 else "IPv4"
    return socket.gaierror(socket.EAI_NODATA, f"no {name} address for {host!r}")


def _local_addr_infos(local_addr: object) -> list[AddrInfoType] | None:
    if local_addr is None:
        return None
    if not isinstance(local_addr, tuple):
        raise TypeError(f"local_addr must be a tuple (host, port) or None, got {local_addr!r}")
    return [literal_addr_info(local_addr, f"local_addr {local_addr!r}")]


def _check_host_port(host: object, port: object) -> None:
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, got {host!r}")
    if not host:
        raise ValueError("host must not be empty")
    if not _is_int(port):
        raise TypeError(f"port must be an int, got {port!r}")
    if not 0 <= port <= 65535:  # type: ignore[operator]
        raise ValueError(f"port must be in 0-65535, got {port!r}")


_FAMILIES: dict[int, list[int]] = {
    socket.AF_UNSPEC: [socket.AF_INET6, socket.AF_INET],
    socket.AF_INET6: [socket.AF_INET6],
    socket.AF_INET: [socket.AF_INET],
}


async def connect(
    host: str,
    port: int,
    *,
    family: int = socket.AF_UNSPEC,
    happy_eyeballs_delay: float | None = 0.25,
    first_address_family_count: int = 1,
    resolution_delay: float = 0.05,
    local_addr: tuple[str, int] | tuple[str, int, int, int] | None = None,
    socket_factory: SocketFactoryType | None = None,
    resolver: ResolverType | None = None,
    attempt_timeout: float | None = None,
    all_errors: bool = False,
    trace: TraceType | None = None,
    history: AddressHistory | None = None,
) -> socket.socket:
    """Connect to *host*, resolving IPv6 and IPv4 in parallel (RFC 8305).

    Args:
        host: A host name or an IP literal (``"2001:db8::1"``, ``"fe80::1%eth0"``).
        port: The TCP port.
        family: ``AF_UNSPEC`` (both), ``AF_INET6`` or ``AF_INET`` only.
        happy_eyeballs_delay: Seconds between attempt starts (RFC 8305's Connection
            Attempt Delay, 250 ms recommended); ``None``: one at a time.
        first_address_family_count: How many IPv6 addresses go before the first IPv4
            one (section 4; 1 recommended).
        resolution_delay: How long an IPv4 answer waits for IPv6 (section 3, 50 ms).
        local_addr: A local ``(host, port)`` to bind to, as an IP literal.
        socket_factory: As for :func:`happydial.start_connection`.
        resolver: An async ``resolver(host, port, family)`` returning addr_infos
            (see :class:`happydial.Resolver`); default: ``getaddrinfo`` in a thread.
        attempt_timeout: As for :func:`happydial.start_connection`.
        all_errors: As for :func:`happydial.start_connection`.
        trace: Called with every lookup and attempt event.
        history: An :class:`~happydial.AddressHistory` shared between calls, to try
            what worked first and pace attempts by measured connect times. Off by
            default: the result of a call then depends only on its arguments and the
            network, never on unrelated earlier calls in the same process (share one
            history per application, or per destination, to opt in).

    Returns:
        A connected, non-blocking socket, owned by the caller.

    Raises:
        socket.gaierror: No lookup produced an address; its ``__cause__`` groups the
            lookup errors of both families.
        OSError: Every connection attempt failed (see :func:`happydial.start_connection`).
        TypeError: An argument has the wrong type.
        ValueError: An argument has a bad value.
    """
    _check_host_port(host, port)
    if not _is_int(family):
        raise TypeError(f"family must be an int (AF_UNSPEC, AF_INET or AF_INET6), got {family!r}")
    if family not in _FAMILIES:
        raise ValueError(f"family must be AF_UNSPEC, AF_INET or AF_INET6, got {family!r}")
    delay = check_delay(happy_eyeballs_delay, "happy_eyeballs_delay", allow_zero=True)
    res_delay = check_delay(resolution_delay, "resolution_delay", allow_zero=True)
    timeout = check_delay(attempt_timeout, "attempt_timeout", allow_zero=False)
    count = _check_count(first_address_family_count, "first_address_family_count")
    local = _local_addr_infos(local_addr)
    _check_callable(socket_factory, "socket_factory")
    _check_callable(resolver, "resolver")
    _check_callable(trace, "trace")
    if history is not None and not isinstance(history, AddressHistory):
        raise TypeError(f"history must be an AddressHistory or None, got {history!r}")
    loop = asyncio.get_running_loop()
    race = ConnectRace(
        loop,
        delay,
        local_addr_infos=local,
        socket_factory=socket_factory,
        attempt_timeout=timeout,
        trace=trace,
        history=history,
    )
    literal = _literal_addr_infos(host, port)
    if literal is not None:
        if family != socket.AF_UNSPEC and literal[0][0] != family:
            raise ValueError(f"host {host!r} is not an address of family {family!r}")
        race.add(literal)
        sock, _ = await race.connect(all_errors=all_errors)
        return sock
    families = _FAMILIES[family]
    feeder = _Feeder(race, host, families, res_delay or 0.0, count)
    race.keep_feeding()
    lookups = [
        loop.create_task(_lookup(resolver or getaddrinfo_resolver, host, port, f, feeder))
        for f in families
    ]
    try:
        sock, _ = await race.connect(all_errors=all_errors)
    except OSError:
        if race.started:
            raise
        error = _resolution_error(host, feeder.errors)
        raise error from error.__cause__
    finally:
        feeder.close()
        for task in lookups:
            task.cancel()
        await asyncio.gather(*lookups, return_exceptions=True)
    return sock


def _resolution_error(host: str, errors: list[OSError]) -> socket.gaierror:
    first = errors[0]
    code = first.errno if isinstance(first, socket.gaierror) else socket.EAI_NONAME
    error = socket.gaierror(code, f"cannot resolve {host!r}: " + "; ".join(str(e) for e in errors))
    error.__cause__ = ExceptionGroup(f"lookups of {host!r} failed", errors)
    return error
