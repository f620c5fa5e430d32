"""Happy Eyeballs (RFC 8305) for blocking code: no event loop, no thread per attempt.

:func:`create_connection` is a drop-in for :func:`socket.create_connection`: same
signature, same meaning of ``timeout`` and ``source_address``, same errors; it
resolves IPv6 and IPv4 in parallel and races the addresses instead of trying them
one after another. :func:`start_connection` races addresses you already hold, as
:func:`happydial.start_connection` does on asyncio, and returns a blocking socket.

Both run the same attempt schedule as the asyncio API (``_schedule``), driven by a
``selectors`` loop in the calling thread (``_blocking``); they are safe to call from
many threads at once, and from a thread whose event loop is running.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from ._addresses import (
    AddrInfoType,
    SocketFactoryType,
    check_addr_infos,
    interleave_families,
    literal_addr_info,
)
from ._blocking import BlockingRace, Lookups
from ._delays import DelayPolicy
from ._history import AddressHistory, sort_by_history
from ._racer import check_addresses
from ._sources import bound_sources, default_source_cache
from ._trace import HistoryReordered, TraceType
from ._validate import (
    DEFAULT_MAX_IN_FLIGHT,
    check_attempt_delay,
    check_callable,
    check_count,
    check_delay,
    check_limits,
    check_start_options,
    is_int,
)

__all__ = ["DEFAULT_DELAY", "create_connection", "start_connection"]

DEFAULT_DELAY = 0.25
"""The Connection Attempt Delay both functions use by default, RFC 8305's 250 ms.

