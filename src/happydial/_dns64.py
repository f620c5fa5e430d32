"""RFC 7050 discovery of the network's NAT64 prefixes, once per network.

:class:`Nat64Discovery` asks the active resolver for ``ipv4only.arpa`` AAAA, parses
the answers with :func:`happydial.nat64_prefixes_from_answers`, and caches the
result. The rules, in the order :meth:`Nat64Discovery.prefixes` applies them:

1. Configured prefixes (:meth:`Nat64Discovery.configure`: from configuration or a
   Router Advertisement's PREF64, RFC 8781) win while their lifetime lasts, and no
   query is sent. RFC 9872 prefers PREF64 to RFC 7050 wherever a host can read it.
2. With ``discover=False``, nothing else is known: no NAT64.
3. A discovered result is reused while it is fresh: ``ttl`` seconds after a
   discovery that found prefixes, ``negative_ttl`` seconds after one that found
   none, and only on the network it was learned on: when ``network_key()`` (by
   default the host's source addresses, see ``source_addresses``) changes, the
   result is stale. :meth:`Nat64Discovery.reset` forgets it at once.
4. Otherwise one discovery runs, and every concurrent caller awaits that same one.
   A caller that is cancelled leaves it running for the others; when the last one
   goes, the discovery is cancelled and awaited, so nothing outlives the calls.

A resolver error (:class:`OSError`: no such name, no AAAA, a timeout) means "no
NAT64 found" and is cached for ``negative_ttl`` like an answer without prefixes: on
a network without DNS64 that is the normal answer, and repeating it on every
connection would cost a lookup each time. Any other exception is a bug in the
resolver: it reaches every waiting caller and is not cached.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Literal

from ._addresses import AddrInfoType
from ._nat64 import (
    Nat64Prefix,
    _check_prefixes,
    check_lifetime,
    nat64_prefixes_from_answers,
)

__all__ = ["IPV4ONLY_ARPA", "Nat64Discovery", "Nat64State", "source_addresses"]

IPV4ONLY_ARPA = "ipv4only.arpa"
"""The Well-Known IPv4-only Name (RFC 7050 section 2.2, RFC 8880)."""

DiscoveryResolver = Callable[[str, int, int], Awaitable[list[AddrInfoType]]]

# Where source_addresses() pretends to send: any address the default route covers.
# No packet leaves: connect() on a UDP socket only asks the kernel for a route.
_PROBES = ((socket.AF_INET6, "2001:db8::1"), (socket.AF_INET, "192.0.2.1"))


def source_addresses() -> tuple[str | None, str | None]:
    """The host's source addresses for a destination beyond the link: (IPv6, IPv4).

    ``None`` for a family the host has no route for (an IPv6-only host has no IPv4
    source address). It costs two UDP sockets and no packet: ``connect()`` on a UDP
    socket only asks the kernel which route and source address it would use.
    """
    result: list[str | None] = []
    for family, destination in _PROBES:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((destination, 9))
                result.append(str(probe.getsockname()[0]))
        except OSError:
            result.append(None)
    return (result[0], result[1])


@dataclass(frozen=True, slots=True)
class Nat64State:
    """What a :class:`Nat64Discovery` knows of the network's NAT64.

    Attributes:
        prefixes: The NAT64 prefixes; empty when there is no NAT64.
        source: ``"configured"`` (by :meth:`Nat64Discovery.configure`) or
            ``"discovered"`` (by an ``ipv4only.arpa`` query).
        expires_at: When it stops being used, on the discovery's clock; ``None``:
            never (configured without a lifetime).
        error: The resolver's error when a discovery found nothing because of it.
        network: The ``network_key()`` of the network it was discovered on.
    """

    prefixes: tuple[Nat64Prefix, ...]
    source: Literal["configured", "discovered"]
    expires_at: float | None
    error: OSError | None = None
    network: Hashable = None

    def fresh(self, now: float) -> bool:
        """Whether it is still to be used at *now*."""
        return self.expires_at is None or now < self.expires_at


class _InFlight:
    """One discovery under way, and how many callers wait for it."""

    __slots__ = ("network", "task", "waiters")

    def __init__(self, task: asyncio.Task[tuple[Nat64Prefix, ...]], network: Hashable) -> None:
        self.task = task
        self.network = network
        self.waiters = 0


def _check_seconds(value: object, name: str) -> float:
    seconds = check_lifetime(value, name)
    if seconds is None:
        raise TypeError(f"{name} must be a number of seconds, got None")
    return seconds


class Nat64Discovery:
    """The NAT64 prefixes of the network this host is on, discovered once (RFC 7050).

    Share one per application (or per network interface, if you route by hand). In
    order: configured prefixes win while they last; with ``discover=False`` nothing
    else is used; a discovered result is reused for ``ttl`` (found) or
    ``negative_ttl`` (none found, or the resolver failed) seconds, on the same
    network only; otherwise one discovery runs, shared by every concurrent caller.

    >>> discovery = Nat64Discovery(network_key=None)
    >>> discovery.configure("64:ff9b::/96")
    >>> [str(prefix) for prefix in discovery.state.prefixes]
    ['64:ff9b::/96']

    Args:
        discover: Whether to query ``ipv4only.arpa``; ``False`` turns discovery off
            (only configured prefixes are used).
        ttl: Seconds a discovery that found prefixes is reused (the resolver API
            does not give the record's own TTL).
        negative_ttl: Seconds a discovery that found none (or failed) is reused.
        clock: Monotonic seconds (``loop.time`` of a virtual-clock loop in tests).
        network_key: Called before a cached result is used; a different value than
            when it was discovered means another network, so the result is dropped.
            Default: the host's IPv6 and IPv4 source addresses (a route lookup,
            no packet sent); ``None``: only the TTLs and :meth:`reset` expire results.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: A TTL is negative, infinite or NaN.
    """

    __slots__ = (
        "_clock",
        "_configured",
        "_discovered",
        "_enabled",
        "_generation",
        "_in_flight",
        "_network_key",
        "negative_ttl",
        "ttl",
    )

    def __init__(
        self,
        *,
        discover: bool = True,
        ttl: float = 600.0,
        negative_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        network_key: Callable[[], Hashable] | None = source_addresses,
    ) -> None:
        """Create a discovery that knows nothing yet (see the class docstring)."""
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        if network_key is not None and not callable(network_key):
            raise TypeError(f"network_key must be callable or None, got {network_key!r}")
        self._enabled = False
        self.discover = discover
        self.ttl = _check_seconds(ttl, "ttl")
        self.negative_ttl = _check_seconds(negative_ttl, "negative_ttl")
        self._clock = clock
        self._network_key = network_key
        self._configured: Nat64State | None = None
        self._discovered: Nat64State | None = None
        self._in_flight: _InFlight | None = None
        self._generation = 0

    # -- inspecting and injecting ---------------------------------------------

    @property
    def discover(self) -> bool:
        """Whether ``ipv4only.arpa`` is queried; ``False``: only configured prefixes are used."""
        return self._enabled

    @discover.setter
    def discover(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"discover must be a bool, got {value!r}")
        self._enabled = value

    @property
    def state(self) -> Nat64State | None:
        """What would be used now without a query, or ``None`` if nothing is known.

        Configured prefixes while their lifetime lasts, else the last discovery while
        its TTL lasts. It does not call ``network_key`` (the next
        :meth:`prefixes` does), nor start a discovery.
        """
        now = self._clock()
        for state in (self._configured, self._discovered if self.discover else None):
            if state is not None and state.fresh(now):
                return state
        return None

    def configure(
        self,
        prefixes: Nat64Prefix | str | Iterable[Nat64Prefix | str] | None,
        *,
        lifetime: float | None = None,
    ) -> None:
        """Use *prefixes* instead of discovering them (configuration, RFC 8781 PREF64).

        Args:
            prefixes: A prefix, several, an empty list (there is no NAT64 here: no
                query is sent), or ``None`` to drop the configuration and go back to
                discovery.
            lifetime: Seconds until the configuration lapses (a PREF64 option's
                lifetime; 0 withdraws it at once); ``None``: until changed.

        Raises:
            TypeError: An argument has the wrong type.
            ValueError: A prefix is no valid NAT64 prefix, or *lifetime* is negative.
        """
        seconds = check_lifetime(lifetime, "lifetime")
        if prefixes is None:
            self._configured = None
            return
        chosen = _check_prefixes(prefixes)
        expires_at = None if seconds is None else self._clock() + seconds
        self._configured = Nat64State(chosen, "configured", expires_at)

    def reset(self) -> None:
        """Forget what was discovered (the network changed); configured prefixes stay.

        A discovery under way still answers the callers already waiting for it, but
        its result is not kept: the next :meth:`prefixes` discovers again.
        """
        self._discovered = None
        self._in_flight = None
        self._generation += 1

    # -- discovering ---------------------------------------------------------

    async def prefixes(self, resolver: DiscoveryResolver) -> tuple[Nat64Prefix, ...]:
        """The network's NAT64 prefixes, discovering them with *resolver* if needed.

        Args:
            resolver: A :class:`happydial.Resolver` (``happydial.getaddrinfo_resolver``
                or the one given to :func:`happydial.connect`); it is asked
                ``resolver("ipv4only.arpa", 0, AF_INET6)``.

        Returns:
            The prefixes; empty when there is no NAT64, discovery is off, or the
            resolver failed.

        Raises:
            TypeError: *resolver* is not callable, or it returned no addr_info list.
            ValueError: *resolver* returned malformed addr_infos.
            Exception: Whatever else *resolver* raised (a bug in it).
        """
        if not callable(resolver):
            raise TypeError(f"resolver must be callable, got {resolver!r}")
        now = self._clock()
        configured = self._configured
        if configured is not None and configured.fresh(now):
            return configured.prefixes
        if not self.discover:
            return ()
        network = self._network_key() if self._network_key is not None else None
        known = self._discovered
        if known is not None and known.network == network and known.fresh(now):
            return known.prefixes
        in_flight = self._in_flight
        if in_flight is None or in_flight.network != network:
            loop = asyncio.get_running_loop()
            # Created before it is recorded: with an eager task factory the discovery
            # may already be over when create_task returns, which is fine.
            task = loop.create_task(self._discover(resolver, network, self._generation))
            in_flight = self._in_flight = _InFlight(task, network)
        in_flight.waiters += 1
        try:
            return await asyncio.shield(in_flight.task)
        finally:
            in_flight.waiters -= 1
            if self._in_flight is in_flight and in_flight.task.done():
                self._in_flight = None
            if in_flight.waiters == 0 and not in_flight.task.done():
                # The last caller was cancelled: nobody wants this discovery any more.
                in_flight.task.cancel()
                if self._in_flight is in_flight:
                    self._in_flight = None
                await asyncio.wait((in_flight.task,))

    async def _discover(
        self, resolver: DiscoveryResolver, network: Hashable, generation: int
    ) -> tuple[Nat64Prefix, ...]:
        error: OSError | None = None
        try:
            answers = await resolver(IPV4ONLY_ARPA, 0, socket.AF_INET6)
        except OSError as exc:
            found: tuple[Nat64Prefix, ...] = ()
            error = exc
        else:
            found = nat64_prefixes_from_answers(answers)
        if generation == self._generation:
            ttl = self.ttl if found else self.negative_ttl
            self._discovered = Nat64State(found, "discovered", self._clock() + ttl, error, network)
        return found
