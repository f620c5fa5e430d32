"""The lab's near end: one happydial call inside the client namespace, reported as JSON.

Run by the lab as ``ip netns exec <client> python tests/lab/client.py '<spec>'`` with the
interpreter of the test run and a ``PYTHONPATH`` that finds the happydial under test. The spec
is a JSON object:

* ``loop``: ``"asyncio"`` (``asyncio.run``) or ``"uvloop"`` (``uvloop.run``);
* ``call``: ``"start_connection"`` (with ``addr_infos``: ``[family, host, port]`` triples),
  ``"connect"`` (with ``host`` and ``port``), or ``"getaddrinfo"`` (with ``host`` and
  ``families``: each resolved concurrently with ``loop.getaddrinfo``, to check the lab's DNS),
  or ``"resolve"`` (``host`` and ``families``: each looked up with the ``resolver``, the
  result per family being its addresses or its error's ``errno``), or ``"sync"`` (with
  ``addr_infos`` as for ``start_connection``, or ``host`` and ``port``):
  ``happydial.sync.start_connection`` or ``create_connection``, blocking in the loop's
  thread, and ``"stdlib"`` (``host``, ``port``): ``socket.create_connection``, to compare;
  or ``"open_connection"`` (``host``, ``port``, and ``cafile``: the CA the call's
  ``ssl`` context trusts; ``kwargs`` say ``tls_in_race``, ``server_hostname``...):
  ``happydial.open_connection`` with TLS, whose report's ``tls`` has the connection's
  TLS version and the names on the server's certificate (the connection is aborted);
* ``kwargs``: keyword arguments for the call;
* ``resolver``: for ``connect``, ``open_connection`` and ``resolve``, ``"getaddrinfo"``
  (the default), ``"aiodns"``, ``"dnspython"`` or ``"dnspython-https"``
  (``DnspythonResolver(https=True)``: HTTPS records too): which of happydial's resolvers
  looks names up;
* ``cancel_after``: cancel the call's task after this many seconds, or
  ``wait_for``: run the call under ``asyncio.wait_for`` with this timeout;
* ``parent``: the pid of the test run; this process is killed when that one dies;
* ``settle_until``: count the descriptors left open no sooner than this many seconds after
  the call started (when a slow DNS answer the call no longer waits for has come).

Or ``call``: ``"sequence"``, several calls in this one process sharing one
``happydial.AddressHistory`` (built with the keyword arguments in ``history``). ``steps`` is a
list of call specs as above (``start_connection`` or ``connect``) and of pauses:
``{"pause": "label"}`` writes ``{"pause": "label"}`` as a line on stdout and waits for a line
on stdin (the test reconfigures the lab meanwhile), ``{"sleep": s}`` just sleeps. The report
then has ``steps``: one report per call, each with ``events`` too (the trace as facts:
``type``, ``at`` seconds into the call, ``address``, and ``after`` / ``reasons`` for
``HistoryReordered``, ``delay`` and ``reason`` for ``DelayAdjusted``).

One JSON object on stdout: ``elapsed`` (seconds the call took), ``peer`` (the winner's
address and port), ``error`` (type, message, notes, the members of its ``__cause__`` group
and what ``failed_addr_infos`` says), ``cancelled``, ``trace`` (the trace events),
``events`` (the same as facts, as for a sequence's steps), and the descriptors open in
this process before and after the call (the winner closed; with an optional
``resolver``, before it is made and after it is closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import happydial

Call = Callable[[], Awaitable[Any]]
SETTLE = 2.0  # seconds an optional resolver's descriptors may take to close


def open_fds() -> dict[int, str]:
    """Every descriptor of this process and what it points at."""
    fds: dict[int, str] = {}
    for entry in Path("/proc/self/fd").iterdir():
        try:
            fds[int(entry.name)] = str(entry.readlink())
        except OSError:
            continue  # the listing's own descriptor, gone already
    return fds


def describe(error: BaseException) -> dict[str, Any]:
    """The facts of *error* a scenario asserts on."""
    cause = error.__cause__
    members = cause.exceptions if isinstance(cause, BaseExceptionGroup) else ()
    return {
        "type": type(error).__name__,
        "mro": [cls.__name__ for cls in type(error).__mro__],
        "errno": getattr(error, "errno", None),
        "message": str(error),
        "notes": list(getattr(error, "__notes__", ())),
        "cause_type": type(cause).__name__ if cause is not None else None,
        "members": [
            {
                "type": type(m).__name__,
                "message": str(m),
                "notes": list(getattr(m, "__notes__", ())),
            }
            for m in members
        ],
        "failed": [list(entry[4][:2]) for entry in happydial.failed_addr_infos(error)],
    }


def make_call(
    spec: dict[str, Any],
    trace: list[str],
    observe: Callable[[object], None] | None = None,
    resolver: happydial.Resolver | None = None,
) -> Call:
    """The coroutine function the spec asks for (*observe* also sees every trace event)."""
    kwargs = dict(spec.get("kwargs", {}))
    started = time.monotonic()

    def record(event: object) -> None:
        trace.append(f"{time.monotonic() - started:.3f} {event!r}"[:300])
        if observe is not None:
            observe(event)

    if spec["call"] in {"sync", "stdlib"}:
        return blocking_call(spec, kwargs, record)
    if spec["call"] == "start_connection":
        addr_infos = [
            (
                family,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (host, port, 0, 0) if family == socket.AF_INET6 else (host, port),
            )
            for family, host, port in spec["addr_infos"]
        ]
        return lambda: happydial.start_connection(addr_infos, trace=record, **kwargs)
    if spec["call"] in {"connect", "open_connection"}:
        if resolver is not None:
            kwargs["resolver"] = resolver
        return by_name_call(spec, kwargs, record)
    if spec["call"] == "resolve" and resolver is not None:
        return lambda: resolve_with(resolver, spec["host"], spec["families"])
    if spec["call"] == "getaddrinfo":
        return lambda: resolve(spec["host"], spec["families"])
    raise ValueError(f"unknown call {spec['call']!r}")


def by_name_call(spec: dict[str, Any], kwargs: dict[str, Any], record: Any) -> Call:
    """happydial.connect, or happydial.open_connection with a TLS context trusting ``cafile``."""
    if spec["call"] == "open_connection":
        context = ssl.create_default_context(cafile=spec["cafile"])
        return lambda: happydial.open_connection(
            spec["host"], spec["port"], ssl=context, trace=record, **kwargs
        )
    connect = happydial.connect  # type: ignore[attr-defined,unused-ignore]
    return lambda: connect(spec["host"], spec["port"], trace=record, **kwargs)


def blocking_call(spec: dict[str, Any], kwargs: dict[str, Any], record: Any) -> Call:
    """happydial.sync's call (or the stdlib's), run blocking in the loop's own thread."""
    from happydial import sync

    async def call() -> socket.socket:
        if spec["call"] == "stdlib":
            return socket.create_connection((spec["host"], spec["port"]), **kwargs)
        if "addr_infos" in spec:
            addr_infos = [
                (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
                if family == socket.AF_INET6
                else (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))
                for family, host, port in spec["addr_infos"]
            ]
            return sync.start_connection(addr_infos, trace=record, **kwargs)
        return sync.create_connection((spec["host"], spec["port"]), trace=record, **kwargs)

    return call