Unlike :func:`happydial.start_connection`, whose ``None`` default matches
aiohappyeyeballs for aiohttp, the blocking API has no caller to stay compatible
with: it races by default, as RFC 8305 recommends.
"""

_RESOLUTION_DELAY = 0.05  # RFC 8305 section 3's recommendation


def start_connection(
    addr_infos: Iterable[AddrInfoType],
    *,
    local_addr_infos: Iterable[AddrInfoType] | None = None,
    happy_eyeballs_delay: float | DelayPolicy | None = DEFAULT_DELAY,
    interleave: int | None = None,
    socket_factory: SocketFactoryType | None = None,
    attempt_timeout: float | None = None,
    all_errors: bool = False,
    trace: TraceType | None = None,
    history: AddressHistory | None = None,
    max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT,
    timeout: float | None = None,
) -> socket.socket:
    """Connect to the first address that answers, Happy Eyeballs style, blocking.

    The blocking twin of :func:`happydial.start_connection`: the same arguments
    (but ``loop``), checks, schedule, history, trace events and errors. Attempts
    start staggered: the next *happy_eyeballs_delay* seconds after the previous one
    started, or at once when the most recent one fails. The first connection wins,
    every other socket is closed.

    Args:
        addr_infos: The addresses, as ``getaddrinfo`` 5-tuples with IP-literal
            sockaddrs. Any iterable; not mutated.
        local_addr_infos: Local addresses to bind to, by family.
        happy_eyeballs_delay: Seconds between attempt starts, or a
            :class:`~happydial.DelayPolicy`; 0.25 by default
            (:data:`DEFAULT_DELAY`, RFC 8305's recommendation). ``None``: one at a
            time. ``0``: all at once.
        interleave: As for :func:`happydial.start_connection` (``None``: 1 when a
            delay is given).
        socket_factory: Makes each attempt's socket from its addr_info.
        attempt_timeout: Seconds after which a pending attempt fails with
            :class:`TimeoutError`; ``None``: the OS decides.
        all_errors: Raise an :class:`ExceptionGroup` of every attempt's error.
        trace: Called with a trace event at every step, in the calling thread.
        history: An :class:`~happydial.AddressHistory` to order and pace by.
        max_in_flight: At most this many attempts in flight (6; ``None``: no cap).
        timeout: An overall deadline in seconds for the whole call.

    Returns:
        The connected socket, in blocking mode (no timeout); the caller owns it.

    Raises:
        TimeoutError: *timeout* passed.
        OSError: Every attempt failed (its ``__cause__`` groups each attempt's error).
        ExceptionGroup: Every attempt failed and *all_errors* is true.
        TypeError: An argument has the wrong type.
        ValueError: An argument has a bad value.
    """
    entries, local = check_addresses(addr_infos, local_addr_infos)
    delay, per_attempt, count = check_start_options(
        happy_eyeballs_delay, attempt_timeout, interleave, socket_factory, trace
    )
    cap, deadline = check_limits(max_in_flight, timeout)
    if history is not None and not isinstance(history, AddressHistory):
        raise TypeError(f"history must be an AddressHistory or None, got {history!r}")
    return _start(
        entries,
        BlockingRace(
            delay,
            local_addr_infos=local,
            socket_factory=socket_factory,
            attempt_timeout=per_attempt,
            trace=trace,
            history=history,
            max_in_flight=cap,
            timeout=deadline,
        ),
        count,
        all_errors=bool(all_errors),
    )


def _start(
    entries: list[AddrInfoType], race: BlockingRace, count: int | None, *, all_errors: bool
) -> socket.socket:
    """Order *entries* (section 4, then history) and race them on *race*."""
    if count is None and race.delay is not None:
        count = 1  # CPython's default: Happy Eyeballs on means interleaving on
    if count and len(entries) > 1:
        entries = interleave_families(entries, count)
    history = race.history
    if history is not None:
        ordered, reasons = sort_by_history(history, entries)
        if reasons and race.trace is not None:
            race.trace(
                HistoryReordered(tuple(entries), tuple(ordered), tuple(reasons), race.clock())
            )
        entries = ordered
    race.schedule.add(entries)
    sock, _ = race.connect(all_errors=all_errors)  # blocking: no sock_timeout
    return sock


def _usable(answer: object, family: int, host: str) -> list[AddrInfoType]:
    """The entries of a ``getaddrinfo`` answer for *family*; ``gaierror`` if none."""
    entries = [a for a in check_addr_infos(answer, "getaddrinfo result") if a[0] == family]
    if not entries:
        name = "IPv6" if family == socket.AF_INET6 else "IPv4"
        raise socket.gaierror(socket.EAI_NODATA, f"no {name} address for {host!r}")
    return entries


def _host_port(address: object) -> tuple[str, int]:
    """``create_connection``'s *address*: ``(host, port)``, port as a number or service."""
    if type(address) is tuple and len(address) == 2:
        host, port = address
        # The common case, decided by exact types (no str or int subclass to convert).
        if type(host) is str and host and type(port) is int and 0 <= port <= 65535:
            return host, port
    return _convert_host_port(address)


def _convert_host_port(address: object) -> tuple[str, int]:
    """:func:`_host_port` for any other *address*: converted, or a clear error."""
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError(f"address must be a (host, port) tuple, got {address!r}")
    host, port = address
    if isinstance(host, bytes):
        host = host.decode("ascii")
    if not isinstance(host, str):
        raise TypeError(f"address: host must be a str, got {host!r}")
    if not host:
        raise ValueError("address: host must not be empty")
    if isinstance(port, str) and not port.isdigit():
        try:
            port = socket.getservbyname(port, "tcp")
        except OSError:
            raise socket.gaierror(
                socket.EAI_SERVICE, f"address: unknown TCP service {port!r}"
            ) from None
    elif isinstance(port, str):
        port = int(port)
    if not is_int(port):
        raise TypeError(f"address: port must be an int or a service name, got {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"address: port must be in 0-65535, got {port!r}")
    return host, port


def _literal(host: str, port: int) -> list[AddrInfoType] | None:
    """The addr_info of an IP literal *host*, or ``None`` for a name."""
    try:
        socket.inet_pton(socket.AF_INET, host)  # the common case, without ipaddress's cost
    except OSError:
        pass
    else:
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
    if ":" not in host:
        return None  # neither IPv4 nor IPv6 (which has a colon): a name
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return [literal_addr_info((host, port), f"address {(host, port)!r}")]


def _source_addr_infos(source_address: object) -> list[AddrInfoType]:
    """Every socket binds to *source_address* (given), as in :func:`socket.create_connection`."""
    if not isinstance(source_address, tuple) or len(source_address) != 2:
        raise TypeError(f"source_address must be a (host, port) tuple, got {source_address!r}")
    host, port = source_address
    if host == "":
        # Any address of either family, as bind(("", port)) means for each socket.
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("0.0.0.0", port)),
        ]
    literal = _literal(host, port) if isinstance(host, str) else None
    if literal is not None:
        return literal
    # A name: bind() would look it up in the calling thread, and so do we.
    return [
        (a[0], a[1], a[2], a[3], a[4])
        for a in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    ]


_DEFAULT_TIMEOUT = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]


