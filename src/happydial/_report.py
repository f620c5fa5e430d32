"""Establishment reports: what one connection call did and why, as one frozen value.

A caller asks for reports with ``with happydial.recording() as rec:``; every
top-level :func:`~happydial.start_connection` or :func:`~happydial.connect` call made
inside the block (by the caller or by a library, such as aiohttp's connector) adds
one :class:`ConnectionReport` to ``rec.reports`` when it ends, and the error a failed
call raises carries its report (:func:`connection_report`). No signature changes: the
recording travels in a :class:`contextvars.ContextVar`, which tasks inherit.

How, in three parts:

* :func:`reported` decorates the two entry points. Outside a recording it costs one
  ``ContextVar.get`` and one coroutine frame; nothing else runs.
* Inside one, the call's ``trace`` argument is replaced by a tee: a :class:`_Builder`
  that records every trace event (``_trace``), then the caller's own trace, if any.
  Nested calls (a resolver that connects, say) are not reported on their own: the
  variable is cleared for the duration of the call.
* When the call ends (returns, raises or is cancelled), the builder freezes what it
  saw into a :class:`ConnectionReport`: lookups, attempts with the stage each reached,
  the delays and why, and the outcome. It keeps text, never exception objects, so a
  report creates no reference cycle through tracebacks and frames.

The model is Apple's ``NWConnection.EstablishmentReport`` (per-resolution source and
duration, the attempt count, the successful endpoint), with what it leaves out: every
attempt's address, stage and error, and the delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from . import _trace
from ._errors import format_sockaddr, is_deadline_error
from ._svcb import ServiceBinding

__all__ = [
    "AttemptReport",
    "ConnectionReport",
    "LookupReport",
    "Recording",
    "ReportEvent",
    "connection_report",
    "first_line",
    "record_call",
    "recording",
    "service_text",
]

T = TypeVar("T")

#: The stage an attempt reached: its socket was being made (``socket``) or bound to a
#: local address (``bind``), its TCP connect was under way (``connect``), or its TLS
#: handshake (``tls``, for when TLS takes part in the race).
Stage = Literal["socket", "bind", "connect", "tls"]
AttemptOutcome = Literal["connected", "failed", "cancelled", "abandoned"]
LookupOutcome = Literal["answered", "failed", "abandoned"]
CallOutcome = Literal["connected", "failed", "cancelled", "timeout"]
#: A value in a :class:`ReportEvent`'s data: JSON-able and hashable.
EventValue = str | int | float | None | tuple[str, ...]

_ERROR_ATTRIBUTE = "happydial_report"
_QLOG_CATEGORY = "happy_eyeballs"


@dataclass(frozen=True, slots=True)
class LookupReport:
    """One host-name lookup of a :func:`~happydial.connect` call (one per family).

    Attributes:
        family: The record type asked for: ``"AAAA"`` (IPv6) or ``"A"`` (IPv4).
        host: The name looked up.
        source: Who was asked: the resolver's function or class name
            (``"getaddrinfo_resolver"``, the default; ``"AiodnsResolver"``; ...).
        start: When the lookup began, in seconds since the call's start.
        duration: How long it took to answer or fail, in seconds; ``None`` when it was
            abandoned (the call ended first).
        outcome: ``"answered"``, ``"failed"`` (an error, or no address), or
            ``"abandoned"``.
        addresses: The IP addresses answered, in the resolver's order.
        failure: Why it failed, in a few words (``"timed out"``, ``"failed"``).
        error: The error's text, when it failed.
    """

    family: Literal["AAAA", "A"]
    host: str
    source: str
    start: float
    duration: float | None
    outcome: LookupOutcome
    addresses: tuple[str, ...] = ()
    failure: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptReport:
    """One connection attempt, in start order.

    Attributes:
        index: The attempt's number in the call, from 0 (as in the trace events).
        address: The address tried, as text (``192.0.2.1:443``, ``[2001:db8::1]:443``).
        start: When it began, in seconds since the call's start.
        duration: How long until it connected, failed or was stopped, in seconds;
            ``None`` when the call ended without a word about it.
        stage: How far it got: ``"socket"`` (making the socket failed), ``"bind"``
            (binding it to a local address failed), ``"connect"`` (the TCP connect
            was under way) or ``"tls"``.
        outcome: ``"connected"`` (the winner); ``"failed"``; ``"cancelled"``: stopped
            because another attempt won; ``"abandoned"``: still pending when the call
            ended without a connection (cancelled, or out of time).
        failure: Why it failed, in a few words: ``"refused"``, ``"timed out"``,
            ``"network unreachable"``, ``"host unreachable"``, ``"reset"``,
            ``"address not available"``, ... or ``"failed"`` when no word fits.
        errno: The error's errno, if it has one.
        error: The error's text (its first line).
        delay_after: The attempt delay that followed this attempt's start, in seconds:
            the next attempt started then at the latest (at once if this one failed
            first). ``None``: no delay, the next attempt waits for this one to fail.
        delay_reason: Why that delay: ``"configured"`` (the call's
            ``happy_eyeballs_delay``), ``"history"`` (adapted to the connect time an
            :class:`~happydial.AddressHistory` measured for this address), or the
            name of a delay policy.
        synthesized_from: For an IPv6 address made from an IPv4 one to go through
            NAT64 (RFC 8305 section 7), that IPv4 address.
    """

    index: int
    address: str
    start: float
    duration: float | None
    stage: Stage
    outcome: AttemptOutcome
    failure: str | None = None
    errno: int | None = None
    error: str | None = None
    delay_after: float | None = None
    delay_reason: str = "configured"
    synthesized_from: str | None = None


@dataclass(frozen=True, slots=True)
class ReportEvent:
    """One step of a call, in the order it happened: the timeline of a report.

    Attributes:
        time: When, in seconds since the call's start.
        name: What happened, as a qlog event name without its category
            (``"dns_query_started"``, ``"connection_attempt_failed"``, ...; see
            :meth:`ConnectionReport.to_json`).
        data: The event's fields as ``(name, value)`` pairs; durations in the data are
            in milliseconds, as qlog writes them.
    """

    time: float
    name: str
    data: tuple[tuple[str, EventValue], ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectionReport:
    """What one :func:`~happydial.start_connection` or :func:`~happydial.connect` call did.

    Obtained from :func:`recording` (one per call) or :func:`connection_report` (from
    the error of a failed call). Times are the event loop's clock, as offsets in
    seconds from the moment the call began.

    Attributes:
        call: ``"start_connection"`` or ``"connect"`` (which the asyncio-shaped
            wrappers call).
        host: The host given to :func:`~happydial.connect`; ``None`` for
            :func:`~happydial.start_connection`.
        port: The port given to :func:`~happydial.connect`.
        addresses: The addresses given to :func:`~happydial.start_connection` (when
            given as a list or tuple), as text.
        outcome: ``"connected"``; ``"failed"`` (every attempt or lookup failed, or
            the arguments were refused); ``"cancelled"``; ``"timeout"`` (the call's
            overall ``timeout`` passed).
        duration: Seconds from the call's start to its end.
        peer: The address connected to, as text.
        winner: The index of the attempt that connected.
        error_type: The class name of the error raised, when the call failed.
        errno: Its errno, if any.
        error: Its text (the first line).
        delay: The configured ``happy_eyeballs_delay`` (``None``: one attempt at a
            time; text for a delay policy).
        attempt_timeout: The ``attempt_timeout`` given, if any.
        timeout: The overall ``timeout`` given, if any.
        max_in_flight: The cap on attempts in flight given, if any.
        lookups: Each lookup, in start order.
        attempts: Each attempt, in start order.
        reordered: Why an :class:`~happydial.AddressHistory` changed the order of the
            addresses, one line per address it knew something about.
        synthesized: Each address made for NAT64: ``NEW from ORIGIN (NAT64 prefix P)``.
        events: The timeline: every step, in order.
        started_at: The loop time at which the call began (to line up with trace
            events, whose ``time`` is the loop's).
        service: The HTTPS record (RFC 9460) the connection was made on, when
            :func:`~happydial.connect` raced one's endpoints and one won: its
            ``tcp_alpn`` says which protocols to offer, its ``ech`` the ECH
            configuration (see :doc:`/guides/https-records`).
    """

    call: Literal["start_connection", "connect"]
    host: str | None
    port: int | None
    addresses: tuple[str, ...]
    outcome: CallOutcome
    duration: float
    peer: str | None
    winner: int | None
    error_type: str | None
    errno: int | None
    error: str | None
    delay: float | str | None
    attempt_timeout: float | None
    timeout: float | None
    max_in_flight: int | None
    lookups: tuple[LookupReport, ...]
    attempts: tuple[AttemptReport, ...]
    reordered: tuple[str, ...]
    synthesized: tuple[str, ...]
    events: tuple[ReportEvent, ...]
    started_at: float
    service: ServiceBinding | None = None

    def summary(self) -> str:
        """One line for a log: the outcome, then each lookup and each attempt.

        For example ``connected to 192.0.2.1:443 in 254 ms; AAAA answered in 3 ms;
        A answered in 4 ms; [2001:db8::1]:443 refused after 3 ms; 192.0.2.1:443
        connected after 251 ms``.
        """
        parts = [self._headline()]
        parts += [_lookup_phrase(lookup) for lookup in self.lookups]
        parts += [_attempt_phrase(attempt) for attempt in self.attempts]
        return "; ".join(parts)

    def _headline(self) -> str:
        took = _human(self.duration)
        if self.outcome == "connected":
            return f"connected to {self.peer} in {took}"
        if self.outcome == "cancelled":
            return f"cancelled after {took}"
        if self.outcome == "timeout":
            return f"timed out after {took}"
        if self.attempts or self.lookups:
            return f"failed after {took}"
        return f"failed after {took}: {self.error}"  # refused arguments, say: nothing ran

    def to_json(self) -> dict[str, object]:
        """The report as a JSON-able dict, in the shape of a qlog file.

        qlog's main schema (``qlog_version`` 0.3, JSON): one trace whose ``events``
        each have a ``time`` in milliseconds since the call's start and a ``name``
        ``category:event``, all in the ``happy_eyeballs`` category, since no
        published qlog schema defines Happy Eyeballs events: ``connection_started``,
        ``dns_query_started``, ``dns_answer``, ``dns_error``, ``address_synthesized``,
        ``addresses_reordered``, ``connection_attempt_started``,
        ``connection_attempt_failed``, ``connection_attempt_succeeded``,
        ``connection_attempt_cancelled``, ``attempt_delay_chosen``, ``https_records``,
        ``https_record_chosen``, and one of
        ``connection_established``, ``connection_failed``, ``connection_cancelled``,
        ``connection_timed_out``. The trace's ``report`` holds the fields of this
        report, times in milliseconds (``*_ms``), and its ``description`` the
        :meth:`summary`.
        """
        return {
            "qlog_version": "0.3",
            "qlog_format": "JSON",
            "title": "happydial connection report",
            "traces": [
                {
                    "title": f"happydial.{self.call}",
                    "description": self.summary(),
                    "vantage_point": {"name": "happydial", "type": "client"},
                    "common_fields": {"time_format": "relative"},
                    "report": self._fields_json(),
                    "events": [
                        {
                            "time": _ms(event.time),
                            "name": f"{_QLOG_CATEGORY}:{event.name}",
                            "data": {key: _json_value(value) for key, value in event.data},
                        }
                        for event in self.events
                    ],
                }
            ],
        }

    def _fields_json(self) -> dict[str, object]:
        return {
            "call": self.call,
            "host": self.host,
            "port": self.port,
            "addresses": list(self.addresses),
            "outcome": self.outcome,
            "duration_ms": _ms(self.duration),
            "peer": self.peer,
            "winner": self.winner,
            "error_type": self.error_type,
            "errno": self.errno,
            "error": self.error,
            "delay_ms": self.delay if isinstance(self.delay, str) else _ms(self.delay),
            "attempt_timeout_ms": _ms(self.attempt_timeout),
            "timeout_ms": _ms(self.timeout),
            "max_in_flight": self.max_in_flight,
            "lookups": [
                {
                    "family": lookup.family,
                    "host": lookup.host,
                    "source": lookup.source,
                    "start_ms": _ms(lookup.start),
                    "duration_ms": _ms(lookup.duration),
                    "outcome": lookup.outcome,
                    "addresses": list(lookup.addresses),
                    "failure": lookup.failure,
                    "error": lookup.error,
                }
                for lookup in self.lookups
            ],
            "attempts": [
                {
                    "index": attempt.index,
                    "address": attempt.address,
                    "start_ms": _ms(attempt.start),
                    "duration_ms": _ms(attempt.duration),
                    "stage": attempt.stage,
                    "outcome": attempt.outcome,
                    "failure": attempt.failure,
                    "errno": attempt.errno,
                    "error": attempt.error,
                    "delay_after_ms": _ms(attempt.delay_after),
                    "delay_reason": attempt.delay_reason,
                    "synthesized_from": attempt.synthesized_from,
                }
                for attempt in self.attempts
            ],
            "reordered": list(self.reordered),
            "synthesized": list(self.synthesized),
            "service": _service_json(self.service),
        }


class Recording:
    """The reports of the calls made inside one :func:`recording` block.

    Attributes:
        reports: One :class:`ConnectionReport` per top-level call, in the order the
            calls ended. A call that began inside the block and ends after it (in a
            task that outlived the block) is still added, when it ends.
    """

    __slots__ = ("reports",)

    def __init__(self) -> None:
        """An empty recording."""
        self.reports: list[ConnectionReport] = []

    def __repr__(self) -> str:
        """``<Recording of N reports>``."""
        return f"<Recording of {len(self.reports)} reports>"


_CURRENT = _trace.RECORDING


@contextlib.contextmanager
def recording() -> Iterator[Recording]:
    """Report every connection call made inside the block, by you or by a library.

    Each top-level :func:`~happydial.start_connection`, :func:`~happydial.connect`,
    :func:`~happydial.open_connection` or :func:`~happydial.create_connection` call
    made in the block (in this task, or in a task created inside it) adds one
    :class:`ConnectionReport` to the recording's ``reports`` when it ends, whether it
    connected, failed or was cancelled. While recording, the error a failed call
    raises carries its report: see :func:`connection_report`. A call's own ``trace``
    still receives every event. Blocks nest: the innermost one gets the reports.

    Outside a recording block, nothing is recorded and nothing is paid.

    Yields:
        The :class:`Recording` that collects the reports.
    """
    new = Recording()
    token = _CURRENT.set(new)
    try:
        yield new
    finally:
        _CURRENT.reset(token)


def connection_report(error: BaseException) -> ConnectionReport | None:
    """The report of the call that raised *error*, if it was raised while recording.

    The error itself is looked at first, then the errors it was raised from
    (``__cause__``), so the error of a library that wraps happydial's (aiohttp's
    ``ClientConnectorError``) gives the report too.

    Args:
        error: An exception raised by a happydial call made inside a
            :func:`recording` block.

    Returns:
        Its report, or ``None`` when it was raised outside a recording block or does
        not come from a happydial call.

    Raises:
        TypeError: *error* is not an exception.
    """
    if not isinstance(error, BaseException):
        raise TypeError(f"error must be an exception, got {error!r}")
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        report = getattr(current, _ERROR_ATTRIBUTE, None)
        if isinstance(report, ConnectionReport):
            return report
        seen.add(id(current))
        current = current.__cause__
    return None


# A connection entry point starts with ``if RECORDING.get() is not None: return await
# record_call(fn, locals())`` (RECORDING from _trace), in its own body rather than in a
# decorator: outside a recording that is one ``ContextVar.get``, and no wrapper
# coroutine, argument tuple or keyword dict stays alive for the whole call (thousands of
# calls in flight make the garbage collector run more often, see bench/ section 5).


async def record_call(fn: Callable[..., Coroutine[Any, Any, T]], arguments: dict[str, Any]) -> T:
    """Run ``fn(**arguments)`` inside the current recording, and add its report to it.

    Args:
        fn: The entry point (it sees no recording while it runs again).
        arguments: Its parameters by name: ``locals()`` taken first thing in its body.
    """
    into = _CURRENT.get()
    assert into is not None  # noqa: S101 - the caller checked
    code = fn.__code__
    # Only the parameters (every one, defaults included): locals() also holds the
    # free variables the body uses.
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    return await _recorded(into, fn, {name: arguments[name] for name in names})


async def _recorded(
    into: Recording, fn: Callable[..., Coroutine[Any, Any, T]], kwargs: dict[str, Any]
) -> T:
    """Run one call, every argument by name, with a builder on its trace; add its report."""
    builder = _Builder(fn.__name__, asyncio.get_running_loop(), kwargs)
    trace = kwargs.get("trace")
    if trace is None:
        kwargs["trace"] = builder
    elif callable(trace):
        kwargs["trace"] = _Tee(builder, trace)
    # Anything else is left for the call's own check to refuse, with its own words.
    token = _CURRENT.set(None)  # calls made inside this one are part of it
    try:
        result = await fn(**kwargs)
    except BaseException as exc:
        report = builder.finish(exc)
        into.reports.append(report)
        if isinstance(exc, Exception):  # a CancelledError propagates untouched
            setattr(exc, _ERROR_ATTRIBUTE, report)
        raise
    finally:
        _CURRENT.reset(token)
    into.reports.append(builder.finish(None))
    return result


class _Tee:
    """A trace that feeds the builder first, then the caller's own trace."""

    __slots__ = ("builder", "trace")

    def __init__(self, builder: _Builder, trace: Callable[[_trace.TraceEvent], object]) -> None:
        self.builder = builder
        self.trace = trace

    def __call__(self, event: _trace.TraceEvent) -> None:
        self.builder(event)
        self.trace(event)