@contextlib.asynccontextmanager
async def open_resolver(name: str | None) -> AsyncIterator[happydial.Resolver | None]:
    """One of happydial's resolvers by name (``None``: connect's default), closed afterwards.

    It is made, and a first lookup warms it up (aiodns makes its channel), before the
    call is timed and its descriptors counted, as an application would hold one resolver.
    """
    if name is None:
        yield None
    elif name == "aiodns":
        async with happydial.AiodnsResolver() as ares:
            await warm_up(ares)
            yield ares
    elif name in {"dnspython", "dnspython-https"}:
        stub = happydial.DnspythonResolver(https=name == "dnspython-https")
        await warm_up(stub)
        yield stub
    elif name == "getaddrinfo":
        yield happydial.getaddrinfo_resolver
    else:
        raise ValueError(f"unknown resolver {name!r}")


async def warm_up(resolver: happydial.Resolver) -> None:
    with contextlib.suppress(OSError):  # the lab's server: NXDOMAIN at once
        await resolver("warm-up.invalid", 80, socket.AF_INET)
    await asyncio.sleep(0.01)  # dnspython's closed socket, c-ares' first query settle


async def warm_up_transports() -> None:
    """Have the loop open what it opens on its first transport, before descriptors are counted.

    uvloop (libuv) opens a ``/dev/null`` descriptor of its own the first time it makes a
    transport of a socket, and keeps it until the loop closes: the loop's, not the call's.
    """
    loop = asyncio.get_running_loop()
    near, far = socket.socketpair()
    with far:
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=near)
        transport.abort()
        await asyncio.sleep(0)


