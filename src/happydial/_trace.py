"""Trace events: what a race did, as small frozen values, for logs, the CLI and tests.

Each event is a :class:`~typing.NamedTuple`: immutable, read by field name, and
cheap to create and to define (frozen dataclasses cost milliseconds of import time).

A ``trace`` callable passed to :func:`happydial.start_connection` or
:func:`happydial.connect` receives one event per step, synchronously, at the moment
it happens. Events carry the event loop's time (``loop.time()``), so on a virtual
clock they are exact. When no ``trace`` is given no event object is ever built.

A trace callable should not raise. If it does, the call ends: every attempt is
stopped, every socket closed, and the exception propagates to the caller, like
any other programming error.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from ._addresses import AddrInfoType
from ._svcb import ServiceBinding

if TYPE_CHECKING:
    from ._report import Recording

__all__ = [
    "AddressSynthesized",
    "AttemptCancelled",
    "AttemptFailed",
    "AttemptStarted",
    "AttemptSucceeded",
    "DelayAdjusted",
    "HistoryReordered",
    "ResolutionFailed",
    "ResolutionFinished",
    "ResolutionStarted",
    "ServiceBindingChosen",
    "ServiceBindingsResolved",
    "TLSFailed",
    "TLSStarted",
    "TLSSucceeded",
    "TraceEvent",
    "TraceType",
]


class AttemptStarted(NamedTuple):
    """A connection attempt began: its socket exists and ``connect`` was called.

    Attributes:
        attempt: The attempt's number in this race, from 0, in start order.
        addr_info: The address being tried.
        time: The loop time at which it started.
    """

    attempt: int
    addr_info: AddrInfoType
    time: float


class AttemptFailed(NamedTuple):
    """An attempt failed (refused, unreachable, timed out, bind error, ...).

    Attributes:
        attempt: The attempt's number in this race.
        addr_info: The address that was tried.
        error: Why it failed.
        time: The loop time of the failure.
    """

    attempt: int
    addr_info: AddrInfoType
    error: BaseException
    time: float


class AttemptSucceeded(NamedTuple):
    """An attempt connected and won the race.

    Attributes:
        attempt: The attempt's number in this race.
        addr_info: The address now connected.
        time: The loop time at which it connected.
    """

    attempt: int
    addr_info: AddrInfoType
    time: float


class AttemptCancelled(NamedTuple):
    """An attempt was stopped because another won, or because the caller was cancelled.

    An attempt that connected in the same loop iteration as the winner is reported
    here too: its socket is closed.

    Attributes:
        attempt: The attempt's number in this race.
        addr_info: The address that was being tried.
        time: The loop time at which it was stopped.
    """

    attempt: int
    addr_info: AddrInfoType
    time: float


class HistoryReordered(NamedTuple):
    """An :class:`~happydial.AddressHistory` changed the order of the addresses to try.

    Attributes:
        before: The order before (resolver order, interleaved).
        after: The order the race will use.
        reasons: Why, one line per address the history knows something about.
        time: The loop time.
    """

    before: tuple[AddrInfoType, ...]
    after: tuple[AddrInfoType, ...]
    reasons: tuple[str, ...]
    time: float


class DelayAdjusted(NamedTuple):
    """The delay before the next attempt was picked per attempt, not fixed.

    Either an :class:`~happydial.AddressHistory` knew the address (its adaptive delay
    from a measured connect time) or a :class:`~happydial.DelayPolicy` chose it.

    Attributes:
        attempt: The attempt the delay follows.
        addr_info: That attempt's address.
        delay: The delay used, in seconds (clamped to RFC 8305's bounds).
        connect_time: The smoothed connect time the history measured for the
            address; ``None`` when a policy chose the delay.
        time: The loop time.
        reason: Who chose it: ``"history"``, or the policy's ``name``
            (``"constant"``, ``"exponential"``, ``"lan"``, ...).
    """

    attempt: int
    addr_info: AddrInfoType
    delay: float
    connect_time: float | None
    time: float
    reason: str = "history"


class ResolutionStarted(NamedTuple):
    """A host-name lookup for one address family began.

    Attributes:
        host: The name being looked up.
        family: ``AF_INET6`` or ``AF_INET``.
        time: The loop time at which it began.
    """

    host: str
    family: int
    time: float


class ResolutionFinished(NamedTuple):
    """A lookup answered with addresses.

    Attributes:
        host: The name that was looked up.
        family: ``AF_INET6`` or ``AF_INET``.
        addr_infos: The answer, as addr_info tuples.
        time: The loop time of the answer.
    """

    host: str
    family: int
    addr_infos: tuple[AddrInfoType, ...]
    time: float


class ResolutionFailed(NamedTuple):
    """A lookup failed, or answered with no address.

    Attributes:
        host: The name that was looked up.
        family: ``AF_INET6`` or ``AF_INET``.
        error: Why.
        time: The loop time of the failure.
    """

    host: str
    family: int
    error: BaseException
    time: float


class AddressSynthesized(NamedTuple):
    """An IPv4 address was made an IPv6 one, to reach it through NAT64 (RFC 8305 s. 7).

    The host has no IPv4 path to the address (no IPv4 source address for it), so
    the address is raced as the IPv6 address that a NAT64 translates back to it.

    Attributes:
        addr_info: The synthesised IPv6 entry, as it is raced.
        origin: The IPv4 entry it was made from (the literal, or an A answer).
        prefix: The NAT64 prefix used, as text (``"64:ff9b::/96"``).
        time: The loop time at which it was made.
    """

    addr_info: AddrInfoType
    origin: AddrInfoType
    prefix: str
    time: float


class ServiceBindingsResolved(NamedTuple):
    """The HTTPS-record lookup ended (RFC 9460; Happy Eyeballs v3).

    Attributes:
        host: The name given to :func:`~happydial.connect`.
        name: The name whose records these are (*host*, or where its AliasMode
            records led).
        bindings: Its ServiceMode records usable over TCP, in the order they are
            tried; empty when there are none (or the lookup failed: then *error*).
        error: Why the lookup failed, or ``None``.
        time: The loop time of the answer.
    """

    host: str
    name: str
    bindings: tuple[ServiceBinding, ...]
    error: BaseException | None
    time: float


class ServiceBindingChosen(NamedTuple):
    """The race was won on an endpoint of an HTTPS record.

    What the caller needs for its TLS handshake: the ALPN protocols that endpoint
    speaks over TCP and its ECH configuration (which Python's :mod:`ssl` cannot use
    yet: it is passed on, not used).

    Attributes:
        host: The name given to :func:`~happydial.connect`.
        binding: The record the winning address came from.
        alpn: The protocols to offer (``binding.tcp_alpn``), most preferred first.
        ech: The record's ECHConfigList, or ``None``.
        addr_info: The address connected to.
        time: The loop time.
    """

    host: str
    binding: ServiceBinding
    alpn: tuple[str, ...]
    ech: bytes | None
    addr_info: AddrInfoType
    time: float


class TLSStarted(NamedTuple):
    """An attempt's TCP connect completed and its TLS handshake began (``tls_in_race``).

    The attempt is still pending: it wins when its handshake completes. The time
    since its :class:`AttemptStarted` is its TCP connect time.

    Attributes:
        attempt: The attempt's number in this race.
        addr_info: The address connected to.
        time: The loop time at which TCP connected.
    """

    attempt: int
    addr_info: AddrInfoType
    time: float


class TLSSucceeded(NamedTuple):
    """An attempt's TLS handshake completed (the certificate verified, if asked).

    :class:`AttemptSucceeded` follows when it wins (it does, unless the call ended
    meanwhile).

    Attributes:
        attempt: The attempt's number in this race.
        addr_info: The address connected to.
        time: The loop time at which the handshake completed.
    """

    attempt: int
    addr_info: AddrInfoType
    time: float


class TLSFailed(NamedTuple):
    """An attempt failed in its TLS handshake, after TCP connected.

    A wrong certificate, a reset, ``ssl_handshake_timeout``, or the attempt's own
    timeout. :class:`AttemptFailed` follows with the same error: the race goes on.

    Attributes:
        attempt: The attempt's number in this race.
        addr_info: The address whose handshake failed.
        error: Why.
        time: The loop time of the failure.
    """

    attempt: int
    addr_info: AddrInfoType
    error: BaseException
    time: float


TraceEvent = (
    AttemptStarted
    | AttemptFailed
    | AttemptSucceeded
    | AttemptCancelled
    | ResolutionStarted
    | ResolutionFinished
    | ResolutionFailed
    | HistoryReordered
    | DelayAdjusted
    | AddressSynthesized
    | ServiceBindingsResolved
    | ServiceBindingChosen
    | TLSStarted
    | TLSSucceeded
    | TLSFailed
)
"""Any of the trace event types."""

TraceType = Callable[[TraceEvent], object]
"""The type of a ``trace`` callable."""


# The recording that connection calls made now report to (``happydial.recording()``,
# in _report). It lives here, with the trace that a recording taps, so that every
# call can check it without loading _report, which only a recording needs.
RECORDING: contextvars.ContextVar[Recording | None] = contextvars.ContextVar(
    "happydial_recording", default=None
)
