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
import contextvars
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

from . import _trace
from ._addresses import (
    AddrInfoType,
    SocketFactoryType,
    check_addr_infos,
    interleave_families,
    literal_addr_info,
    normalise,
)
from ._dns64 import Nat64Discovery
from ._errors import deadline_error, format_sockaddr
from ._history import AddressHistory
from ._ipv6only import LastResort, Synthesis, check_nat64_options, explain
from ._racer import ConnectRace, apply_history, check_ip_literals
from ._resolver import (
    PendingLookup,
    Resolver,
    getaddrinfo_resolver,
    localhost_addr_infos,
    start_getaddrinfo,
)
from ._selection import SourcesType, rank_by_sources, ranks_below_ipv4, sources_lookup
from ._sockets import being_cancelled
from ._sources import bound_sources, default_source_cache
from ._trace import TraceType
from ._validate import (
    DEFAULT_MAX_IN_FLIGHT,
    check_callable,
    check_count,
    check_delay,
    check_host_port,
    check_limits,
    is_int,
)

__all__ = ["Resolver", "connect", "getaddrinfo_resolver"]


# The race connect() runs: TCP (ConnectRace), or, set by the TLS layer (_tls) for one
# call, a race whose attempts end with their TLS handshake. A context variable, not an
# argument: connect()'s signature is public, and this is not.
RACE_CLASS: contextvars.ContextVar[Callable[..., ConnectRace]] = contextvars.ContextVar(
    "happydial_race_class", default=ConnectRace
)


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
        self.last_resort: LastResort | None = None  # RFC 8305 s. 7.2, see _ipv6only

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
        fresh = self._fresh(addr_infos or ())
        if self.last_resort is not None:
            fresh = self.last_resort.take(family, fresh)  # IPv4 with no IPv4 path: NAT64
        self._arrived(family, fresh)

    def _arrived(self, family: int, fresh: list[AddrInfoType]) -> None:
        """Feed new addresses of *family*, or hold them for the resolution delay."""
        if fresh and self.waiting and self._should_wait(family, fresh):
            self.held = [*self.held, *fresh]
            if self.timer is None:
                self.timer = self.race.loop.call_later(self.resolution_delay, self._release)
        else:
            self._feed(fresh + self._take_held())
        if not self.waiting:
            self.race.stop_feeding()

    def _fresh(self, addr_infos: Iterable[AddrInfoType]) -> list[AddrInfoType]:
        """The entries of *addr_infos* not seen before, IPv4-mapped ones as IPv4."""
        fresh = []
        for answer in addr_infos:
            entry, key = _canonical(answer)
            # One address, one attempt: zeroconf repeats addresses, resolvers spell
            # IPv6 differently (2001:db8::1, 2001:0db8::1) or answer an IPv4 address
            # as its IPv4-mapped IPv6 copy (::ffff:192.0.2.1).
            if key not in self.seen:
                self.seen.add(key)
                fresh.append(entry)
        return fresh

    def feed_late(
        self, key: int, synthesised: list[AddrInfoType], given_back: list[AddrInfoType]
    ) -> None:
        """Feed what was awaited under *key* besides the lookups.

        *synthesised*: IPv6 entries, new unless a lookup answered them too;
        *given_back*: IPv4 answers as they were (already seen; while AAAA is
        pending they wait the resolution delay, as any A answer).
        """
        self.waiting.discard(key)
        fresh = self._fresh(synthesised)
        self._arrived(socket.AF_INET if given_back else socket.AF_INET6, fresh + given_back)

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
        ranked, usable = rank_by_sources([*race.schedule.items, *new], self.sources)
        unusable = ranked[usable:]
        ranked = ranked[:usable]
        preferred = ranked[0][0] if ranked else socket.AF_INET6
        same = [a for a in ranked if a[0] == preferred]
        other = [a for a in ranked if a[0] != preferred]
        tried = sum(1 for a in race.started if a[0] == preferred)
        last = race.started[-1][0] if race.started else None
        if last is None or (last == preferred and tried < self.count):
            # The preferred family still has some of its First Address Family Count.
            merged = interleave_families(same + other, self.count - tried)
        elif last == preferred:
            merged = interleave_families(other + same, 1)  # keep alternating: the other's turn
        else:
            merged = interleave_families(same + other, 1)  # keep alternating: the preferred's turn
        merged += unusable
        if race.history is not None:
            emit = race.emit if race.trace is not None else None
            merged = apply_history(race.history, merged, race.loop, emit)
        race.requeue(merged)  # the untried addresses, re-sorted with the new ones

    def close(self) -> None:
        """Cancel the resolution-delay timer and abandon the lookups still running.

        Nothing is awaited: an abandoned lookup never delays the caller, and the
        caller's own cancellation can never land between a won race and the return
        of its socket. A lookup task ends on its own once it sees the cancellation
        (at the loop's next iteration for a resolver that is just waiting).
        """
        self.closed = True
        self._take_held()
        last_resort, self.last_resort = self.last_resort, None  # no cycle through it
        if last_resort is not None:
            last_resort.close()
        lookups, self.lookups = self.lookups, []  # once: a second cancel would cut a cleanup
        for task in lookups:
            task.cancel()  # the running one too: it sees it once it returns or awaits