async def resolve_with(
    resolver: happydial.Resolver, host: str, families: list[int]
) -> dict[str, Any]:
    """Look *host* up once per family, one after the other: addresses or ``errno``."""
    results: dict[str, Any] = {}
    for family in families:
        try:
            infos = await resolver(host, 80, family)
        except OSError as exc:
            results[str(family)] = {"errno": exc.errno}
        else:
            results[str(family)] = {"addresses": [info[4][0] for info in infos]}
    return results


async def resolve(host: str, families: list[int]) -> dict[str, Any]:
    """Resolve *host* once per family concurrently; each family's answer and its time."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()

    async def one(family: int) -> dict[str, Any]:
        try:
            infos = await loop.getaddrinfo(host, 80, family=family, type=socket.SOCK_STREAM)
        except OSError as exc:
            return {"error": str(exc), "elapsed": time.monotonic() - started}
        addresses = sorted({info[4][0] for info in infos})
        return {"addresses": addresses, "elapsed": time.monotonic() - started}

    results = await asyncio.gather(*(one(family) for family in families))
    return {str(family): result for family, result in zip(families, results, strict=True)}


async def run(
    spec: dict[str, Any], observe: Callable[[object], None] | None = None
) -> dict[str, Any]:
    """Make the call the spec asks for and report how it went."""
    if spec["call"] == "open_connection":
        await warm_up_transports()
    name = spec.get("resolver")
    if name in {None, "getaddrinfo"}:
        async with open_resolver(name) as resolver:
            return await run_with(spec, observe, resolver)
    # An optional resolver owns descriptors (c-ares its channel's sockets, which it may
    # replace during a call): count across its whole life instead, made to closed.
    before = open_fds()
    async with open_resolver(name) as resolver:
        report = await run_with(spec, observe, resolver)
    after = open_fds()
    deadline = time.monotonic() + SETTLE
    while set(after) - set(before) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # pycares destroys a channel on a thread of its own
        after = open_fds()
    report["fds_before"] = len(before)
    report["fds_after"] = len(after)
    report["leaked"] = [f"{fd} -> {after[fd]}" for fd in sorted(set(after) - set(before))]
    return report


async def run_with(
    spec: dict[str, Any],
    observe: Callable[[object], None] | None,
    resolver: happydial.Resolver | None,
) -> dict[str, Any]:
    """:func:`run`, with the resolver made."""
    trace: list[str] = []
    events: list[dict[str, Any]] = []
    facts = collector(events)

    def seen(event: object) -> None:
        facts(event)
        if observe is not None:
            observe(event)

    call = make_call(spec, trace, seen, resolver)
    report: dict[str, Any] = {"peer": None, "error": None, "cancelled": False, "result": None}
    before = open_fds()
    started = time.monotonic()
    try:
        if spec.get("cancel_after") is not None:
            task = asyncio.ensure_future(call())
            await asyncio.sleep(spec["cancel_after"])
            task.cancel()
            result = await task
        elif spec.get("wait_for") is not None:
            result = await asyncio.wait_for(call(), spec["wait_for"])
        else:
            result = await call()
    except asyncio.CancelledError:
        report["cancelled"] = True
    except Exception as exc:
        report["error"] = describe(exc)
    else:
        if isinstance(result, socket.socket):
            report["peer"] = list(result.getpeername()[:2])
            report["family"] = result.family
            report["blocking"] = result.getblocking()
            result.close()
        elif isinstance(result, tuple) and isinstance(result[-1], asyncio.StreamWriter):
            elapsed = time.monotonic() - started
            report["peer"], report["tls"] = await close_stream(result[-1])
            report["elapsed"] = elapsed
        else:
            report["result"] = result
    report.setdefault("elapsed", time.monotonic() - started)
    # Let the call's cleanup callbacks run, and (settle_until) in-flight DNS queries end:
    # glibc's socket for a query still unanswered is not happydial's to close.
    await asyncio.sleep(max(0.0, started + spec.get("settle_until", 0.0) - time.monotonic()))
    after = open_fds()
    report["fds_before"] = len(before)
    report["fds_after"] = len(after)
    report["leaked"] = [f"{fd} -> {after[fd]}" for fd in sorted(set(after) - set(before))]
    report["trace"] = trace
    report["events"] = events
    return report


async def close_stream(writer: asyncio.StreamWriter) -> tuple[list[Any], dict[str, Any]]:
    """The peer and TLS facts of *writer*'s connection, then abort it and wait until it is gone.

    An abort, not a close: a TLS close waits for the server's close_notify (up to the
    shutdown timeout), which would make the descriptor count wait on the server.
    """
    peer = list(writer.get_extra_info("peername")[:2])
    tls_object = writer.get_extra_info("ssl_object")
    tls: dict[str, Any] = {}
    if tls_object is not None:
        certificate = tls_object.getpeercert() or {}
        names = [value for kind, value in certificate.get("subjectAltName", ()) if kind == "DNS"]
        tls = {"version": tls_object.version(), "names": names}
    writer.transport.abort()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return peer, tls


def event_facts(event: object, at: float) -> dict[str, Any]:
    """What a sequence's scenario asserts on, from one trace event (no repr truncation)."""
    facts: dict[str, Any] = {"type": type(event).__name__, "at": at}
    addr_info = getattr(event, "addr_info", None)
    if addr_info is not None:
        facts["address"] = addr_info[4][0]
    if isinstance(event, happydial.HistoryReordered):
        facts["after"] = [entry[4][0] for entry in event.after]
        facts["reasons"] = list(event.reasons)
    if isinstance(event, happydial.DelayAdjusted):
        facts["delay"], facts["reason"] = event.delay, event.reason
    error = getattr(event, "error", None)
    if isinstance(error, BaseException):
        facts["error"] = type(error).__name__
    return facts