def create_connection(  # noqa: C901, PLR0912 - one flat function: this runs for every connection
    address: tuple[str, int],
    timeout: float | None = _DEFAULT_TIMEOUT,
    source_address: tuple[str, int] | None = None,
    *,
    all_errors: bool = False,
    happy_eyeballs_delay: float | DelayPolicy | None = DEFAULT_DELAY,
    resolution_delay: float = _RESOLUTION_DELAY,
    first_address_family_count: int = 1,
    socket_factory: SocketFactoryType | None = None,
    trace: TraceType | None = None,
    history: AddressHistory | None = None,
    max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT,
) -> socket.socket:
    """Connect to *address*, resolving and racing IPv6 and IPv4 (RFC 8305), blocking.

    A drop-in for :func:`socket.create_connection`: the positional arguments, their
    meaning and the errors are the stdlib's. The difference is how: the AAAA and A
    lookups run in parallel (on happydial's resolver threads; an IPv4 answer waits
    *resolution_delay* for IPv6, section 3), and the addresses race, the next one
    starting *happy_eyeballs_delay* after the previous, instead of one after another
    with the whole *timeout* each.

    Unlike :func:`happydial.connect`, it does not synthesise IPv6 addresses for a
    NAT64 (RFC 8305 section 7) on an IPv6-only host: there, an IPv4 literal or an
    IPv4-only name fails as it does with the stdlib, unless the network's DNS64
    answers the AAAA lookup (a name, then, connects through the NAT64).

    Args:
        address: ``(host, port)``: a host name or IP literal, and a port number or
            service name.
        timeout: As for the stdlib: the timeout set on the returned socket, and the
            bound on each connection attempt (:func:`socket.getdefaulttimeout` when
            not given; ``None``: blocking, the OS bounds each attempt). ``0``, as in
            the stdlib, asks for non-blocking connects: an attempt that does not
            complete inside ``connect()`` fails with :class:`BlockingIOError`.
        source_address: ``(host, port)`` every attempt's socket binds to; an
            attempt of another family than its host fails (the stdlib's rule).
        all_errors: Raise an :class:`ExceptionGroup` of every attempt's error;
            otherwise the error of the last attempt, as the stdlib does.
        happy_eyeballs_delay: Seconds between attempt starts (0.25), or a
            :class:`~happydial.DelayPolicy`; ``None``: one at a time, in RFC 8305's order.
        resolution_delay: How long an IPv4 answer waits for IPv6 (section 3).
        first_address_family_count: IPv6 addresses before the first IPv4 (section 4).
        socket_factory: Makes each attempt's socket from its addr_info (as for
            :func:`start_connection`); the race makes it non-blocking, binds it to
            *source_address*, and closes it unless it wins.
        trace: Called with each lookup and attempt event, in the calling thread.
        history: An :class:`~happydial.AddressHistory` to order and pace by.
        max_in_flight: At most this many attempts in flight (6; ``None``: no cap).

    Returns:
        The connected socket, with *timeout* set as the stdlib sets it.

    Raises:
        socket.gaierror: No lookup gave an address (the A lookup's error, else the AAAA's).
        TimeoutError: Every attempt timed out (the last one's error, as the stdlib).
        BlockingIOError: ``timeout=0`` and no attempt connected at once (the stdlib's).
        OSError: Every attempt failed: the last attempt's error.
        ExceptionGroup: Every attempt failed and *all_errors* is true.
        TypeError: An argument has the wrong type.
        ValueError: An argument has a bad value.
    """
    host, port = _host_port(address)
    if timeout is _DEFAULT_TIMEOUT:
        timeout = socket.getdefaulttimeout()
    if timeout is not None:
        timeout = check_delay(timeout, "timeout", allow_zero=True)
    # The defaults need no check ("is", not "=="): this runs for every connection.
    delay = happy_eyeballs_delay
    if delay is not DEFAULT_DELAY:
        delay = check_attempt_delay(delay, "happy_eyeballs_delay")
    res_delay: float | None = resolution_delay
    if res_delay is not _RESOLUTION_DELAY:
        res_delay = check_delay(res_delay, "resolution_delay", allow_zero=True)
    count = first_address_family_count
    if type(count) is not int or count != 1:
        count = check_count(count, "first_address_family_count")
    if socket_factory is not None:
        check_callable(socket_factory, "socket_factory")
    if trace is not None:
        check_callable(trace, "trace")
    if history is not None and not isinstance(history, AddressHistory):
        raise TypeError(f"history must be an AddressHistory or None, got {history!r}")
    cap = max_in_flight
    if cap is not DEFAULT_MAX_IN_FLIGHT:
        cap, _ = check_limits(cap, None)
    local = _source_addr_infos(source_address) if source_address else None
    race = BlockingRace(
        delay,
        local_addr_infos=local,
        socket_factory=socket_factory,
        attempt_timeout=timeout,
        trace=trace,
        history=history,
        max_in_flight=cap,
    )
    literal = _literal(host, port)
    if literal is not None:
        race.schedule.add(literal)
        lookups = None
    else:
        lookups = race.lookups = _lookups(race, host, port, res_delay or 0.0, count, local)
    try:
        # The timeout set as the stdlib leaves it: blocking, or with the timeout.
        sock, _ = race.connect(all_errors=True, sock_timeout=timeout)
    except ExceptionGroup as group:
        if all_errors:
            raise
        # The stdlib raises the last attempt's error (its loop clears the others).
        raise group.exceptions[-1] from None
    except OSError:  # nothing was tried (an IP literal always is): the lookups failed
        errors = lookups.errors if lookups is not None else {}
        error = errors.get(socket.AF_INET) or errors.get(socket.AF_INET6)
        if error is None:
            raise  # not the lookups': a trace callable raised it
        raise error from None
    finally:
        if lookups is not None:
            lookups.errors = {}
    return sock


def _lookups(
    race: BlockingRace,
    host: str,
    port: int,
    resolution_delay: float,
    count: int,
    local: list[AddrInfoType] | None,
) -> Lookups:
    """The AAAA and A lookups of *host*, feeding *race* (sections 3 and 4)."""
    families: list[int] = [socket.AF_INET6, socket.AF_INET]
    if local is not None:
        # Only the families there is a source of: another could never connect.
        families = [f for f in families if any(a[0] == f for a in local)] or families
    cache = default_source_cache()
    sources = cache if local is None else bound_sources(local, cache)
    return Lookups(race, host, port, families, resolution_delay, count, sources, _usable)