def _canonical(entry: AddrInfoType) -> tuple[AddrInfoType, object]:
    """*entry* with an IPv4-mapped IPv6 address turned into IPv4, and its identity."""
    if entry[0] != socket.AF_INET6:
        return entry, (entry[4][0], entry[4][1])
    key = normalise(entry[4])  # the resolver's answer was checked to be a literal
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
    if not _begin(feeder, host, family):
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


def _begin(feeder: _Feeder, host: str, family: int) -> bool:
    """Trace a lookup's start; whether to go on and ask the resolver."""
    if feeder.closed:
        # Only an eager task (Python 3.12+) starts after the race ended: a trace that
        # raised on the first lookup's start. Run on 3.12 and 3.13 by
        # test_a_trace_that_raises_during_resolution[virtual-eager-ResolutionStarted].
        return False  # pragma: no cover - the coverage gate runs on 3.11
    if feeder.race.trace is not None:
        feeder.race.emit(_trace.ResolutionStarted(host, family, feeder.race.loop.time()))
        # The trace raised and ended the race: do not even ask. An eager task (Python
        # 3.12's eager_task_factory) gets here while connect() is still creating it,
        # before close() could know it to cancel it.
        return not (being_cancelled() or feeder.closed)
    return True


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
    nat64: Nat64Discovery | bool = True,
    last_resort_delay: float = 2.0,
    max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT,
    timeout: float | None = None,  # noqa: ASYNC109 - the race must know it: see Raises
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
        nat64: Where the NAT64 prefixes come from when an IPv4 address has no IPv4
            path from this host (an IPv6-only network, RFC 8305 section 7): ``True``,
            the shared :func:`happydial.default_nat64_discovery`; a
            :class:`~happydial.Nat64Discovery` of your own; ``False``: never
            synthesise. Only with ``family=AF_UNSPEC``; costs nothing where IPv4 works.
        last_resort_delay: How long the IPv6 addresses synthesised from A answers
            wait behind the native IPv6 ones (RFC 8305 section 7.2's Last Resort Local
            Synthesis Delay, 2 s); none wait when the name has no AAAA answer.
        max_in_flight: As for :func:`happydial.start_connection` (6; ``None``: no cap).
        timeout: An overall deadline in seconds for the whole call: the lookups and
            every attempt (*attempt_timeout* bounds each attempt, and
            *happy_eyeballs_delay* paces their starts). ``None`` (the default): none.

    Returns:
        A connected, non-blocking socket, owned by the caller.

    Raises:
        TimeoutError: *timeout* passed. Its ``__cause__`` groups every lookup and
            attempt that had failed or was still pending, each naming what it was.
        socket.gaierror: No lookup produced an address; its ``__cause__`` groups the
            lookup errors of both families.
        OSError: Every connection attempt failed (see :func:`happydial.start_connection`).
        TypeError: An argument has the wrong type.
        ValueError: An argument has a bad value.
    """
    check_host_port(host, port)
    families = _families(family)
    delay = check_delay(happy_eyeballs_delay, "happy_eyeballs_delay", allow_zero=True)
    res_delay = check_delay(resolution_delay, "resolution_delay", allow_zero=True)
    per_attempt = check_delay(attempt_timeout, "attempt_timeout", allow_zero=False)
    count = check_count(first_address_family_count, "first_address_family_count")
    local = _local_addr_infos(local_addr)
    check_callable(socket_factory, "socket_factory")
    check_callable(resolver, "resolver")
    check_callable(trace, "trace")
    if history is not None and not isinstance(history, AddressHistory):
        raise TypeError(f"history must be an AddressHistory or None, got {history!r}")
    source_of = _sources_for(sources, local)
    nat64_use = check_nat64_options(nat64, last_resort_delay, family)
    cap, deadline = check_limits(max_in_flight, timeout)
    loop = asyncio.get_running_loop()
    race = RACE_CLASS.get()(
        loop,
        delay,
        local_addr_infos=local,
        socket_factory=socket_factory,
        attempt_timeout=per_attempt,
        trace=trace,
        history=history,
        max_in_flight=cap,
        timeout=deadline,
    )
    if deadline is not None:
        race.target = f" to {format_sockaddr((host, port))}"
    resolve = resolver or getaddrinfo_resolver
    # RFC 8305 section 7: IPv4 with no IPv4 path goes through NAT64 (see _ipv6only).
    synthesis = None if nat64_use is None else Synthesis(race, nat64_use, resolve, source_of)
    literal = _literal_addr_infos(host, port)
    if literal is not None:
        if family != socket.AF_UNSPEC and literal[0][0] != family:
            raise ValueError(f"host {host!r} is not an address of family {family!r}")
        return await _connect_literal(race, literal, synthesis, all_errors=all_errors)
    feeder = _Feeder(race, host, families, res_delay or 0.0, count, source_of)
    if synthesis is not None:
        feeder.last_resort = LastResort(feeder, synthesis)
    race.keep_feeding()
    # The lookups are abandoned the moment the race ends (won, failed or
    # cancelled), from inside the race: they see their cancellation before this
    # task resumes, and nothing after the race is awaited.
    race.when_finished = feeder.close
    if resolve is getaddrinfo_resolver and trace is None:
        _start_default_lookups(host, port, families, feeder, loop)
    else:  # a task per family, to trace its start or to await any resolver
        feeder.lookups = [
            loop.create_task(_lookup(resolve, host, port, f, feeder)) for f in families
        ]
    try:
        sock, _ = await race.connect(all_errors=all_errors)
    except (OSError, ExceptionGroup) as exc:  # a group (all_errors=True) means attempts
        explain(synthesis, exc)
        error = _failure(exc, host, families, feeder)
        if error is None:
            raise
        raise error from error.__cause__
    finally:
        feeder.close()  # awaits nothing: see _Feeder.close
        feeder.errors = {}  # their tracebacks hold the lookups' frames, which hold the feeder
    return sock


def _sources_for(
    sources: SourcesType | None, local: list[AddrInfoType] | None
) -> Callable[[AddrInfoType], object]:
    """The source address of each destination: given, bound to, or the kernel's."""
    if sources is not None:
        return sources_lookup(sources)
    cache = default_source_cache()
    return cache if local is None else bound_sources(local, cache)