def collector(events: list[dict[str, Any]]) -> Callable[[object], None]:
    """An observer appending each event's facts to *events*, timed from now."""
    started = time.monotonic()

    def observe(event: object) -> None:
        events.append(event_facts(event, time.monotonic() - started))

    return observe


async def run_sequence(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the steps of a ``sequence`` spec, every call sharing one AddressHistory."""
    history = happydial.AddressHistory(**spec.get("history", {}))
    steps: list[dict[str, Any]] = []
    for step in spec["steps"]:
        if "pause" in step:
            sys.stdout.write(json.dumps({"pause": step["pause"]}) + "\n")
            sys.stdout.flush()
            if not sys.stdin.readline():  # blocking: nothing else runs on the loop now
                raise RuntimeError(f"no go-ahead after pause {step['pause']!r}")
            continue
        if "sleep" in step:
            await asyncio.sleep(step["sleep"])
            continue
        events: list[dict[str, Any]] = []
        call_spec = {**step, "kwargs": {**step.get("kwargs", {}), "history": history}}
        report = await run(call_spec, collector(events))
        report["events"] = events
        steps.append(report)
    return {"steps": steps}


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process if the test run that started it dies first.

    A scenario whose address went dead with the lab would otherwise keep retrying its SYN
    for two minutes after a killed test run.
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        sys.exit("the test run is gone")


def main() -> None:
    """Run the spec given as the only argument on the loop it names; print the report."""
    spec = json.loads(sys.argv[1])
    if "parent" in spec:
        die_with_parent(spec["parent"])
    main_coro = run_sequence(spec) if spec["call"] == "sequence" else run(spec)
    if spec["loop"] == "uvloop":
        import uvloop

        report = uvloop.run(main_coro)
    else:
        report = asyncio.run(main_coro)
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
