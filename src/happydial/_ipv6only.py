"""IPv4 destinations on a host with no IPv4 path, reached through NAT64 (RFC 8305 s. 7).

:func:`happydial.connect` calls in here only for ``family=AF_UNSPEC`` and when an
IPv4 destination has no IPv4 source address (the kernel has no IPv4 route for it:
an IPv6-only host). Then:

* **An IPv4 literal** (section 7.1): the network's NAT64 prefixes are discovered
  (:class:`happydial.Nat64Discovery`, one ``ipv4only.arpa`` query per network) and
  the literal is raced as the synthesised IPv6 addresses. With no prefix, or an
  address no prefix may carry, the literal is raced as it is (it fails at once with
  "Network is unreachable") and the error says why nothing was synthesised.
* **A answers** (section 7.2): the A answers the host cannot reach are synthesised
  locally, as a last resort after the native AAAA answers (a DNS64 resolver's
  answers are native here: synthesised by the network, they come first). They are
  raced at once when the AAAA lookup found nothing (or nothing was synthesised);
  otherwise ``last_resort_delay`` (the Last Resort Local Synthesis Delay, 2 s) after
  the AAAA answer, when the native attempts start (the RFC counts from the last IPv6
  attempt's start), and while the AAAA lookup is pending, at most that long after
  they were made. Copies of addresses a DNS64 already answered are not made.

Every synthesised address is traced (:class:`happydial.AddressSynthesized`), and
when the call fails, each error of a synthesised attempt names the IPv4 address
and the prefix as a note next to the "while connecting to" one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _trace
from ._addresses import AddrInfoType
from ._dns64 import Nat64Discovery
from ._errors import format_sockaddr
from ._nat64 import Nat64Prefix, non_global_reason, synthesize_addr_infos
from ._sockets import being_cancelled
from ._validate import check_delay

if TYPE_CHECKING:
    from ._connect import ResolverType, _Feeder
    from ._racer import ConnectRace

__all__ = [
    "LastResort",
    "Nat64Use",
    "Synthesis",
    "check_nat64_options",
    "default_nat64_discovery",
    "explain",
]

_DEFAULT = Nat64Discovery()

LAST_RESORT = -64
"""The key the last-resort synthesis holds in the feeder's set of awaited answers."""
_STARTING = -65  # held while the synthesis task starts (an eager task may finish at once)


def default_nat64_discovery() -> Nat64Discovery:
    """The process-wide :class:`Nat64Discovery` that ``connect(nat64=True)`` uses.

    Configure it once (``default_nat64_discovery().configure("64:ff9b::/96")`` with a
    prefix from a PREF64 option) or turn discovery off (``.discover = False``).
    """
    return _DEFAULT


@dataclass(frozen=True, slots=True)
class Nat64Use:
    """The validated ``nat64`` and ``last_resort_delay`` of a :func:`connect` call."""

    discovery: Nat64Discovery
    delay: float


# What connect()'s defaults (nat64=True, last_resort_delay=2.0, RFC 8305 section 7.2) give.
_DEFAULT_USE = Nat64Use(_DEFAULT, 2.0)


def check_nat64_options(nat64: object, last_resort_delay: object, family: int) -> Nat64Use | None:
    """Validate the options; ``None`` when nothing is to be synthesised.

    Only ``AF_UNSPEC`` synthesises: a caller asking for one family wants that
    family's addresses, not the other's in disguise.
    """
    if isinstance(last_resort_delay, bool) or not isinstance(last_resort_delay, (int, float)):
        raise TypeError(f"last_resort_delay must be a number of seconds, got {last_resort_delay!r}")
    delay = check_delay(last_resort_delay, "last_resort_delay", allow_zero=True)
    if isinstance(nat64, Nat64Discovery):
        discovery = nat64
    elif nat64 is True:
        discovery = _DEFAULT
    elif nat64 is False:
        return None
    else:
        raise TypeError(f"nat64 must be a Nat64Discovery or a bool, got {nat64!r}")
    if family != socket.AF_UNSPEC:
        return None
    if discovery is _DEFAULT_USE.discovery and delay == _DEFAULT_USE.delay:
        return _DEFAULT_USE  # frozen: every call with the defaults shares it
    return Nat64Use(discovery, delay)  # type: ignore[arg-type]