async def _connect_literal(
    race: ConnectRace,
    literal: list[AddrInfoType],
    synthesis: Synthesis | None,
    *,
    all_errors: bool,
) -> socket.socket:
    """Race an IP literal: as it is, or through NAT64 from an IPv6-only host."""
    if synthesis is not None:
        literal = await synthesis.literal(literal)
    race.add(literal)
    try:
        sock, _ = await race.connect(all_errors=all_errors)
    except (OSError, ExceptionGroup) as exc:  # a group: all_errors=True
        explain(synthesis, exc)
        raise
    return sock


def _families(family: object) -> list[int]:
    """The families to look up for *family* (checked)."""
    if not is_int(family):
        raise TypeError(f"family must be an int (AF_UNSPEC, AF_INET or AF_INET6), got {family!r}")
    if family not in _FAMILIES:
        raise ValueError(f"family must be AF_UNSPEC, AF_INET or AF_INET6, got {family!r}")
    return _FAMILIES[family]


def _failure(
    error: BaseException, host: str, families: list[int], feeder: _Feeder
) -> OSError | None:
    """What a failed race of a host name raises, when not the race's own *error*."""
    if feeder.race.schedule.expired:
        return _deadline_with_lookups(error, host, feeder)
    if feeder.race.started:
        return None
    return _resolution_error(host, families, feeder.errors)


def _deadline_with_lookups(error: BaseException, host: str, feeder: _Feeder) -> TimeoutError:
    """The race's deadline error, with what each lookup did in its cause too."""
    lookups: list[Exception] = [feeder.errors[f] for f in _RECORD if f in feeder.errors]
    lookups += [
        TimeoutError(f"the {_RECORD[f]} lookup of {host!r} had not answered")
        for f in _RECORD
        if f in feeder.waiting
    ]
    group = error.__cause__
    attempts = list(group.exceptions) if isinstance(group, ExceptionGroup) else []
    raced = deadline_error(feeder.race.timeout, attempts, feeder.race.target)  # type: ignore[arg-type]
    if lookups:
        raced.__cause__ = ExceptionGroup("what was still pending or had failed", lookups + attempts)
    return raced


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
