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
5. With a resolver that has ``resolve_https``, the name's HTTPS records (RFC 9460)
   are asked for with AAAA and A (Happy Eyeballs v3, ``_Services``): an address
   answer waits for them at most ``resolution_delay``; their hints race early, each
   record's endpoints go in priority order on its port, the name's own addresses last.
6. When the race ends (won, failed or cancelled), lookups still running are
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
from collections.abc import Awaitable, Callable, Iterable, Sequence

from . import _trace
from ._addresses import (
    AddrInfoType,
    SocketFactoryType,
    check_addr_infos,
    literal_addr_info,
    normalise,
)
from ._delays import DelayPolicy
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
from ._selection import SourcesType, merge_answers, ranks_below_ipv4, sources_lookup
from ._sockets import being_cancelled
from ._sources import bound_sources, default_source_cache
from ._svcb import ServiceBinding, hint_addr_infos, service_bindings
from ._trace import TraceType
from ._validate import (
    DEFAULT_MAX_IN_FLIGHT,
    check_attempt_delay,
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

    # Slots: one feeder per connect() of a host name (see bench/, section 5).
    __slots__ = (
        "closed",
        "count",
        "errors",
        "held",
        "host",
        "last_resort",
        "lookups",
        "race",
        "resolution_delay",
        "seen",
        "services",
        "sources",
        "timer",
        "waiting",
    )

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
        # Answers held back (RFC 8305 section 3); a tuple, so that the common case,
        # nothing held, allocates nothing (every in-flight call's object counts, see
        # bench/ section 5: they make the garbage collector run).
        self.held: tuple[AddrInfoType, ...] = ()
        self.timer: asyncio.TimerHandle | None = None
        self.seen: set[object] = set()
        self.errors: dict[int, OSError] = {}
        self.lookups: list[asyncio.Task[None] | PendingLookup] = []
        self.closed = False
        self.last_resort: LastResort | None = None  # RFC 8305 s. 7.2, see _ipv6only
        self.services: _Services | None = None  # HTTPS records (RFC 9460), see _Services

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
        if self.services is not None:
            addr_infos = self.services.expand(self.host, family, addr_infos or [])
        fresh = self._fresh(addr_infos or ())
        if self.last_resort is not None:
            fresh = self.last_resort.take(family, fresh)  # IPv4 with no IPv4 path: NAT64
        self._arrived(family, fresh)

    def _arrived(self, family: int, fresh: list[AddrInfoType]) -> None:
        """Feed new addresses of *family*, or hold them for the resolution delay."""
        if fresh and self.waiting and self._should_wait(family, fresh):
            self.held = (*self.held, *fresh)
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
        if _HTTPS in self.waiting:
            return True  # HEv3: the HTTPS records may name other ports, hints, priorities
        if self.services is not None and self.services.fallback_waits(fresh):
            return True
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
        held, self.held = self.held, ()
        return list(held)

    def _feed(self, new: list[AddrInfoType]) -> None:
        """Merge *new* into the untried addresses, in interleaved order (section 4)."""
        if not new:
            return
        race = self.race
        # Section 4: sort by RFC 6724 first (the untried addresses with the new
        # ones), then interleave the usable ones; those with no source go last.
        merged = merge_answers(race.schedule.queued, new, race.started, self.count, self.sources)
        if self.services is not None:
            merged = self.services.ordered(merged)  # RFC 9460: by record priority first
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


# The HTTPS lookup's key in _Feeder.waiting; a record target's lookups have the keys
# below it. Not families (positive), nor _ipv6only's keys (-64, -65).
_HTTPS = -1000


def _on_port(entry: AddrInfoType, port: int) -> AddrInfoType:
    """*entry* with its sockaddr's port replaced by *port*."""
    return (entry[0], entry[1], entry[2], entry[3], (entry[4][0], port, *entry[4][2:]))


class _Services:
    """The HTTPS records of one connect(): what each address answer stands for.

    Happy Eyeballs v3 on top of the feeder. Each ServiceMode record (RFC 9460) is an
    endpoint: a target name's addresses on the record's port. Its address hints are
    raced provisionally until the target's own answer of that family arrives (section
    7.3: then the hints are ignored; an untried hint is dropped, a tried one is not
    tried again). The queue is ordered by record priority first (stable: the RFC 8305
    order within a record stands); the name's own addresses on the caller's port come
    last, as the fallback section 3 allows when no record's endpoint works.
    """

    __slots__ = (
        "answers",
        "asked",
        "bindings",
        "chosen",
        "families",
        "feeder",
        "lookups",
        "origin",
        "owner",
        "port",
        "provisional",
        "rank",
        "resolver",
    )

    def __init__(
        self, feeder: _Feeder, resolver: ResolverType, port: int, families: list[int]
    ) -> None:
        self.feeder = feeder
        self.resolver = resolver
        self.port = port
        self.families = families
        self.origin = feeder.host.rstrip(".").lower()  # names compare as _svcb spells them
        self.owner = self.origin
        self.bindings: list[ServiceBinding] = []
        self.answers: dict[tuple[str, int], list[AddrInfoType]] = {}
        self.asked: set[tuple[str, int]] = set()
        self.provisional: dict[tuple[str, int], set[object]] = {}
        self.rank: dict[object, int] = {}  # address key -> record index
        self.chosen: dict[object, ServiceBinding] = {}
        self.lookups = 0

    def expand(self, name: str, family: int, entries: list[AddrInfoType]) -> list[AddrInfoType]:
        """A real answer for *name*: its endpoints, the untried hints it replaces dropped."""
        name = name.rstrip(".").lower()
        if entries:
            self.answers[name, family] = entries
            self._drop_hints(name, family)
        out: list[AddrInfoType] = []
        for index, binding in enumerate(self.bindings):
            if binding.target_of(self.owner) == name:
                out += self._endpoints(index, binding, entries)
        if name == self.origin:
            out += entries  # the fallback: the name's own addresses on the caller's port
        return out

    def _endpoints(
        self, index: int, binding: ServiceBinding, entries: list[AddrInfoType]
    ) -> list[AddrInfoType]:
        port = binding.port or self.port
        out = [_on_port(entry, port) for entry in entries]
        for entry in out:
            key = _canonical(entry)[1]
            self.rank.setdefault(key, index)  # the first (most preferred) record keeps it
            self.chosen.setdefault(key, binding)
        return out

    def _drop_hints(self, name: str, family: int) -> None:
        hints = self.provisional.pop((name, family), set())
        race = self.feeder.race
        drop = hints - {_canonical(entry)[1] for entry in race.started}
        if not drop:
            return
        self.feeder.seen -= drop  # the real answer may bring the same address back
        race.requeue([a for a in race.schedule.queued if _canonical(a)[1] not in drop])

    def fallback_waits(self, fresh: list[AddrInfoType]) -> bool:
        """Whether *fresh*, all the name's own addresses, waits for record targets' answers.

        With records, those addresses come after every record's endpoints: they do
        not start alone while a target's lookup may still bring endpoints that go
        first (for the resolution delay at most, as any held answer).
        """
        if not self.bindings or not any(k < _HTTPS for k in self.feeder.waiting):
            return False
        last = len(self.bindings)
        return all(self.rank.get(_canonical(a)[1], last) == last for a in fresh)

    def ordered(self, entries: list[AddrInfoType]) -> list[AddrInfoType]:
        """*entries* by record priority; the name's own addresses last."""
        last = len(self.bindings)
        return sorted(entries, key=lambda entry: self.rank.get(_canonical(entry)[1], last))

    def answered(self, name: str, bindings: list[ServiceBinding], error: OSError | None) -> None:
        """The HTTPS lookup ended: add each record's endpoints, hints and target lookups."""
        feeder = self.feeder
        feeder.waiting.discard(_HTTPS)
        race = feeder.race
        if race.trace is not None:
            event = _trace.ServiceBindingsResolved(
                feeder.host, name, tuple(bindings), error, race.loop.time()
            )
            race.emit(event)
        self.owner, self.bindings = name, bindings
        new: dict[int, list[AddrInfoType]] = {f: [] for f in self.families}
        for index, binding in enumerate(bindings):
            target = binding.target_of(name)
            for family in self.families:
                known = self.answers.get((target, family))
                if known is not None:
                    new[family] += self._endpoints(index, binding, known)
                    continue
                hinted = hint_addr_infos(binding, self.port, family)
                hints = self._endpoints(index, binding, hinted)
                self.provisional.setdefault((target, family), set()).update(
                    _canonical(entry)[1] for entry in hints
                )
                new[family] += hints
                if target != self.origin:
                    self._look_up(target, family)
        self._settle([a for f in self.families for a in feeder._fresh(new[f])])
        if not feeder.waiting:
            race.stop_feeding()

    def _settle(self, fresh: list[AddrInfoType]) -> None:
        """Feed the new endpoints with what waited for the HTTPS answer, or hold them all.

        One feed, so the race's next attempt sees every record's endpoints ranked
        together; IPv4 alone still waits for IPv6 (RFC 8305 section 3).
        """
        feeder = self.feeder
        pending = [*feeder.held, *fresh]
        ipv6 = [a for a in pending if a[0] == socket.AF_INET6]
        hold = bool(feeder.waiting) and (not ipv6 or feeder._should_wait(socket.AF_INET6, ipv6))
        if not hold:
            feeder._feed(feeder._take_held() + fresh)
        elif fresh:
            feeder.held = tuple(pending)
            if feeder.timer is None:
                feeder.timer = feeder.race.loop.call_later(feeder.resolution_delay, feeder._release)

    def _look_up(self, target: str, family: int) -> None:
        """Ask for a record's target name's addresses of *family*, once."""
        if (target, family) in self.asked:
            return  # two records, one target: one lookup
        self.asked.add((target, family))
        self.lookups += 1
        key = _HTTPS - self.lookups  # a waiting key per lookup; never a family
        self.feeder.waiting.add(key)
        done = functools.partial(self.target_answered, target, key)
        feeder = self.feeder
        feeder.lookups.append(
            feeder.race.loop.create_task(
                _lookup(self.resolver, target, self.port, family, feeder, done)
            )
        )

    def target_answered(
        self,
        name: str,
        key: int,
        family: int,
        addr_infos: list[AddrInfoType] | None,
        error: OSError | None,
    ) -> None:
        """A record's target name answered (or failed) for *family*."""
        feeder = self.feeder
        race = feeder.race
        feeder.waiting.discard(key)
        if race.trace is not None:
            if error is not None:
                race.emit(_trace.ResolutionFailed(name, family, error, race.loop.time()))
            else:
                found = tuple(addr_infos or ())
                race.emit(_trace.ResolutionFinished(name, family, found, race.loop.time()))
        feeder._arrived(family, feeder._fresh(self.expand(name, family, addr_infos or [])))

    def won(self, winner: AddrInfoType) -> None:
        """Tell the trace which record the race was won on (if it was one's)."""
        race = self.feeder.race
        binding = self.chosen.get(_canonical(winner)[1])
        if binding is not None and race.trace is not None:
            event = _trace.ServiceBindingChosen(
                self.feeder.host, binding, binding.tcp_alpn, binding.ech, winner, race.loop.time()
            )
            race.trace(event)  # not race.emit: the race is over, a bug raises here


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


Answered = Callable[[int, list[AddrInfoType] | None, OSError | None], None]


async def _lookup(
    resolver: ResolverType,
    host: str,
    port: int,
    family: int,
    feeder: _Feeder,
    answered: Answered | None = None,
) -> None:
    """One family's lookup, start to end; nothing ever escapes this task.

    The task is cancelled only when the race no longer needs it (see
    :meth:`_Feeder.close`); from then on, whatever the resolver does (answers,
    fails, raises while cleaning up) is nobody's business and is dropped.
    """
    if not _begin(feeder, host, family):
        return
    done = answered or feeder.answered  # a record's target name has its own (_Services)
    # No local may hold an error past its except clause: the error's traceback
    # holds this frame, and the frame the feeder (a cycle, freed only by the GC).
    try:
        entries = _usable(await resolver(host, port, family), family, host)
    except OSError as exc:
        if not being_cancelled():
            done(family, None, exc)
    except asyncio.CancelledError as exc:
        if being_cancelled():
            raise
        # The resolver was cancelled by someone else (a shared in-flight lookup that
        # another waiter cancelled): this family's lookup failed, the other goes on.
        done(family, None, _cancelled_lookup(host, exc))
    except BaseException as exc:  # noqa: BLE001 - every kind: see _resolver_bug
        _resolver_bug(feeder, exc)
    else:
        if being_cancelled():
            # The resolver swallowed its cancellation and answered anyway. Run by
            # test_an_abandoned_lookup_is_nobodys_business[answers], but coverage's
            # tracer does not see this frame once a CancelledError was thrown into it.
            return  # pragma: no cover
        done(family, entries, None)


async def _https_lookup(query: HttpsQuery, host: str, services: _Services) -> None:
    """The HTTPS-record lookup (aliases followed), start to end; as :func:`_lookup`.

    A failure counts as no record (RFC 9460 section 3: connect as without one).
    """
    try:
        name, bindings = await service_bindings(query, host)
    except OSError as exc:
        if not being_cancelled():
            services.answered(host, [], exc)
    except BaseException as exc:  # noqa: BLE001 - every kind: see _resolver_bug
        _resolver_bug(services.feeder, exc)
    else:
        if being_cancelled():
            return  # pragma: no cover - as in _lookup: the query swallowed its cancellation
        try:
            services.answered(name, bindings, None)
        except BaseException as exc:  # noqa: BLE001 - a trace that raised: to the caller
            services.feeder.race.report_bug(exc)


HttpsQuery = Callable[[str], Awaitable[Sequence[ServiceBinding]]]


def _https_source(resolver: object) -> HttpsQuery | None:
    """The resolver's HTTPS-record query, if it has one and it is on.

    A resolver takes part when it has a ``resolve_https(name)`` coroutine method,
    unless its ``https`` attribute is false (:class:`~happydial.DnspythonResolver`'s
    is, unless made with ``https=True``).
    """
    query = getattr(resolver, "resolve_https", None)
    if query is None or not getattr(resolver, "https", True):
        return None
    check_callable(query, "resolver.resolve_https")
    return query  # type: ignore[no-any-return]


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
    happy_eyeballs_delay: float | DelayPolicy | None = 0.25,
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
            Attempt Delay, 250 ms recommended); ``None``: one at a time; ``0``: all
            at once; or a :class:`~happydial.DelayPolicy` (see
            :func:`happydial.start_connection`).
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
    if _trace.RECORDING.get() is not None:  # inside happydial.recording()
        from ._report import record_call  # noqa: PLC0415 - loaded by recording() already

        return await record_call(connect, locals())
    check_host_port(host, port)
    families = _families(family)
    delay = check_attempt_delay(happy_eyeballs_delay, "happy_eyeballs_delay")
    res_delay = check_delay(resolution_delay, "resolution_delay", allow_zero=True)
    per_attempt = check_delay(attempt_timeout, "attempt_timeout", allow_zero=False)
    count = check_count(first_address_family_count, "first_address_family_count")
    local = _local_addr_infos(local_addr)
    _check_plugins(socket_factory, resolver, trace, history)
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
    _start_lookups(resolve, host, port, families, feeder)
    try:
        sock, winner = await race.connect(all_errors=all_errors)
    except (OSError, ExceptionGroup) as exc:  # a group (all_errors=True) means attempts
        explain(synthesis, exc)
        error = _failure(exc, host, families, feeder)
        if error is None:
            raise
        raise error from error.__cause__
    else:
        if feeder.services is not None:
            _chosen(feeder.services, winner, sock)
    finally:
        feeder.close()  # awaits nothing: see _Feeder.close
        feeder.errors = {}  # their tracebacks hold the lookups' frames, which hold the feeder
    return sock