class _Attempt:
    """What is known of one attempt so far (mutable, until the report is made)."""

    __slots__ = ("address", "end", "errno", "error", "failure", "outcome", "stage", "start")

    def __init__(self, address: str, start: float, stage: Stage) -> None:
        self.address = address
        self.start = start
        self.stage: Stage = stage
        self.end: float | None = None
        self.outcome: AttemptOutcome = "abandoned"
        self.failure: str | None = None
        self.errno: int | None = None
        self.error: str | None = None


class _Lookup:
    """What is known of one lookup so far."""

    __slots__ = ("addresses", "end", "error", "failure", "family", "host", "start")

    def __init__(self, family: Literal["AAAA", "A"], host: str, start: float) -> None:
        self.family: Literal["AAAA", "A"] = family
        self.host = host
        self.start = start
        self.end: float | None = None
        self.addresses: tuple[str, ...] = ()
        self.failure: str | None = None
        self.error: str | None = None


class _Builder:
    """Collects one call's arguments and trace events; :meth:`finish` makes the report."""

    def __init__(
        self,
        call: str,
        loop: asyncio.AbstractEventLoop,
        kwargs: dict[str, Any],
    ) -> None:
        self.call = call
        self.loop = loop
        self.start = loop.time()
        self.options = {
            name: kwargs.get(name)
            for name in ("happy_eyeballs_delay", "attempt_timeout", "timeout", "max_in_flight")
        }
        self.host: str | None = None
        self.port: int | None = None
        self.given: tuple[Any, ...] = ()
        if call == "connect":
            host = kwargs.get("host")
            port = kwargs.get("port")
            self.host = host if isinstance(host, str) else None
            self.port = port if isinstance(port, int) else None
            local = kwargs.get("local_addr")
        else:
            given = kwargs.get("addr_infos")
            if isinstance(given, (list, tuple)):  # never consume an iterator of the call's
                self.given = tuple(given)
            local = kwargs.get("local_addr_infos")
        self.failed_stage: Stage = "socket" if local is None else "bind"
        self.resolver = _source_name(kwargs.get("resolver"))
        self.events: list[ReportEvent] = []
        self.attempts: dict[int, _Attempt] = {}
        self.lookups: list[_Lookup] = []
        self.delays: dict[int, tuple[float, str]] = {}
        self.reordered: list[str] = []
        self.synthesized: list[str] = []
        self.origins: dict[str, str] = {}
        self.winner: int | None = None
        self.service: ServiceBinding | None = None

    def offset(self, time: float) -> float:
        """*time* (the loop's) in seconds since the call's start, to the nanosecond."""
        return round(time - self.start, 9)

    def note(self, time: float, name: str, *data: tuple[str, EventValue]) -> None:
        self.events.append(ReportEvent(time, name, data))

    def __call__(self, event: _trace.TraceEvent) -> None:
        """Record one trace event (the builder is the call's trace, or half of it)."""
        handler = _HANDLERS.get(type(event))
        if handler is None:  # a subclass, or an event type newer than this code
            handler = next(
                (h for cls, h in _HANDLERS.items() if isinstance(event, cls)), _Builder.on_other
            )
        handler(self, event, self.offset(event.time))

    def on_lookup_started(self, event: _trace.ResolutionStarted, at: float) -> None:
        self.lookups.append(_Lookup(_record_type(event.family), event.host, at))
        self.note(at, "dns_query_started", ("family", _record_type(event.family)))

    def on_lookup_answered(self, event: _trace.ResolutionFinished, at: float) -> None:
        lookup = self._lookup(event.family, event.host, at)
        lookup.end = at
        lookup.addresses = tuple(a[4][0] for a in event.addr_infos)
        self.note(at, "dns_answer", ("family", lookup.family), ("addresses", lookup.addresses))

    def on_lookup_failed(self, event: _trace.ResolutionFailed, at: float) -> None:
        lookup = self._lookup(event.family, event.host, at)
        lookup.end = at
        lookup.failure = _failure(event.error)
        lookup.error = first_line(event.error)
        self.note(at, "dns_error", ("family", lookup.family), ("error", lookup.error))

    def on_attempt_started(self, event: _trace.AttemptStarted, at: float) -> None:
        address = format_sockaddr(event.addr_info[4])
        self.attempts[event.attempt] = _Attempt(address, at, "connect")
        self.note(
            at, "connection_attempt_started", ("attempt", event.attempt), ("address", address)
        )

    def on_attempt_failed(self, event: _trace.AttemptFailed, at: float) -> None:
        attempt = self._attempt(event.attempt, event.addr_info, at)
        attempt.end, attempt.outcome = at, "failed"
        attempt.failure = _failure(event.error)
        attempt.errno = _errno(event.error)
        attempt.error = first_line(event.error)
        self.note(
            at,
            "connection_attempt_failed",
            ("attempt", event.attempt),
            ("address", attempt.address),
            ("stage", attempt.stage),
            ("errno", attempt.errno),
            ("error", attempt.error),
        )

    def on_attempt_succeeded(self, event: _trace.AttemptSucceeded, at: float) -> None:
        attempt = self._attempt(event.attempt, event.addr_info, at)
        attempt.end, attempt.outcome = at, "connected"
        self.winner = event.attempt
        self.note(
            at,
            "connection_attempt_succeeded",
            ("attempt", event.attempt),
            ("address", attempt.address),
        )

    def on_attempt_cancelled(self, event: _trace.AttemptCancelled, at: float) -> None:
        attempt = self._attempt(event.attempt, event.addr_info, at)
        # Stopped after a winner: it lost the race. Without one: the call itself ended
        # (cancelled, out of time) while this attempt was still pending.
        lost = self.winner is not None
        attempt.end = at
        attempt.outcome = "cancelled" if lost else "abandoned"
        self.note(
            at,
            "connection_attempt_cancelled",
            ("attempt", event.attempt),
            ("address", attempt.address),
            ("reason", "lost" if lost else "abandoned"),
        )

    def on_delay(self, event: _trace.DelayAdjusted, at: float) -> None:
        # The reason field is newer than the event; events without it mean "history".
        reason = str(getattr(event, "reason", "history"))
        self.delays[event.attempt] = (event.delay, reason)
        self.note(
            at,
            "attempt_delay_chosen",
            ("attempt", event.attempt),
            ("delay_ms", _ms(event.delay)),
            ("reason", reason),
        )

    def on_reordered(self, event: _trace.HistoryReordered, at: float) -> None:
        self.reordered.extend(event.reasons)
        self.note(
            at,
            "addresses_reordered",
            ("before", tuple(format_sockaddr(a[4]) for a in event.before)),
            ("after", tuple(format_sockaddr(a[4]) for a in event.after)),
            ("reasons", tuple(event.reasons)),
        )

    def on_synthesized(self, event: _trace.AddressSynthesized, at: float) -> None:
        made, origin = format_sockaddr(event.addr_info[4]), format_sockaddr(event.origin[4])
        self.origins[made] = origin
        self.synthesized.append(f"{made} from {origin} (NAT64 prefix {event.prefix})")
        self.note(
            at,
            "address_synthesized",
            ("address", made),
            ("origin", origin),
            ("prefix", event.prefix),
        )

    def on_services(self, event: _trace.ServiceBindingsResolved, at: float) -> None:
        records = tuple(service_text(b) for b in event.bindings)
        data: list[tuple[str, EventValue]] = [("name", event.name), ("records", records)]
        if event.error is not None:
            data.append(("error", first_line(event.error)))
        self.note(at, "https_records", *data)

    def on_service_chosen(self, event: _trace.ServiceBindingChosen, at: float) -> None:
        self.service = event.binding
        self.note(
            at,
            "https_record_chosen",
            ("record", service_text(event.binding)),
            ("alpn", event.alpn),
            ("ech", event.ech is not None),
        )

    def on_other(self, event: object, at: float) -> None:
        self.note(at, _snake_case(type(event).__name__))

    def _lookup(self, family: int, host: str, at: float) -> _Lookup:
        """The running lookup of *family* (a resolver's answer ends the latest one)."""
        record = _record_type(family)
        for lookup in reversed(self.lookups):
            if lookup.family == record and lookup.host == host and lookup.end is None:
                return lookup
        lookup = _Lookup(record, host, at)  # an answer with no start seen: zero-length
        self.lookups.append(lookup)
        return lookup

    def _attempt(self, index: int, addr_info: Any, at: float) -> _Attempt:
        """Attempt *index*; one with no start event failed making or binding its socket."""
        attempt = self.attempts.get(index)
        if attempt is None:
            attempt = _Attempt(format_sockaddr(addr_info[4]), at, self.failed_stage)
            self.attempts[index] = attempt
        return attempt

    def finish(self, error: BaseException | None) -> ConnectionReport:
        """The report of the call, which returned (*error* ``None``) or raised *error*."""
        duration = self.offset(self.loop.time())
        outcome: CallOutcome = "connected"
        if isinstance(error, asyncio.CancelledError):
            outcome = "cancelled"
        elif error is not None:
            outcome = "timeout" if is_deadline_error(error) else "failed"
        peer = None
        if outcome == "connected" and self.winner is not None:
            peer = self.attempts[self.winner].address
        told = error is not None and outcome != "cancelled"  # a cancellation has no text
        end_data: list[tuple[str, EventValue]] = [("outcome", outcome)]
        if peer is not None:
            end_data.append(("peer", peer))
        if told:
            end_data.append(("error", first_line(error)))  # type: ignore[arg-type]
        self.note(duration, "connection_" + _END_EVENTS[outcome], *end_data)
        return ConnectionReport(
            call="connect" if self.call == "connect" else "start_connection",
            host=self.host,
            port=self.port,
            addresses=_addresses(self.given),
            outcome=outcome,
            duration=duration,
            peer=peer,
            winner=self.winner if outcome == "connected" else None,
            error_type=type(error).__name__ if told else None,
            errno=_errno(error) if told else None,  # type: ignore[arg-type]
            error=first_line(error) if told else None,  # type: ignore[arg-type]
            delay=_delay_value(self.options["happy_eyeballs_delay"]),
            attempt_timeout=_number(self.options["attempt_timeout"]),
            timeout=_number(self.options["timeout"]),
            max_in_flight=_count(self.options["max_in_flight"]),
            lookups=tuple(self._lookup_report(lookup) for lookup in self.lookups),
            attempts=tuple(self._attempt_report(i) for i in sorted(self.attempts)),
            reordered=tuple(self.reordered),
            synthesized=tuple(self.synthesized),
            events=(ReportEvent(0.0, "connection_started", self._start_data()), *self.events),
            started_at=self.start,
            service=self.service if outcome == "connected" else None,
        )

    def _start_data(self) -> tuple[tuple[str, EventValue], ...]:
        data: list[tuple[str, EventValue]] = [("call", self.call)]
        if self.call == "connect":
            data += [("host", self.host), ("port", self.port)]
        else:
            data.append(("addresses", _addresses(self.given)))
        delay = _delay_value(self.options["happy_eyeballs_delay"])
        data.append(("delay_ms", delay if isinstance(delay, str) else _ms(delay)))
        return tuple(data)

    def _lookup_report(self, lookup: _Lookup) -> LookupReport:
        if lookup.end is None:
            outcome: LookupOutcome = "abandoned"
        else:
            outcome = "failed" if lookup.error is not None else "answered"
        return LookupReport(
            family=lookup.family,
            host=lookup.host,
            source=self.resolver,
            start=lookup.start,
            duration=None if lookup.end is None else round(lookup.end - lookup.start, 9),
            outcome=outcome,
            addresses=lookup.addresses,
            failure=lookup.failure,
            error=lookup.error,
        )

    def _attempt_report(self, index: int) -> AttemptReport:
        attempt = self.attempts[index]
        delay, reason = self.delays.get(index, (None, ""))
        if not reason:
            configured = self.options["happy_eyeballs_delay"]
            delay = _number(configured)
            reason = "configured" if delay is not None or configured is None else str(configured)
        return AttemptReport(
            index=index,
            address=attempt.address,
            start=attempt.start,
            duration=None if attempt.end is None else round(attempt.end - attempt.start, 9),
            stage=attempt.stage,
            outcome=attempt.outcome,
            failure=attempt.failure,
            errno=attempt.errno,
            error=attempt.error,
            delay_after=delay,
            delay_reason=reason,
            synthesized_from=self.origins.get(attempt.address),
        )