def no_ipv4_path(entry: AddrInfoType, sources: Callable[[AddrInfoType], object]) -> bool:
    """Whether *entry* is IPv4 and the host has no source address to reach it."""
    return entry[0] == socket.AF_INET and sources(entry) is None


class Synthesis:
    """One call's synthesis: its settings, what it made (to trace and explain)."""

    __slots__ = ("notes", "origins", "race", "resolver", "sources", "use")

    def __init__(
        self,
        race: ConnectRace,
        use: Nat64Use,
        resolver: ResolverType,
        sources: Callable[[AddrInfoType], object],
    ) -> None:
        self.race = race
        self.use = use
        self.resolver = resolver
        self.sources = sources
        self.origins: dict[tuple[Any, ...], tuple[AddrInfoType, Nat64Prefix]] = {}
        self.notes: list[str] | None = None  # made when first needed: most calls need none

    async def literal(self, literal: list[AddrInfoType]) -> list[AddrInfoType]:
        """What to race for an IP literal: synthesised when it is IPv4 with no path (s. 7.1)."""
        if not no_ipv4_path(literal[0], self.sources):
            return literal
        prefixes = await self.use.discovery.prefixes(self.resolver)
        return self.synthesize(literal, prefixes)

    def synthesize(
        self,
        ipv4: list[AddrInfoType],
        prefixes: tuple[Nat64Prefix, ...],
        natives: list[AddrInfoType] | None = None,
    ) -> list[AddrInfoType]:
        """The IPv6 entries to race for *ipv4*; *ipv4* itself when none can be made.

        Copies of *natives* (a DNS64's answers) are not made, nor traced.
        """
        if not prefixes:
            why = _no_prefix_reason(self.use.discovery)
            self._note(f"{_listing(ipv4)}: no IPv4 path from this host, and {why}")
            return ipv4
        result = synthesize_addr_infos([*(natives or ()), *ipv4], prefixes)
        loop, trace = self.race.loop, self.race.trace is not None
        for made, origin in result.origins:
            prefix = next(p for p in prefixes if made[4][0] in p)
            self.origins[made[4]] = (origin, prefix)
            if trace:
                self.race.emit(_trace.AddressSynthesized(made, origin, str(prefix), loop.time()))
        for entry in result.refused:
            self._note(_refusal(entry, prefixes))
        return [*(made for made, _ in result.origins), *result.refused]

    def explain(self, error: BaseException) -> None:
        """Note on *error* (and the attempt errors it groups) what was synthesised."""
        members: list[BaseException] = [error]
        group = error if isinstance(error, BaseExceptionGroup) else error.__cause__
        if isinstance(group, BaseExceptionGroup):
            members.extend(group.exceptions)
        for member in members:
            addr_info = getattr(member, "happydial_addr_info", None)
            made = None if addr_info is None else self.origins.get(addr_info[4])
            if made is not None:
                origin, prefix = made
                member.add_note(
                    f"synthesised from {format_sockaddr(origin[4])} with the NAT64 prefix"
                    f" {prefix} (RFC 8305 section 7)"
                )
        for note in self.notes or ():
            error.add_note(note)

    def _note(self, text: str) -> None:
        self.notes = [*(self.notes or ()), text]  # rare: only when synthesis fails


def explain(synthesis: Synthesis | None, error: BaseException) -> None:
    """:meth:`Synthesis.explain`, when the call synthesises at all."""
    if synthesis is not None:
        synthesis.explain(error)


def _listing(entries: list[AddrInfoType]) -> str:
    return ", ".join(dict.fromkeys(format_sockaddr(entry[4]) for entry in entries))


def _refusal(entry: AddrInfoType, prefixes: tuple[Nat64Prefix, ...]) -> str:
    """Why *entry* could not be synthesised with any of *prefixes*."""
    reason = non_global_reason(ipaddress.IPv4Address(entry[4][0])) or "unreachable"
    names = ", ".join(str(prefix) for prefix in prefixes)
    return (
        f"{format_sockaddr(entry[4])}: no IPv4 path from this host, and it is {reason},"
        f" which the NAT64 prefix {names} must not carry (RFC 6052 section 3.1)"
    )