def _check_plugins(
    socket_factory: object, resolver: object, trace: object, history: object
) -> None:
    """Refuse a plugin that is not callable, or a history that is not one."""
    check_callable(socket_factory, "socket_factory")
    check_callable(resolver, "resolver")
    check_callable(trace, "trace")
    if history is not None and not isinstance(history, AddressHistory):
        raise TypeError(f"history must be an AddressHistory or None, got {history!r}")


def _start_lookups(
    resolve: ResolverType, host: str, port: int, families: list[int], feeder: _Feeder
) -> None:
    """Start the lookups: AAAA and A, and the HTTPS records when the resolver can."""
    loop = feeder.race.loop
    https = _https_source(resolve)  # checked before any lookup starts
    if resolve is getaddrinfo_resolver and feeder.race.trace is None:
        _start_default_lookups(host, port, families, feeder, loop)
        return
    if https is not None:  # HEv3: HTTPS records asked with AAAA and A (_Services)
        # Before the address lookups start: an eager task (Python 3.12+) may answer
        # during create_task, and its answer must already wait for the HTTPS records.
        feeder.services = _Services(feeder, resolve, port, families)
        feeder.waiting.add(_HTTPS)
        feeder.lookups.append(loop.create_task(_https_lookup(https, host, feeder.services)))
    # A task per family, to trace its start or to await any resolver.
    feeder.lookups += [loop.create_task(_lookup(resolve, host, port, f, feeder)) for f in families]


def _chosen(services: _Services, winner: AddrInfoType, sock: socket.socket) -> None:
    """Trace the winner's HTTPS record; a trace that raises closes the socket."""
    try:
        services.won(winner)
    except BaseException:
        sock.close()
        raise


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
