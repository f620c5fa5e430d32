"""Remembering what worked: per-address outcomes, to order addresses and pace attempts.

Every Python peer is stateless, so a host whose IPv6 path is dead costs a full
attempt delay on every connection. RFC 8305 lets a client with history do better:
sort by observed connect time (section 4) and derive the attempt delay from it
(section 5). :class:`AddressHistory` is that history, and it is opt-in: pass one
to :func:`happydial.start_connection` or :func:`happydial.connect` (and share it
between calls) to use it.

Invariants:

* History only ever reorders: :meth:`AddressHistory.sort` returns a permutation of
  its input, so an address that failed is still tried, last.
* Bounded memory: at most ``max_entries`` addresses, least recently updated evicted.
* No I/O, no threads, no awaits: every method runs to completion, so one history
  can be shared by any number of concurrent races on a loop.
* Times come from ``clock`` (``time.time`` by default, so an exported history
  still means something after a restart).
"""

from __future__ import annotations

import errno
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Literal

from ._addresses import AddrInfoType, check_addr_infos, normalise
from ._errors import in_tls_stage
from ._validate import check_seconds, is_int

__all__ = ["AddressHistory", "FailureKind", "failure_kind", "sort_by_history"]

FailureKind = Literal["timeout", "refused", "unreachable", "tls", "error"]

# RFC 8305 section 5: the Connection Attempt Delay "MAY be dynamic", with a
# recommended minimum of 100 ms, a hard floor of 10 ms, and a recommended maximum
# of 2 s.
_HARD_FLOOR = 0.010
_RECOMMENDED_MIN = 0.100
_RECOMMENDED_MAX = 2.0
# Smoothing of measured connect times: RFC 6298's SRTT gain.
_ALPHA = 1 / 8
_EXPORT_VERSION = 1

_Key = tuple[str, int, int | str]

_UNREACHABLE = frozenset(
    (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EADDRNOTAVAIL)
)


def failure_kind(error: BaseException) -> FailureKind:
    """Classify a failed attempt's error for the history.

    ``"tls"``: TCP connected but the TLS handshake failed (a wrong certificate, a
    middlebox that ate the ClientHello, a reset), when TLS is raced (``tls_in_race``).
    """
    if in_tls_stage(error):
        return "tls"
    if isinstance(error, TimeoutError) or getattr(error, "errno", None) == errno.ETIMEDOUT:
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if getattr(error, "errno", None) in _UNREACHABLE:
        return "unreachable"
    return "error"


class _Record:
    """What is known of one address (mutable; a plain class keeps import cheap)."""

    __slots__ = ("connect_time", "failed_at", "failure", "failures", "successes")

    def __init__(
        self,
        connect_time: float | None = None,
        successes: int = 0,
        failures: int = 0,
        failure: FailureKind | None = None,
        failed_at: float | None = None,
    ) -> None:
        self.connect_time = connect_time
        self.successes = successes
        self.failures = failures
        self.failure = failure
        self.failed_at = failed_at


_KINDS = frozenset(("timeout", "refused", "unreachable", "tls", "error"))


def _key(sockaddr: object) -> _Key | None:
    """The history's key for *sockaddr*; ``None`` for a host that is no IP literal."""
    if (
        not isinstance(sockaddr, tuple)
        or not 2 <= len(sockaddr) <= 4
        or not isinstance(sockaddr[0], str)
        or not is_int(sockaddr[1])
        or not all(is_int(field) for field in sockaddr[2:])
    ):
        raise TypeError(
            f"sockaddr must be a (host, port[, flowinfo, scope_id]) tuple, got {sockaddr!r}"
        )
    normal = normalise(sockaddr)
    if normal is None:
        return None
    ip, port, _, scope = normal
    return (str(ip), port, scope)