_HANDLERS: dict[type, Callable[[_Builder, Any, float], None]] = {
    _trace.ResolutionStarted: _Builder.on_lookup_started,
    _trace.ResolutionFinished: _Builder.on_lookup_answered,
    _trace.ResolutionFailed: _Builder.on_lookup_failed,
    _trace.AttemptStarted: _Builder.on_attempt_started,
    _trace.AttemptFailed: _Builder.on_attempt_failed,
    _trace.AttemptSucceeded: _Builder.on_attempt_succeeded,
    _trace.AttemptCancelled: _Builder.on_attempt_cancelled,
    _trace.DelayAdjusted: _Builder.on_delay,
    _trace.HistoryReordered: _Builder.on_reordered,
    _trace.AddressSynthesized: _Builder.on_synthesized,
    _trace.ServiceBindingsResolved: _Builder.on_services,
    _trace.ServiceBindingChosen: _Builder.on_service_chosen,
}

_END_EVENTS: dict[CallOutcome, str] = {
    "connected": "established",
    "failed": "failed",
    "cancelled": "cancelled",
    "timeout": "timed_out",
}

# Short words for the errnos a connection attempt meets (the OS's texts vary).
_FAILURES: dict[int, str] = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timed out",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ECONNRESET: "reset",
    errno.ECONNABORTED: "aborted",
    errno.EADDRNOTAVAIL: "address not available",
    errno.EADDRINUSE: "address in use",
    errno.EAFNOSUPPORT: "family not supported",
    errno.EACCES: "not permitted",
    errno.EPERM: "not permitted",
}