def _no_prefix_reason(discovery: Nat64Discovery) -> str:
    state = discovery.state
    if state is not None and state.error is not None:
        return f"no NAT64 prefix was found (ipv4only.arpa: {state.error})"
    if not discovery.discover and state is None:
        return "NAT64 discovery is off"
    return "no NAT64 prefix was found (ipv4only.arpa has no DNS64 answer)"


class LastResort:
    """Synthesises the A answers of a name the host cannot reach over IPv4 (section 7.2).

    The feeder hands it every answer (:meth:`take`); it keeps the unreachable IPv4
    entries, discovers the prefixes in a task the race abandons like a lookup, and
    feeds the synthesised entries back when they are due (see the module notes).
    """

    __slots__ = (
        "feeder",
        "native",
        "native_at",
        "natives",
        "ready",
        "synthesis",
        "task",
        "timer",
    )

    def __init__(self, feeder: _Feeder, synthesis: Synthesis) -> None:
        self.feeder = feeder
        self.synthesis = synthesis
        self.native: bool | None = None  # did the AAAA lookup give addresses? None: not yet
        self.native_at = 0.0  # when it did: the native attempts start then
        self.natives: list[AddrInfoType] = []
        self.ready: list[AddrInfoType] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def take(self, family: int, fresh: list[AddrInfoType]) -> list[AddrInfoType]:
        """The part of a lookup's *fresh* answer to feed now; keeps the rest."""
        if family == socket.AF_INET6:
            if fresh:
                self.native, self.native_at = True, self.feeder.race.loop.time()
                self.natives = fresh
            else:
                self.native = bool(self.native)
            if self.ready is not None:
                self._schedule()
            return fresh
        unreachable = [entry for entry in fresh if no_ipv4_path(entry, self.synthesis.sources)]
        if not unreachable:
            return fresh
        waiting = self.feeder.waiting
        waiting.update((LAST_RESORT, _STARTING))
        # Abandoned with the lookups when the race ends (close), never awaited. With an
        # eager task factory (and a known prefix) it may be over before create_task
        # returns: _STARTING keeps it from ending the feeding before the feeder has
        # fed the rest of this answer.
        self.task = self.feeder.race.loop.create_task(self._synthesize(unreachable))
        waiting.discard(_STARTING)
        return [entry for entry in fresh if entry not in unreachable]

    async def _synthesize(self, ipv4: list[AddrInfoType]) -> None:
        try:
            synthesis = self.synthesis
            prefixes = await synthesis.use.discovery.prefixes(synthesis.resolver)
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            prefixes = ()  # the discovery was cancelled by another of its callers
        except Exception as exc:  # noqa: BLE001 - a resolver bug, raised by the race (if still on)
            self.feeder.race.report_bug(exc)
            return
        # A cancellation that comes as the discovery answers is raised by the await;
        # a trace that raises in synthesize() ends the race through emit().
        self.ready = self.synthesis.synthesize(ipv4, prefixes, self.natives)
        if prefixes and self.ready:
            self._schedule()
        else:
            # Nothing synthesised: race them as they are (they fail at once); or
            # nothing new (a DNS64 answered them all): let the race end when it may.
            self._release()

    def _schedule(self) -> None:
        """Release the synthesised entries now, or arm the last-resort timer."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.native is False:
            self._release()  # the name has no usable AAAA: nothing to wait for
            return
        # Section 7.2 counts the delay from the native attempts' start (the AAAA
        # answer); while AAAA is pending, from now: it waits at most that long.
        loop = self.feeder.race.loop
        since = self.native_at if self.native else loop.time()
        self.timer = loop.call_at(since + self.synthesis.use.delay, self._release)

    def _release(self) -> None:
        self.timer = None
        ready = self.ready or []
        synthesised = [entry for entry in ready if entry[0] == socket.AF_INET6]
        given_back = [entry for entry in ready if entry[0] != socket.AF_INET6]
        try:
            self.feeder.feed_late(LAST_RESORT, synthesised, given_back)
        except BaseException as exc:  # noqa: BLE001 - in a timer callback: the race raises it
            self.feeder.race.report_bug(exc)
        self.ready = None

    def close(self) -> None:
        """Cancel the timer and abandon the discovery (the race ended)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
