"""Host names: resolve IPv6 and IPv4 in parallel and race as soon as RFC 8305 allows.

The story of :func:`connect`, step by step:

1. An IP literal never touches a resolver (``_literal_addr_infos``).
2. Otherwise one lookup per family starts at once (section 3: "send AAAA and A
   queries together"). Python's peers ask ``getaddrinfo(AF_UNSPEC)``, which returns
   only when *both* answers are in: a slow AAAA then costs its full delay.
3. The race starts empty and is fed as answers arrive (``_Feeder``):
   an IPv6 answer is fed at once; an IPv4 answer that comes first waits at most
   ``resolution_delay`` for IPv6 (section 3), then is fed alone. So does an IPv6
   answer this host has no source address for (RFC 6724 rule 1).
4. Every answer is sorted with the untried addresses by RFC 6724 (section 4: the
   per-family lookups lose the C library's sort), with the source address the
   kernel would choose for each (``_sources``), then interleaved: the preferred
   family's First Address Family Count, then alternating where the race left off.
5. When the race ends (won, failed or cancelled), lookups still running are
   abandoned at once, from inside the race: nothing after the win is awaited, so a
   cancellation cannot land between a won race and the return of its socket. The
   default resolver runs ``getaddrinfo`` on happydial's own pool of daemon threads
   (``_resolver``) rather than the loop's executor, because ``asyncio.run()`` joins
   that executor at exit and a stuck AAAA lookup would hold the program for seconds.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from . import _trace
from ._addresses import (
    AddrInfoType,
    SocketFactoryType,
    _check_count,
    _interleave,
    _is_int,
    _normalise,
    check_addr_infos,
    literal_addr_info,
)
from ._history import AddressHistory
from ._racer import ConnectRace, _check_callable, apply_history, check_ip_literals
from ._resolver import (
    PendingLookup,
    Resolver,
    getaddrinfo_resolver,
    localhost_addr_infos,
    start_getaddrinfo,
)
from ._schedule import check_delay
from ._selection import SourcesType, _sort, _sources_lookup, ranks_below_ipv4
from ._sockets import being_cancelled
from ._sources import bound_sources, default_source_cache
from ._trace import TraceType

__all__ = ["Resolver", "connect", "getaddrinfo_resolver"]


def _literal_addr_infos(host: str, port: int) -> list[AddrInfoType] | None:
    """The addr_info of an IP literal host (``%zone`` allowed), or ``None`` for a name."""
    plain = host.partition("%")[0]
    if ":" not in plain and not plain.replace(".", "").isdigit():
        # Neither IPv6 (a colon) nor dotted-decimal IPv4: a name. Said without
        # ipaddress, which would raise (and build) three exceptions to say it.
        return None
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
        sources: Callable[[AddrInfoType], object],
    ) -> None:
        self.race = race
        self.sources = sources
        self.host = host
        self.waiting = set(families)
        self.resolution_delay = resolution_delay
        self.count = first_address_family_count
        self.held: list[AddrInfoType] = []
        self.timer: asyncio.TimerHandle | None = None
        self.seen: set[object] = set()
        self.errors: dict[int, OSError] = {}
        self.lookups: list[asyncio.Task[None] | PendingLookup] = []
        self.closed = False

    def answered(
        self, family: int, addr_infos: list[AddrInfoType] | None, error: OSError | None
    ) -> None:
        """One lookup ended, with addresses or with an error."""
        try:
            self._answered(family, addr_infos, error)
        except BaseException as exc:  # noqa: BLE001 - the race raises it to the caller
            # A bad sources mapping, say: raised in a lookup's task, it would be
            # logged by the loop while the race waited forever.
            self.race.report_bug(exc)

    def _answered(
        self, family: int, addr_infos: list[AddrInfoType] | None, error: OSError | None
    ) -> None:
        loop = self.race.loop
        self.waiting.discard(family)
        if error is not None:
            self.errors[family] = error
            if self.race.trace is not None:
                self.race.emit(_trace.ResolutionFailed(self.host, family, error, loop.time()))
        elif self.race.trace is not None:
            self.race.emit(
                _trace.ResolutionFinished(self.host, family, tuple(addr_infos or ()), loop.time())
            )
        fresh = []
        for answer in addr_infos or ():
            entry, key = _canonical(answer)
            # One address, one attempt: zeroconf repeats addresses, resolvers spell
            # IPv6 differently (2001:db8::1, 2001:0db8::1) or answer an IPv4 address
            # as its IPv4-mapped IPv6 copy (::ffff:192.0.2.1).
            if key not in self.seen:
                self.seen.add(key)
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
        # An IPv6 answer that RFC 6724 ranks after a usual IPv4 answer (no source
        # address for it; only a ULA source for a global destination), or whose
        # every address failed recently (section 4 with history), would go after
        # IPv4 anyway: give IPv4 the same short chance to answer first.
        if ranks_below_ipv4(fresh, self.sources):
            return True
        history = self.race.history
        return history is not None and all(history.is_cooling(a[4]) for a in fresh)

    def _release(self) -> None:
        self.timer = None
        try:
            self._feed(self._take_held())
        except BaseException as exc:  # noqa: BLE001 - in a timer callback: see answered()
            self.race.report_bug(exc)

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
        # Section 4: sort by RFC 6724 first (the untried addresses with the new
        # ones), then interleave the usable ones; those with no source go last.
        ranked, usable = _sort([*race.items, *new], self.sources)
        race.items.clear()
        unusable = ranked[usable:]
        ranked = ranked[:usable]
        preferred = ranked[0][0] if ranked else socket.AF_INET6
        same = [a for a in ranked if a[0] == preferred]
        other = [a for a in ranked if a[0] != preferred]
        tried = sum(1 for a in race.started if a[0] == preferred)
        last = race.started[-1][0] if race.started else None
        if last is None or (last == preferred and tried < self.count):
            # The preferred family still has some of its First Address Family Count.
            merged = _interleave(same + other, self.count - tried)
        elif last == preferred:
            merged = _interleave(other + same, 1)  # keep alternating: the other's turn
        else:
            merged = _interleave(same + other, 1)  # keep alternating: the preferred's turn
        merged += unusable
        if race.history is not None:
            emit = race.emit if race.trace is not None else None
            merged = apply_history(race.history, merged, race.loop, emit)
        race.add(merged)

    def close(self) -> None:
        """Cancel the resolution-delay timer and abandon the lookups still running.

        Nothing is awaited: an abandoned lookup never delays the caller, and the
        caller's own cancellation can never land between a won race and the return
        of its socket. A lookup task ends on its own once it sees the cancellation
        (at the loop's next iteration for a resolver that is just waiting).
        """
        self.closed = True
        self._take_held()
        lookups, self.lookups = self.lookups, []  # once: a second cancel would cut a cleanup
        for task in lookups:
            task.cancel()  # the running one too: it sees it once it returns or awaits


def _canonical(entry: AddrInfoType) -> tuple[AddrInfoType, object]:
    """*entry* with an IPv4-mapped IPv6 address turned into IPv4, and its identity."""
    if entry[0] != socket.AF_INET6:
        return entry, (entry[4][0], entry[4][1])
    key = _normalise(entry[4])  # the resolver's answer was checked to be a literal
    ip = key[0]  # type: ignore[index]
    mapped = ip.ipv4_mapped  # type: ignore[union-attr]
    if mapped is None:
        return entry, key
    v4 = str(mapped)
    port = entry[4][1]
    return (socket.AF_INET, entry[1], entry[2], entry[3], (v4, port)), (v4, port)


ResolverType = Resolver | Callable[[str, int, int], Awaitable[list[AddrInfoType]]]


async def _lookup(
    resolver: ResolverType, host: str, port: int, family: int, feeder: _Feeder
) -> None:
    """One family's lookup, start to end; nothing ever escapes this task.

    The task is cancelled only when the race no longer needs it (see
    :meth:`_Feeder.close`); from then on, whatever the resolver does (answers,
    fails, raises while cleaning up) is nobody's business and is dropped.
    """
    loop = feeder.race.loop
    if feeder.race.trace is not None:
        feeder.race.emit(_trace.ResolutionStarted(host, family, loop.time()))
        if being_cancelled() or feeder.closed:
            # The trace raised and ended the race: do not even ask. An eager task
            # (Python 3.12's eager_task_factory) gets here while connect() is still
            # creating it, before close() could know it to cancel it.
            return
    # No local may hold an error past its except clause: the error's traceback
    # holds this frame, and the frame the feeder (a cycle, freed only by the GC).
    try:
        entries = _usable(await resolver(host, port, family), family, host)
    except OSError as exc:
        if not being_cancelled():
            feeder.answered(family, None, exc)
    except asyncio.CancelledError as exc:
        if being_cancelled():
            raise
        # The resolver was cancelled by someone else (a shared in-flight lookup that
        # another waiter cancelled): this family's lookup failed, the other goes on.
        feeder.answered(family, None, _cancelled_lookup(host, exc))
    except BaseException as exc:  # noqa: BLE001 - every kind: see _resolver_bug
        _resolver_bug(feeder, exc)
    else:
        if being_cancelled():
            # The resolver swallowed its cancellation and answered anyway. Run by
            # test_an_abandoned_lookup_is_nobodys_business[answers], but coverage's
            # tracer does not see this frame once a CancelledError was thrown into it.
            return  # pragma: no cover
        feeder.answered(family, entries, None)


def _start_default_lookups(
    host: str, port: int, families: list[int], feeder: _Feeder, loop: asyncio.AbstractEventLoop
) -> None:
    """The default resolver's lookups, without a task (or a future) per family.

    What :func:`_lookup` does for any resolver, for :func:`getaddrinfo_resolver`
    without its coroutine: a ``localhost`` answer (RFC 6761 section 6.3) is fed at
    once, before the race starts; a pool lookup's outcome is handed to
    :func:`_pool_answered` by the loop's mailbox. Nothing here can be cancelled by
    anyone but :meth:`_Feeder.close`, which abandons the lookups still running.
    """
    for family in families:
        local = localhost_addr_infos(host, port, family)
        if local is not None:
            feeder.answered(family, local, None)
        else:
            on_answer = functools.partial(_pool_answered, feeder, family, host)
            feeder.lookups.append(start_getaddrinfo(host, port, family, loop, on_answer))


def _pool_answered(
    feeder: _Feeder, family: int, host: str, result: object, error: Exception | None
) -> None:
    """A pool lookup's outcome, on the loop (it comes only while the race runs)."""
    if error is None:
        try:
            entries = _usable(result, family, host)
        except OSError as exc:
            feeder.answered(family, None, exc)
        else:
            feeder.answered(family, entries, None)
    elif isinstance(error, OSError):
        feeder.answered(family, None, error)
    else:
        feeder.race.report_bug(error)  # UnicodeError for "a..b": as _resolver_bug does


def _resolver_bug(feeder: _Feeder, exc: BaseException) -> None:
    """A bug in the resolver (or KeyboardInterrupt, SystemExit): it ends the race.

    It reaches the caller through the race. Raised in the lookup's task instead, it
    would stay in a task nobody awaits, to be logged, or lost. Once the lookup was
    abandoned it is nobody's business, but for the two that stop a program.
    """
    if not being_cancelled():
        feeder.race.report_bug(exc)
    elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
        raise exc


def _cancelled_lookup(host: str, cause: asyncio.CancelledError) -> socket.gaierror:
    error = socket.gaierror(socket.EAI_AGAIN, f"the resolver's lookup of {host!r} was cancelled")
    error.__cause__ = cause
    return error


def _usable(answer: object, family: int, host: str) -> list[AddrInfoType]:
    """The entries of a resolver's *answer* for *family*; ``gaierror`` when there are none."""
    entries = [a for a in check_addr_infos(answer, "resolver result") if a[0] == family]
    check_ip_literals(entries, "resolver result")
    if not entries:
        raise _no_address(family, host)
    return entries


_RECORD: dict[int, str] = {socket.AF_INET6: "AAAA", socket.AF_INET: "A"}


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
    sources: SourcesType | None = None,
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
        sources: The source address of each destination, for RFC 6724's ordering
            of the answers (see :func:`happydial.sort_addr_infos`). Default: what the
            kernel would choose, probed once per destination and cached
            (:func:`happydial.default_source_cache`); with *local_addr*, that address.

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
    source_of = None if sources is None else _sources_lookup(sources)
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
    if source_of is None:
        cache = default_source_cache()
        source_of = cache if local is None else bound_sources(local, cache)
    feeder = _Feeder(race, host, families, res_delay or 0.0, count, source_of)
    race.keep_feeding()
    # The lookups are abandoned the moment the race ends (won, failed or
    # cancelled), from inside the race: they see their cancellation before this
    # task resumes, and nothing after the race is awaited.
    race.when_finished = feeder.close
    resolve = resolver or getaddrinfo_resolver
    if resolve is getaddrinfo_resolver and trace is None:
        _start_default_lookups(host, port, families, feeder, loop)
    else:  # a task per family, to trace its start or to await any resolver
        feeder.lookups = [
            loop.create_task(_lookup(resolve, host, port, f, feeder)) for f in families
        ]
    try:
        sock, _ = await race.connect(all_errors=all_errors)
    except OSError:
        if race.started:
            raise
        error = _resolution_error(host, families, feeder.errors)
        raise error from error.__cause__
    finally:
        feeder.close()  # awaits nothing: see _Feeder.close
        feeder.errors = {}  # their tracebacks hold the lookups' frames, which hold the feeder
    return sock


def _resolution_error(
    host: str, families: list[int], errors: dict[int, OSError]
) -> socket.gaierror:
    """One error for failed lookups, naming each family once: ``AAAA: ...; A: ...``."""
    failed = [f for f in families if f in errors]
    first = errors[failed[0]]
    code = first.errno if isinstance(first, socket.gaierror) else socket.EAI_NONAME
    texts = [str(errors[f]) for f in failed]
    if len(set(texts)) == 1:
        which = " and ".join(_RECORD[f] for f in failed)
        message = f"cannot resolve {host!r} ({which}): {texts[0]}"
    else:
        message = f"cannot resolve {host!r}: " + "; ".join(
            f"{_RECORD[f]}: {text}" for f, text in zip(failed, texts, strict=True)
        )
    error = socket.gaierror(code, message)
    error.__cause__ = ExceptionGroup(f"lookups of {host!r} failed", [errors[f] for f in failed])
    return error