def service_text(binding: ServiceBinding) -> str:
    """``1 svc.example port 8443``: an HTTPS record's priority, target and port."""
    port = f" port {binding.port}" if binding.port is not None else ""
    return f"{binding.priority} {binding.target or '.'}{port}"


def _service_json(binding: ServiceBinding | None) -> dict[str, object] | None:
    if binding is None:
        return None
    return {
        "priority": binding.priority,
        "target": binding.target or ".",
        "port": binding.port,
        "alpn": list(binding.tcp_alpn),
        "ech": binding.ech is not None,
    }


def _failure(error: BaseException) -> str:
    """A few words for why an attempt or a lookup failed."""
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, socket.gaierror):
        return "failed"  # its errno is an EAI_* code, not one of the above
    code = _errno(error)
    return _FAILURES.get(code, "failed") if code is not None else "failed"


def _errno(error: BaseException) -> int | None:
    code = getattr(error, "errno", None)
    return code if isinstance(code, int) else None


def first_line(error: BaseException) -> str:
    """The error's message, first line only (notes are not part of ``str()``)."""
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def _snake_case(name: str) -> str:
    """``AttemptCapped`` -> ``attempt_capped``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _record_type(family: int) -> Literal["AAAA", "A"]:
    return "AAAA" if family == socket.AF_INET6 else "A"


def _source_name(resolver: object) -> str:
    """Who answers lookups: the default resolver, or the given one by name."""
    if resolver is None:
        return "getaddrinfo_resolver"
    name = getattr(resolver, "__name__", None)
    return name if isinstance(name, str) else type(resolver).__name__


def _addresses(given: tuple[Any, ...]) -> tuple[str, ...]:
    """The given addr_infos as text; none if any is malformed (the call refuses it)."""
    try:
        return tuple(format_sockaddr(entry[4]) for entry in given)
    except Exception:  # noqa: BLE001 - whatever it is, the call's own check says what
        return ()


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _delay_value(value: object) -> float | str | None:
    """The configured delay: seconds, ``None``, or a delay policy as text."""
    number = _number(value)
    return number if number is not None or value is None else str(value)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _json_value(value: EventValue) -> object:
    return list(value) if isinstance(value, tuple) else value


def _human(seconds: float) -> str:
    """``3 ms``, ``0.4 ms``, ``251 ms``, ``2 s``, ``2.25 s``."""
    if seconds >= 1:
        return f"{seconds:.2f}".rstrip("0").rstrip(".") + " s"
    ms = seconds * 1000
    if ms < 10:  # below 10 ms, a tenth is worth showing
        return f"{ms:.1f}".removesuffix(".0") + " ms"
    return f"{round(ms)} ms"


def _lookup_phrase(lookup: LookupReport) -> str:
    if lookup.outcome == "answered":
        return f"{lookup.family} answered in {_human(lookup.duration or 0.0)}"
    if lookup.outcome == "abandoned":
        return f"{lookup.family} unanswered"
    took = _human(lookup.duration or 0.0)
    if lookup.failure == "timed out":
        return f"{lookup.family} timed out after {took}"
    return f"{lookup.family} failed after {took} ({lookup.error})"


def _attempt_phrase(attempt: AttemptReport) -> str:
    where = attempt.address
    took = "" if attempt.duration is None else f" after {_human(attempt.duration)}"
    if attempt.outcome == "failed":
        if attempt.stage in ("socket", "bind"):
            why = attempt.failure if attempt.failure != "failed" else attempt.error
            text = f"{where} {attempt.stage} failed ({why})"
        elif attempt.failure == "failed":
            text = f"{where} failed{took} ({attempt.error})"
        else:
            text = f"{where} {attempt.failure}{took}"
    elif attempt.outcome == "abandoned" and attempt.duration is None:
        text = f"{where} abandoned"
    else:
        text = f"{where} {attempt.outcome}{took}"
    if attempt.delay_reason != "configured" and attempt.delay_after is not None:
        text += f" (next attempt after {_human(attempt.delay_after)}: {attempt.delay_reason})"
    return text
