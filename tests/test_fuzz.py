"""Fuzzed input for every public function (issue 9).

Each function of ``happydial.__all__`` gets arbitrary objects (and near-valid ones:
addr_infos with one field wrong, IP literals with a bad zone, NaN delays...). It must
return a correct result or raise TypeError/ValueError whose message names the
argument, never another exception, and never leave a socket open. The async
functions run on a virtual-clock loop with a :class:`FakeNetwork` (the racing ones on
both connect paths: writer callbacks and a task per attempt), and host names only
reach fake resolvers:
no real DNS lookup or connect ever happens. ``getaddrinfo_resolver`` is left out
on purpose: it is the one function whose job is a real DNS lookup.
``HAPPYDIAL_SOAK=1`` runs ten times as many examples.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import happydial
from happydial import (
    AddressHistory,
    addr_to_addr_infos,
    failed_addr_infos,
    interleave_addr_infos,
    ip_addresses_to_addr_infos,
    pop_addr_infos_interleave,
    remove_addr_infos,
)
from happydial._errors import tag_error
from happydial.testing import FakeNetwork, Path, VirtualClockLoop

from .conftest import _leftovers, open_fds

SOAK = os.environ.get("HAPPYDIAL_SOAK", "") not in ("", "0")
FUZZ = settings(
    max_examples=300 * (10 if SOAK else 1),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FUZZ_ASYNC = settings(FUZZ, max_examples=400 * (10 if SOAK else 1))

HOSTS = [
    "192.0.2.1",
    "192.0.2.2",
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8::1%1",
    "fe80::1%lo",
    "fe80::1%no-such-if",
    "192.0.2.300",
    "1.2.3.4.5",
    "::ffff:192.0.2.1",
    "example.invalid",
    "",
    "%",
    "2001:db8::1%",
]
WEIRD = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    65535,
    65536,
    2**32,
    2**64,
    -(2**70),
    0.0,
    -0.0,
    0.25,
    -1.5,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x",
    "0.25",
    b"",
    b"192.0.2.1",
    object(),
    socket.AF_INET,
    socket.AF_INET6,
    socket.AF_UNIX,
    socket.SOCK_STREAM,
    socket.SOCK_DGRAM,
    ipaddress.ip_address("192.0.2.9"),
    ipaddress.ip_address("2001:db8::9"),
    [],
    (),
    {},
    {"entries": []},
]

scalars = st.one_of(
    st.sampled_from(WEIRD),
    st.sampled_from(HOSTS),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=6),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(st.text(max_size=6), inner, max_size=3),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=12,
)
ports = st.one_of(st.integers(-2, 70000), st.sampled_from([80, 0, 65535, True, 1.0, "80"]))
hosts = st.one_of(st.sampled_from(HOSTS), st.text(max_size=12))


@st.composite
def sockaddrs(draw: st.DrawFn) -> Any:
    host = draw(st.one_of(hosts, scalars))
    port = draw(ports)
    tail = draw(st.lists(st.one_of(st.integers(-1, 2**33), scalars), max_size=3))
    return (host, port, *tail)


@st.composite
def near_addr_infos(draw: st.DrawFn) -> Any:
    """A getaddrinfo 5-tuple, right or with some fields wrong."""
    v6 = draw(st.booleans())
    family = socket.AF_INET6 if v6 else socket.AF_INET
    n = draw(st.integers(0, 4)) if v6 else 2
    host = draw(st.sampled_from(HOSTS[2:4] if v6 else HOSTS[:2]))
    sockaddr: Any = (host, 80, 0, 0)[:n] if v6 else (host, 80)
    entry: list[Any] = [family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr]
    for _ in range(draw(st.integers(0, 2))):
        field = draw(st.integers(0, 4))
        entry[field] = draw(sockaddrs() if field == 4 else st.one_of(scalars, anything))
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return entry  # a list, not a tuple
    if shape == 1:
        return tuple(entry[: draw(st.integers(0, 6))])
    return tuple(entry)


DOC_HOSTS = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2", "2001:db8::1%1"]


def _doc_addr_info(host: str, port: int) -> Any:
    if ":" in host:
        address, _, scope = host.partition("%")
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, int(scope or 0)))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))


# Valid values are drawn as often as junk: a fuzzer that only ever hits the first
# check of a function tests nothing behind it.
good_addr_infos = st.builds(_doc_addr_info, st.sampled_from(DOC_HOSTS), st.integers(0, 65535))
good_addr_info_lists = st.lists(good_addr_infos, min_size=1, max_size=4)
addr_info_lists = st.one_of(
    good_addr_info_lists,
    good_addr_info_lists,
    st.lists(st.one_of(good_addr_infos, near_addr_infos()), max_size=5),
    st.lists(st.one_of(near_addr_infos(), anything), max_size=4),
    anything,
)
good_delays = st.one_of(st.none(), st.sampled_from([0, 0.05, 0.25]), st.floats(0, 1))
delays = st.one_of(good_delays, good_delays, st.floats(), st.integers(-2, 2), scalars)


def assert_names_argument(exc: BaseException, names: list[str]) -> None:
    assert isinstance(exc, (TypeError, ValueError)), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert any(name in message for name in names), f"{message!r} names none of {names}"


def call_pure(fn: Callable[..., Any], names: list[str], *args: Any) -> Any:
    try:
        return fn(*args)
    except (TypeError, ValueError) as exc:
        assert_names_argument(exc, names)
        return exc


# ---------------------------------------------------------------------------
# The address layer, history and error helpers: no loop, no sockets
# ---------------------------------------------------------------------------


def is_addr_info(entry: object) -> bool:
    return (
        isinstance(entry, tuple)
        and len(entry) == 5
        and entry[0] in (socket.AF_INET, socket.AF_INET6)
        and isinstance(entry[4], tuple)
    )


@FUZZ
@given(addr=st.one_of(sockaddrs(), anything))
def test_addr_to_addr_infos(addr: Any) -> None:
    result = call_pure(addr_to_addr_infos, ["addr"], addr)
    if addr is None:
        assert result is None
    elif isinstance(result, list):
        assert len(result) == 1
        assert is_addr_info(result[0])
        assert result[0][4][0] == addr[0].partition("%")[0]


@FUZZ
@given(addr_infos=addr_info_lists, count=st.one_of(st.integers(-1, 4), scalars))
def test_interleave_addr_infos(addr_infos: Any, count: Any) -> None:
    snapshot = list(addr_infos) if isinstance(addr_infos, list) else None
    result = call_pure(
        interleave_addr_infos, ["addr_infos", "first_address_family_count"], addr_infos, count
    )
    if isinstance(result, list):
        assert sorted(map(repr, result)) == sorted(map(repr, addr_infos))
    if snapshot is not None:
        assert addr_infos == snapshot, "the input was mutated"


@FUZZ
@given(addresses=st.one_of(st.lists(st.one_of(hosts, scalars), max_size=4), anything), port=ports)
def test_ip_addresses_to_addr_infos(addresses: Any, port: Any) -> None:
    result = call_pure(ip_addresses_to_addr_infos, ["addresses", "port"], addresses, port)
    if isinstance(result, list):
        assert all(is_addr_info(e) for e in result)
        assert len({e[4] for e in result}) == len(result)


@FUZZ
@given(addr_infos=addr_info_lists, interleave=st.one_of(st.none(), st.integers(-1, 3), scalars))
def test_pop_addr_infos_interleave(addr_infos: Any, interleave: Any) -> None:
    before = list(addr_infos) if isinstance(addr_infos, list) else None
    result = call_pure(
        pop_addr_infos_interleave, ["addr_infos", "interleave"], addr_infos, interleave
    )
    if result is None:
        assert before is not None
        assert all(entry in before for entry in addr_infos)
    elif before is not None:
        assert addr_infos == before, "validated the whole list before changing any of it"


@FUZZ
@given(addr_infos=addr_info_lists, addr=st.one_of(sockaddrs(), anything))
def test_remove_addr_infos(addr_infos: Any, addr: Any) -> None:
    before = list(addr_infos) if isinstance(addr_infos, list) else None
    result = call_pure(remove_addr_infos, ["addr_infos", "addr", "Address"], addr_infos, addr)
    if result is None:
        assert before is not None
        assert len(addr_infos) < len(before)
    elif before is not None:
        assert addr_infos == before


@FUZZ
@given(error=st.one_of(anything, st.sampled_from([OSError(), ValueError("x")])))
def test_failed_addr_infos_of_untagged_errors(error: Any) -> None:
    if isinstance(error, BaseException):
        assert failed_addr_infos(error) == []
    else:
        with pytest.raises(TypeError, match="error must be an exception"):
            failed_addr_infos(error)


ERROR_TYPES = [OSError, ConnectionRefusedError, TimeoutError, RuntimeError, ValueError]
# An attempt's error: its type, and the addr_info it is tagged with (None: untagged).
attempt_errors = st.tuples(st.sampled_from(ERROR_TYPES), st.one_of(st.none(), good_addr_infos))


@FUZZ
@given(
    shape=st.sampled_from(["alone", "group", "cause"]),
    members=st.lists(attempt_errors, min_size=1, max_size=5),
)
def test_failed_addr_infos_of_tagged_errors(shape: str, members: list[Any]) -> None:
    # Shaped as the racer raises them: one error; a group (all_errors=True); an
    # OSError caused by the group. The answer is every tag, in attempt order.
    errors = []
    for error_type, addr_info in members:
        error = error_type("attempt failed")
        if addr_info is not None:
            tag_error(error, addr_info)
        errors.append(error)
    if shape == "alone":
        errors = errors[:1]
    expected = [a for _, a in members[: len(errors)] if a is not None]
    raised: BaseException = errors[0]
    if shape != "alone":
        group = BaseExceptionGroup("Multiple exceptions", errors)
        raised = group
        if shape == "cause":
            raised = OSError("Multiple exceptions")
            raised.__cause__ = group
    event(f"{shape}, {len(expected)} tagged")
    assert failed_addr_infos(raised) == expected


HISTORY_OPTIONS = [
    "max_entries",
    "cooldown",
    "delay_multiple",
    "min_attempt_delay",
    "max_attempt_delay",
    "clock",
]
history_options = st.fixed_dictionaries(
    {},
    optional={
        "max_entries": st.one_of(st.integers(-1, 5), scalars),
        "cooldown": delays,
        "delay_multiple": delays,
        "min_attempt_delay": delays,
        "max_attempt_delay": delays,
        "clock": st.one_of(st.just(lambda: 1000.0), scalars),
    },
)


valid_sockaddrs = st.one_of(
    st.tuples(st.sampled_from(HOSTS), st.integers(0, 65535)),
    st.tuples(st.sampled_from(HOSTS), st.integers(0, 65535), st.integers(0, 3), st.integers(0, 3)),
)
valid_addr_infos = st.builds(
    lambda host, port: (
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (host, port, 0, 0))
        if ":" in host
        else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))
    ),
    st.sampled_from(HOSTS),
    st.integers(0, 65535),
)
history_calls = st.one_of(
    st.tuples(
        st.just("record_success"),
        valid_sockaddrs | sockaddrs() | scalars,
        st.floats(0, 10, allow_nan=False) | st.integers(0, 10) | delays,
    ),
    st.tuples(
        st.just("record_failure"),
        valid_sockaddrs | sockaddrs() | scalars,
        st.sampled_from(["timeout", "refused", "unreachable", "error"]) | scalars,
    ),
    st.tuples(
        st.sampled_from(["is_cooling", "connect_time"]),
        valid_sockaddrs | sockaddrs() | scalars,
        st.none(),
    ),
    st.tuples(st.just("sort"), addr_info_lists, st.none()),
    st.tuples(
        st.just("attempt_delay"),
        valid_addr_infos | scalars,
        st.floats(0, 2) | st.integers(0, 2) | delays,
    ),
)
HISTORY_ARGUMENTS = ["sockaddr", "connect_time", "kind", "default", "addr_info", "addr_infos"]


@FUZZ
@given(options=history_options, calls=st.lists(history_calls, max_size=6))
def test_address_history(options: dict[str, Any], calls: list[tuple[str, Any, Any]]) -> None:
    # A bad min_attempt_delay can surface as "max_attempt_delay must be >= ..." when
    # the default maximum is below it: any of the constructor's names will do.
    history = call_pure(lambda: AddressHistory(**options), HISTORY_OPTIONS)
    if not isinstance(history, AddressHistory):
        return
    # Every method validates its arguments: whatever it is given, the history is
    # either updated or left alone with a TypeError/ValueError, and stays exportable.
    for method, first, second in calls:
        if method == "sort":
            result = call_pure(history.sort, HISTORY_ARGUMENTS, first)
            if isinstance(result, tuple):
                assert sorted(map(repr, result[0])) == sorted(map(repr, first))
        elif method in ("is_cooling", "connect_time"):
            call_pure(getattr(history, method), HISTORY_ARGUMENTS, first)
        elif method == "attempt_delay":
            delay = call_pure(history.attempt_delay, HISTORY_ARGUMENTS, first, second)
            if not isinstance(delay, Exception):
                assert delay == second or history.min_attempt_delay <= delay
        else:
            call_pure(getattr(history, method), HISTORY_ARGUMENTS, first, second)
    data = history.to_json()
    again = AddressHistory.from_json(data)
    assert again.to_json() == data


def test_record_success_refuses_a_non_number() -> None:
    history = AddressHistory()
    with pytest.raises(TypeError, match="connect_time"):
        history.record_success(("192.0.2.1", 80), "fast")  # type: ignore[arg-type]


def test_history_methods_name_a_bad_sockaddr() -> None:
    with pytest.raises((TypeError, ValueError), match="sockaddr"):
        AddressHistory().is_cooling(("192.0.2.1",))


def test_from_json_refuses_an_infinite_count() -> None:
    entry = {"address": "192.0.2.1", "port": 80, "scope": 0, "connect_time": None}
    entry.update({"successes": math.inf, "failures": 0, "failure": None, "failed_at": None})
    with pytest.raises(ValueError, match="entries"):
        AddressHistory.from_json({"version": 1, "entries": [entry]})


@FUZZ
@given(
    data=st.one_of(
        anything,
        st.fixed_dictionaries(
            {"version": st.sampled_from([1, 1.0, 2, "1", None])},
            optional={
                "entries": st.one_of(
                    anything,
                    st.lists(
                        st.one_of(
                            anything,
                            st.fixed_dictionaries(
                                {
                                    "address": st.one_of(hosts, scalars),
                                    "port": ports,
                                    "scope": st.one_of(st.integers(0, 3), scalars),
                                    "connect_time": delays,
                                    "successes": st.one_of(st.integers(), scalars),
                                    "failures": st.one_of(st.integers(), scalars),
                                    "failure": st.one_of(
                                        st.sampled_from([None, "timeout", "refused"]), scalars
                                    ),
                                    "failed_at": delays,
                                }
                            ),
                        ),
                        max_size=3,
                    ),
                )
            },
        ),
    )
)
def test_address_history_from_json(data: Any) -> None:
    result = call_pure(AddressHistory.from_json, ["history export", "history", "entries"], data)
    if isinstance(result, AddressHistory):
        assert AddressHistory.from_json(result.to_json()).to_json() == result.to_json()


# ---------------------------------------------------------------------------
# The async functions, on a virtual loop with a fake network
# ---------------------------------------------------------------------------


class Harness:
    """A virtual loop whose connects are fake and succeed after 10 ms, to any address."""

    def __init__(self, path: Path = "task") -> None:
        self.loop = VirtualClockLoop()
        self.net = FakeNetwork(self.loop, path=path)
        self.net.script("*", delay=0.01)
        self.peers: list[socket.socket] = []

    def pair_factory(self, addr_info: Any) -> socket.socket:  # noqa: ARG002
        """A connected AF_UNIX stream socket: enough for asyncio's transports."""
        ours, theirs = socket.socketpair()
        self.peers.append(theirs)
        return ours

    def run(self, main: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            try:
                return await main()
            finally:
                problems = _leftovers(self.loop)
                assert not problems, problems

        try:
            return self.loop.run_until_complete(wrapper())
        finally:
            for peer in self.peers:
                peer.close()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            assert self.net.open_sockets == [], "a socket was left open"


def test_connect_unhashable_family() -> None:
    async def main(h: Harness) -> None:
        with pytest.raises(TypeError, match="family"):
            await happydial.connect("192.0.2.1", 80, family=[])  # type: ignore[arg-type]

    harness = Harness()
    harness.run(lambda: main(harness))


def fuzz_call(run: Callable[[Harness], Any], names: list[str], path: Path = "task") -> None:
    # No gc.collect() here (it would cost most of the run): a closed socket frees its
    # descriptor at once, so the count below needs none; an unclosed one is the bug.
    before = open_fds()
    harness = Harness(path)
    failure: Exception | None = None
    try:
        harness.run(lambda: run(harness))
        event("returned")
    except (TypeError, ValueError) as exc:
        event(type(exc).__name__)
        assert_names_argument(exc, names)
    except (OSError, ExceptionGroup) as exc:  # the group: all_errors=True
        event("connection failure")
        failure = exc
    # A connection failure (every attempt, or every lookup, failed) is a result.
    if failure is not None:
        assert failed_addr_infos(failure) or isinstance(failure, socket.gaierror), repr(failure)
    assert open_fds() == before


def factories(h: Harness, choice: Any) -> Any:
    if choice == "fake":
        return h.net.socket_factory
    if choice == "not a socket":
        return lambda _: object()
    return choice  # junk: must be refused


# Never None: the default factory makes real sockets (bound for real with local_addr).
factory_choices = st.sampled_from(["fake"] * 8 + ["not a socket", 42, "factory"])
traces: st.SearchStrategy[Any] = st.sampled_from([None, None, "list", "list", "print", 0])
histories: st.SearchStrategy[Any] = st.sampled_from([None, None, "history", "history", {}, 1])


def trace_of(choice: Any) -> Any:
    return [].append if choice == "list" else choice


def history_of(choice: Any) -> Any:
    return AddressHistory(clock=lambda: 0.0) if choice == "history" else choice


async def consume(result: Any) -> None:
    if isinstance(result, socket.socket):
        result.close()


caps = st.one_of(st.none(), st.integers(1, 8), st.integers(-1, 3), scalars)
START_KW = {
    "local_addr_infos": st.one_of(st.none(), st.none(), addr_info_lists),
    "happy_eyeballs_delay": delays,
    "interleave": st.one_of(st.none(), st.integers(0, 3), st.integers(-1, 3), scalars),
    "attempt_timeout": delays,
    "all_errors": st.one_of(st.booleans(), st.booleans(), scalars),
    "loop": st.one_of(st.none(), st.none(), st.none(), scalars),
    "max_in_flight": caps,
    "timeout": delays,
}


PATHS: list[Path] = ["writer", "task"]


@pytest.mark.parametrize("path", PATHS)
@FUZZ_ASYNC
@given(
    addr_infos=addr_info_lists,
    kwargs=st.fixed_dictionaries({}, optional=START_KW),
    factory=factory_choices,
    trace=traces,
    history=histories,
)
def test_start_connection(
    path: Path, addr_infos: Any, kwargs: dict[str, Any], factory: Any, trace: Any, history: Any
) -> None:
    async def main(h: Harness) -> None:
        sock = await happydial.start_connection(
            addr_infos,
            socket_factory=factories(h, factory),
            trace=trace_of(trace),
            history=history_of(history),
            **kwargs,
        )
        assert sock in h.net.sockets
        assert [s for s in h.net.sockets if s.fileno() != -1] == [sock]
        sock.close()

    names = ["addr_infos", "socket_factory", "trace", "history", *kwargs]
    fuzz_call(main, names, path)


class FakeResolver:
    def __init__(self, answers: dict[int, Any]) -> None:
        self.answers = answers

    async def __call__(self, host: str, port: int, family: int) -> Any:  # noqa: ARG002
        await asyncio.sleep(0.001 * family)
        answer = self.answers.get(family)
        if isinstance(answer, OSError):
            raise answer
        return answer


answers = st.one_of(
    st.just(socket.gaierror(socket.EAI_NONAME, "no such name")),
    good_addr_info_lists,
    addr_info_lists,
    st.lists(near_addr_infos(), max_size=3),
)
CONNECT_KW = {
    "family": st.one_of(
        st.sampled_from([socket.AF_UNSPEC, socket.AF_UNSPEC, socket.AF_INET, socket.AF_INET6]),
        scalars,
    ),
    "happy_eyeballs_delay": delays,
    "first_address_family_count": st.one_of(st.integers(1, 3), st.integers(-1, 3), scalars),
    "resolution_delay": delays,
    "local_addr": st.one_of(
        st.none(),
        st.none(),
        st.sampled_from([("192.0.2.7", 0), ("2001:db8::7", 0), ("2001:db8::7", 0, 0, 1)]),
        sockaddrs(),
        scalars,
    ),
    "attempt_timeout": delays,
    "all_errors": st.booleans(),
    "max_in_flight": caps,
    "timeout": delays,
}


@pytest.mark.parametrize("path", PATHS)
@FUZZ_ASYNC
@given(
    host=st.one_of(hosts, scalars),
    port=ports,
    kwargs=st.fixed_dictionaries({}, optional=CONNECT_KW),
    v6=answers,
    v4=answers,
    resolver=st.one_of(st.just("fake"), st.just("fake"), scalars.filter(lambda x: x is not None)),
    factory=factory_choices,
    trace=traces,
    history=histories,
)
def test_connect(
    path: Path,
    host: Any,
    port: Any,
    kwargs: dict[str, Any],
    v6: Any,
    v4: Any,
    resolver: Any,
    factory: Any,
    trace: Any,
    history: Any,
) -> None:
    # Never the default resolver: no real DNS lookup may happen here.
    fake = FakeResolver({socket.AF_INET6: v6, socket.AF_INET: v4})

    async def main(h: Harness) -> None:
        sock = await happydial.connect(
            host,
            port,
            resolver=fake if resolver == "fake" else resolver,
            socket_factory=factories(h, factory),
            trace=trace_of(trace),
            history=history_of(history),
            **kwargs,
        )
        assert [s for s in h.net.sockets if s.fileno() != -1] == [sock]
        sock.close()

    names = ["host", "port", "resolver", "socket_factory", "trace", "history", *kwargs]
    names += ["resolver result"]
    fuzz_call(main, names, path)


WRAPPER_KW = {
    "ssl": st.one_of(st.none(), st.just(False), scalars),
    "server_hostname": st.one_of(st.none(), scalars),
    "happy_eyeballs_delay": delays,
    "attempt_timeout": delays,
    "max_in_flight": caps,
    "timeout": delays,
}


@FUZZ_ASYNC
@given(
    host=st.one_of(st.sampled_from(HOSTS), scalars),
    port=ports,
    kwargs=st.fixed_dictionaries({}, optional=WRAPPER_KW),
    limit=st.one_of(st.integers(1, 2**20), st.integers(-5, 0), scalars),
    use_open=st.booleans(),
)
def test_wrappers(host: Any, port: Any, kwargs: dict[str, Any], limit: Any, use_open: bool) -> None:
    resolver = FakeResolver({})

    async def main(h: Harness) -> None:
        if use_open:
            _, writer = await happydial.open_connection(
                host, port, limit=limit, resolver=resolver, socket_factory=h.pair_factory, **kwargs
            )
            writer.close()
            await writer.wait_closed()
        else:
            transport, _ = await happydial.create_connection(
                asyncio.Protocol,
                host,
                port,
                resolver=resolver,
                socket_factory=h.pair_factory,
                **kwargs,
            )
            transport.close()
            await asyncio.sleep(0)

    names = ["host", "port", "resolver", "limit", "ssl", "server_hostname", *kwargs]
    fuzz_call(main, names)


async def _win() -> str:
    await asyncio.sleep(0.01)
    return "won"


async def _fail() -> str:
    await asyncio.sleep(0.005)
    raise OSError("no")


coro_fns = st.one_of(
    st.lists(st.sampled_from([_win, _fail, "junk", None, lambda: 42]), max_size=4),
    st.lists(st.sampled_from([_win, _fail]), max_size=3).map(iter),
    anything.filter(lambda x: not isinstance(x, (list, tuple, dict, frozenset, str, bytes))),
)


@FUZZ_ASYNC
@given(fns=coro_fns, delay=delays, loop=st.one_of(st.none(), scalars))
def test_staggered_race(fns: Any, delay: Any, loop: Any) -> None:
    async def main(h: Harness) -> None:
        winner, index, errors = await happydial.staggered_race(fns, delay, loop=loop)
        if index is not None:
            assert winner == "won"
        assert len(errors) <= (len(fns) if isinstance(fns, list) else 3)

    fuzz_call(main, ["coro_fns", "delay", "loop"])


# ---------------------------------------------------------------------------
# RFC 6724 selection and source probes
# ---------------------------------------------------------------------------

source_values = st.one_of(
    st.none(),
    st.sampled_from(["192.0.2.9", "2001:db8::9", "fe80::9%lo", "::ffff:192.0.2.9"]),
    st.sampled_from(HOSTS),
    scalars,
)
sources_arguments = st.one_of(
    st.dictionaries(st.sampled_from(DOC_HOSTS + HOSTS), source_values, max_size=6),
    st.builds(lambda value: lambda _addr_info: value, source_values),
    anything,
)


@FUZZ
@given(addr_infos=addr_info_lists, sources=sources_arguments)
def test_sort_addr_infos(addr_infos: Any, sources: Any) -> None:
    snapshot = list(addr_infos) if isinstance(addr_infos, list) else None
    result = call_pure(
        lambda a, s: happydial.sort_addr_infos(a, sources=s),
        ["addr_infos", "sources"],
        *[addr_infos, sources],
    )
    if isinstance(result, list):
        event("sorted")
        assert sorted(map(repr, result)) == sorted(map(repr, addr_infos))
    if snapshot is not None:
        assert addr_infos == snapshot, "the input was mutated"


@FUZZ
@given(addr_info=st.one_of(good_addr_infos, near_addr_infos(), anything))
def test_probe_source(addr_info: Any) -> None:
    before = open_fds()
    result = call_pure(happydial.probe_source, ["addr_info"], addr_info)
    assert result is None or isinstance(result, (str, TypeError, ValueError))
    assert open_fds() == before


@FUZZ
@given(ttl=delays, max_entries=st.one_of(st.integers(-1, 3), scalars))
def test_source_address_cache(ttl: Any, max_entries: Any) -> None:
    result = call_pure(
        lambda t, m: happydial.SourceAddressCache(ttl=t, max_entries=m),
        ["ttl", "max_entries"],
        ttl,
        max_entries,
    )
    if isinstance(result, happydial.SourceAddressCache):
        assert len(result) == 0