class AddressHistory:
    """Outcomes of past connection attempts, per destination address and port.

    Args:
        max_entries: How many addresses to remember; the least recently updated
            is forgotten first.
        cooldown: Seconds during which an address that failed goes last.
        delay_multiple: The adaptive attempt delay is this many times the measured
            connect time of the address being tried.
        min_attempt_delay: Lower bound of the adaptive delay (RFC 8305 recommends
            0.1 s; values below its 10 ms hard floor are refused).
        max_attempt_delay: Upper bound of the adaptive delay (RFC 8305: 2 s).
        clock: Returns the current time in seconds.
    """

    __slots__ = (
        "_clock",
        "_records",
        "cooldown",
        "delay_multiple",
        "max_attempt_delay",
        "max_entries",
        "min_attempt_delay",
    )

    def __init__(
        self,
        *,
        max_entries: int = 1024,
        cooldown: float = 60.0,
        delay_multiple: float = 2.0,
        min_attempt_delay: float = _RECOMMENDED_MIN,
        max_attempt_delay: float = _RECOMMENDED_MAX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create an empty history (see the class docstring for the arguments)."""
        if not is_int(max_entries) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive int, got {max_entries!r}")
        self.max_entries = max_entries
        self.cooldown = check_seconds(cooldown, "cooldown", minimum=0.0)
        self.delay_multiple = check_seconds(delay_multiple, "delay_multiple", minimum=0.0)
        self.min_attempt_delay = check_seconds(
            min_attempt_delay, "min_attempt_delay", minimum=_HARD_FLOOR
        )
        self.max_attempt_delay = check_seconds(
            max_attempt_delay, "max_attempt_delay", minimum=_HARD_FLOOR
        )
        if self.min_attempt_delay > self.max_attempt_delay:
            raise ValueError(
                f"min_attempt_delay ({self.min_attempt_delay:g} s) must not exceed"
                f" max_attempt_delay ({self.max_attempt_delay:g} s)"
            )
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self._clock = clock
        self._records: OrderedDict[_Key, _Record] = OrderedDict()

    def __len__(self) -> int:
        """How many addresses are remembered."""
        return len(self._records)

    # -- recording -----------------------------------------------------------

    def _touch(self, key: _Key) -> _Record:
        record = self._records.pop(key, None)
        if record is None:
            record = _Record()
            if len(self._records) >= self.max_entries:
                self._records.popitem(last=False)
        self._records[key] = record
        return record

    def record_success(self, sockaddr: tuple[Any, ...], connect_time: float) -> None:
        """An attempt to *sockaddr* connected after *connect_time* seconds."""
        connect_time = check_seconds(connect_time, "connect_time", minimum=0.0)
        key = _key(sockaddr)
        if key is None:
            return
        record = self._touch(key)
        previous = record.connect_time
        if previous is None:
            record.connect_time = connect_time
        else:
            record.connect_time = previous + _ALPHA * (connect_time - previous)
        record.successes += 1
        record.failure = None
        record.failed_at = None

    def record_failure(self, sockaddr: tuple[Any, ...], kind: FailureKind) -> None:
        """An attempt to *sockaddr* failed (or was overtaken: ``"timeout"``)."""
        if not isinstance(kind, str):
            raise TypeError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
        key = _key(sockaddr)
        if key is None:
            return
        record = self._touch(key)
        record.failures += 1
        record.failure = kind
        record.failed_at = self._clock()

    # -- consulting ----------------------------------------------------------

    def _cooling(self, record: _Record, now: float) -> bool:
        return record.failed_at is not None and now < record.failed_at + self.cooldown

    def is_cooling(self, sockaddr: tuple[Any, ...]) -> bool:
        """Whether *sockaddr* failed within the cooldown."""
        key = _key(sockaddr)
        record = self._records.get(key) if key is not None else None
        return record is not None and self._cooling(record, self._clock())

    def connect_time(self, sockaddr: tuple[Any, ...]) -> float | None:
        """The smoothed connect time of *sockaddr*, if one was measured."""
        key = _key(sockaddr)
        record = self._records.get(key) if key is not None else None
        return record.connect_time if record is not None else None

    def sort(self, addr_infos: Iterable[AddrInfoType]) -> tuple[list[AddrInfoType], list[str]]:
        """Order addresses by what is known of them (RFC 8305 section 4).

        1. Addresses whose failure's cooldown has expired are retried first, in
           their order: a repaired path is found at the next connection after the
           cooldown (RFC 6555's cache expiry), whether or not it ever worked.
        2. Then addresses known to work, fastest first.
        3. Then unknown ones, in their order (the resolver's, interleaved).
        4. Last, those that failed within the cooldown, in their order.

        Nothing is dropped.

        Returns:
            The new order, and one reason per address that moved, for traces.
        """
        return self._sort(check_addr_infos(addr_infos))

    def _sort(self, entries: list[AddrInfoType]) -> tuple[list[AddrInfoType], list[str]]:
        """:meth:`sort` on a list already validated (the racer's)."""
        now = self._clock()
        retry: list[AddrInfoType] = []
        good: list[tuple[float, int, AddrInfoType]] = []
        unknown: list[AddrInfoType] = []
        cooling: list[AddrInfoType] = []
        reasons: list[str] = []
        for position, entry in enumerate(entries):
            key = _key(entry[4])
            record = self._records.get(key) if key is not None else None
            if record is None:
                unknown.append(entry)
            elif self._cooling(record, now):
                cooling.append(entry)
                ago = now - (record.failed_at or now)
                reasons.append(f"{entry[4][0]} failed ({record.failure}) {ago:.1f} s ago")
            elif record.failed_at is not None:
                retry.append(entry)
                ago = now - record.failed_at
                reasons.append(
                    f"{entry[4][0]} failed ({record.failure}) {ago:.1f} s ago: retried,"
                    f" the {self.cooldown:g} s cooldown is over"
                )
            elif record.connect_time is not None:
                good.append((record.connect_time, position, entry))
                reasons.append(f"{entry[4][0]} connected in {record.connect_time * 1000:.1f} ms")
            else:
                unknown.append(entry)
        good.sort(key=lambda item: (item[0], item[1]))
        result = retry + [entry for _, _, entry in good] + unknown + cooling
        return result, (reasons if result != entries else [])

    def attempt_delay(self, addr_info: AddrInfoType, default: float) -> float:
        """The delay before the attempt after *addr_info* (RFC 8305 section 5).

        A small multiple of the address's measured connect time, clamped to
        ``[min_attempt_delay, max_attempt_delay]``; *default* when nothing was measured.
        """
        default = check_seconds(default, "default", minimum=0.0)
        entry = check_addr_infos([addr_info], "addr_info")[0]
        measured = self.connect_time(entry[4])
        return default if measured is None else self.delay_for(measured)

    def delay_for(self, connect_time: float) -> float:
        """The adaptive attempt delay for a measured *connect_time* (RFC 8305 section 5)."""
        adaptive = connect_time * self.delay_multiple
        return min(max(adaptive, self.min_attempt_delay), self.max_attempt_delay)

    # -- persistence ---------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Export as plain JSON-able data (for :meth:`from_json` after a restart)."""
        entries = [
            {
                "address": address,
                "port": port,
                "scope": scope,
                "connect_time": record.connect_time,
                "successes": record.successes,
                "failures": record.failures,
                "failure": record.failure,
                "failed_at": record.failed_at,
            }
            for (address, port, scope), record in self._records.items()
        ]
        return {"version": _EXPORT_VERSION, "entries": entries}

    @classmethod
    def from_json(cls, data: object, **options: Any) -> AddressHistory:
        """Rebuild a history exported by :meth:`to_json`.

        Args:
            data: What :meth:`to_json` returned (after a JSON round trip, say).
            **options: Constructor arguments (``cooldown``, ``clock``, ...).

        Raises:
            ValueError: *data* is not such an export.
        """
        history = cls(**options)
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(data, dict) or data.get("version") != _EXPORT_VERSION:
            raise ValueError(f"not a happydial history export (version {_EXPORT_VERSION})")
        if not isinstance(entries, list):
            raise ValueError("history export: 'entries' must be a list")  # noqa: TRY004 - a bad value in the data, not a bad argument type
        for i, item in enumerate(entries):
            try:
                key, record = _parse_entry(item)
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                raise ValueError(f"history export: entries[{i}] is malformed: {exc}") from None
            history._records[key] = record
            if len(history._records) > history.max_entries:
                history._records.popitem(last=False)
        return history


def sort_by_history(
    history: AddressHistory, entries: list[AddrInfoType]
) -> tuple[list[AddrInfoType], list[str]]:
    """:meth:`AddressHistory.sort` of *entries* already validated (the racer's)."""
    return history._sort(entries)


def _parse_entry(item: Any) -> tuple[_Key, _Record]:
    address = str(ipaddress.ip_address(item["address"]))
    port, scope = item["port"], item["scope"]
    if not is_int(port) or not (is_int(scope) or isinstance(scope, str)):
        raise TypeError("port must be an int and scope an int or a str")
    successes, failures = item["successes"], item["failures"]
    if not (is_int(successes) and is_int(failures) and successes >= 0 and failures >= 0):
        raise ValueError("successes and failures must be non-negative ints")
    record = _Record(
        connect_time=_optional_float(item["connect_time"], minimum=0.0),
        successes=successes,
        failures=failures,
        failure=item["failure"],
        failed_at=_optional_float(item["failed_at"], minimum=-math.inf),
    )
    if record.failure is not None and record.failure not in _KINDS:
        raise ValueError(f"unknown failure kind {record.failure!r}")
    return (address, port, scope), record


def _optional_float(value: object, *, minimum: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number or null, got {value!r}")
    if math.isnan(value) or math.isinf(value) or value < minimum:
        raise ValueError(f"expected a finite number >= {minimum}, got {value!r}")
    return float(value)
