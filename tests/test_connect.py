"""connect() on a virtual clock with a scripted resolver: RFC 8305 sections 3 and 4."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

import pytest

import happydial
from happydial import AddrInfoType, connect
from happydial.testing import FakeNetwork, FakeSocket, Outcome, Path

from .conftest import Runner

V6, V4 = socket.AF_INET6, socket.AF_INET
A6, B6, C6 = "2001:db8::a", "2001:db8::b", "2001:db8::c"
A4, B4, C4 = "192.0.2.1", "192.0.2.2", "192.0.2.3"
NX = socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def ai(host: str, port: int = 80) -> AddrInfoType:
    if ":" in host:
        return (V6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
    return (V4, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


class ScriptedResolver:
    """Answers per family after a delay; records the calls."""

    def __init__(self, answers: dict[int, tuple[float, list[str] | BaseException]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int, int, float]] = []

    async def __call__(self, host: str, port: int, family: int) -> list[AddrInfoType]:
        loop = asyncio.get_running_loop()
        self.calls.append((host, port, family, loop.time()))
        delay, answer = self.answers[family]
        await asyncio.sleep(delay)
        if isinstance(answer, BaseException):
            raise answer
        return [ai(h, port) for h in answer]


@dataclass
class Case:
    answers: dict[int, tuple[float, list[str] | BaseException]]
    hosts: dict[str, tuple[float, Outcome]]
    starts: dict[str, float]
    winner: str | None
    end: float
    kwargs: dict[str, Any] | None = None


HANG: tuple[float, Outcome] = (0.0, "hang")
CASES = {
    "IPv6 answers first: connect at once": Case(
        {V6: (0.01, [A6]), V4: (0.02, [A4])},
        {A6: (0.1, "connect")},
        {A6: 0.01},
        A6,
        0.11,
    ),
    "IPv4 first, IPv6 within the resolution delay: IPv6 leads": Case(
        {V6: (0.03, [A6]), V4: (0.01, [A4])},
        {A6: HANG, A4: (0.1, "connect")},
        {A6: 0.03, A4: 0.28},
        A4,
        0.38,
    ),
    "IPv4 first, IPv6 late: IPv4 starts after the resolution delay": Case(
        {V6: (2.0, [A6]), V4: (0.01, [A4])},
        {A4: HANG, A6: (0.1, "connect")},
        {A4: 0.06, A6: 2.0},
        A6,
        2.1,
    ),
    "late IPv6 joins the untried queue, interleaved, on the schedule": Case(
        {V6: (0.4, [A6, B6]), V4: (0.01, [A4, B4, C4])},
        {A4: HANG, B4: HANG, C4: HANG, A6: HANG, B6: (0.05, "connect")},
        {A4: 0.06, B4: 0.31, A6: 0.56, C4: 0.81, B6: 1.06},
        B6,
        1.11,
    ),
    "a win abandons the slow lookup": Case(
        {V6: (30.0, [A6]), V4: (0.01, [A4])},
        {A4: (0.1, "connect")},
        {A4: 0.06},
        A4,
        0.16,
    ),
    "IPv6 fails first: IPv4 goes at once": Case(
        {V6: (0.01, NX), V4: (0.02, [A4])},
        {A4: (0.1, "connect")},
        {A4: 0.02},
        A4,
        0.12,
    ),
    "IPv6 fails during the resolution delay: IPv4 released at once": Case(
        {V6: (0.03, NX), V4: (0.01, [A4])},
        {A4: (0.1, "connect")},
        {A4: 0.03},
        A4,
        0.13,
    ),
    "IPv4 fails: IPv6 alone": Case(
        {V6: (0.02, [A6, B6]), V4: (0.01, NX)},
        {A6: (0.05, "refuse"), B6: (0.05, "connect")},
        {A6: 0.02, B6: 0.07},
        B6,
        0.12,
    ),
    "empty answer counts as no address": Case(
        {V6: (0.01, []), V4: (0.02, [A4])},
        {A4: (0.1, "connect")},
        {A4: 0.02},
        A4,
        0.12,
    ),
    "duplicates in an answer are tried once": Case(
        {V6: (0.01, NX), V4: (0.01, [A4, A4, B4])},
        {A4: (0.1, "refuse"), B4: (0.1, "connect")},
        {A4: 0.01, B4: 0.11},
        B4,
        0.21,
    ),
    "first_address_family_count=2": Case(
        {V6: (0.01, [A6, B6, C6]), V4: (0.01, [A4])},
        {A6: HANG, B6: HANG, A4: (0.01, "connect")},
        {A6: 0.01, B6: 0.26, A4: 0.51},
        A4,
        0.52,
        {"first_address_family_count": 2},
    ),
    "family=AF_INET asks only for A, with no resolution delay": Case(
        {V4: (0.01, [A4])},
        {A4: (0.1, "connect")},
        {A4: 0.01},
        A4,
        0.11,
        {"family": V4},
    ),
    "every attempt fails: the connect error, not a lookup error": Case(
        {V6: (0.01, [A6]), V4: (0.01, [A4])},
        {A6: (0.1, "refuse"), A4: (0.1, "refuse")},
        {A6: 0.01, A4: 0.11},
        None,
        0.21,
    ),
}


def run_case(
    vrun: Runner[Any], case: Case, path: Path = "task"
) -> tuple[Any, float, FakeNetwork, ScriptedResolver]:
    async def main() -> tuple[Any, float, FakeNetwork, ScriptedResolver]:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop, path=path)
        for host, (delay, outcome) in case.hosts.items():
            net.script(host, delay=delay, outcome=outcome)
        resolver = ScriptedResolver(case.answers)
        try:
            result: Any = await connect(
                "example.test",
                80,
                resolver=resolver,
                socket_factory=net.socket_factory,
                **(case.kwargs or {}),
            )
        except OSError as exc:
            result = exc
        return result, loop.time(), net, resolver

    outcome: tuple[Any, float, FakeNetwork, ScriptedResolver] = vrun(main)
    return outcome


# Both connect paths, against the same expected times (see tests/test_racer.py).
@pytest.mark.parametrize("path", ["writer", "task"])
@pytest.mark.parametrize("name", list(CASES))
def test_case(vrun: Runner[Any], name: str, path: Path) -> None:
    case = CASES[name]
    result, end, net, resolver = run_case(vrun, case, path)
    if isinstance(result, FakeSocket):
        result.close()
    assert list(net.start_times) == list(case.starts), "start order"
    assert net.start_times == pytest.approx(case.starts)
    assert end == pytest.approx(case.end)
    assert sorted(c[2] for c in resolver.calls) == sorted(case.answers)
    assert all(c[3] == 0 for c in resolver.calls), "lookups start together, at once"
    if case.winner is None:
        assert isinstance(result, OSError)
        assert not isinstance(result, socket.gaierror)
    else:
        assert isinstance(result, FakeSocket)
        assert result.addr_info[4][0] == case.winner
    assert net.open_sockets == []
    assert all(s.close_count == 1 for s in net.sockets)


def test_both_families_fail(vrun: Runner[Any]) -> None:
    async def main() -> None:
        nodata = socket.gaierror(socket.EAI_NODATA, "No address associated with hostname")
        resolver = ScriptedResolver({V6: (0.01, NX), V4: (0.02, nodata)})
        with pytest.raises(socket.gaierror) as info:
            await connect("nowhere.test", 80, resolver=resolver)
        assert info.value.errno == socket.EAI_NONAME
        assert "cannot resolve 'nowhere.test'" in str(info.value)
        group = info.value.__cause__
        assert isinstance(group, ExceptionGroup)
        assert group.exceptions == (NX, nodata)

    vrun(main)


def test_non_gaierror_lookup_failures(vrun: Runner[Any]) -> None:
    async def main() -> None:
        resolver = ScriptedResolver({V6: (0.01, OSError("resolver down")), V4: (0.01, [])})
        with pytest.raises(socket.gaierror, match=r"resolver down; .*no IPv4 address") as info:
            await connect("x.test", 80, resolver=resolver)
        assert info.value.errno == socket.EAI_NONAME

    vrun(main)


@pytest.mark.parametrize(
    ("host", "family", "sockaddr"),
    [
        ("192.0.2.1", V4, ("192.0.2.1", 443)),
        ("2001:db8::1", V6, ("2001:db8::1", 443, 0, 0)),
        ("fe80::1%lo", V6, ("fe80::1", 443, 0, socket.if_nametoindex("lo"))),
    ],
)
def test_literals_never_touch_the_resolver(
    vrun: Runner[Any], host: str, family: int, sockaddr: tuple[Any, ...]
) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(sockaddr[0], delay=0.01)
        resolver = ScriptedResolver({})
        sock = await connect(host, 443, resolver=resolver, socket_factory=net.socket_factory)
        assert isinstance(sock, FakeSocket)
        assert sock.addr_info == (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)
        assert resolver.calls == []
        sock.close()
        with pytest.raises(ValueError, match="is not an address of family"):
            await connect(host, 443, family=V4 if family == V6 else V6)

    vrun(main)


@pytest.mark.parametrize("at", [0.0, 0.005, 0.03, 0.2])
def test_cancellation_during_resolution_and_race(vrun: Runner[Any], at: float) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A4, outcome="hang")
        resolver = ScriptedResolver({V6: (5.0, [A6]), V4: (0.01, [A4])})
        task = loop.create_task(
            connect("x.test", 80, resolver=resolver, socket_factory=net.socket_factory)
        )
        await asyncio.sleep(at)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert net.open_sockets == []
        assert loop.time() == at

    vrun(main)


def test_a_resolver_bug_propagates(vrun: Runner[Any]) -> None:
    async def main() -> None:
        async def broken(host: str, port: int, family: int) -> list[AddrInfoType]:
            await asyncio.sleep(0.01 if family == V4 else 1.0)
            raise KeyError(family)

        with pytest.raises(KeyError):
            await connect("x.test", 80, resolver=broken)

    vrun(main)


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        ([("x",)], r"resolver result\[0\] must be a 5-tuple"),
        ([ai("not-an-ip.test")], "is not an IP address"),
    ],
)
def test_resolver_answers_are_validated(vrun: Runner[Any], answer: Any, match: str) -> None:
    async def main() -> None:
        async def bad(host: str, port: int, family: int) -> list[AddrInfoType]:
            await asyncio.sleep(0)
            return answer  # type: ignore[no-any-return]

        with pytest.raises(ValueError, match=match):
            await connect("x.test", 80, resolver=bad, family=V4)

    vrun(main)


def test_trace_includes_lookups(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, delay=0.01)
        events: list[happydial.TraceEvent] = []
        resolver = ScriptedResolver({V6: (0.02, NX), V4: (0.01, [A4])})
        sock = await connect(
            "x.test", 80, resolver=resolver, socket_factory=net.socket_factory, trace=events.append
        )
        sock.close()
        names = [type(e).__name__ for e in events]
        assert names == [
            "ResolutionStarted",
            "ResolutionStarted",
            "ResolutionFinished",
            "ResolutionFailed",
            "AttemptStarted",
            "AttemptSucceeded",
        ]
        finished = events[2]
        assert isinstance(finished, happydial.ResolutionFinished)
        assert finished.addr_infos == (ai(A4),)
        assert finished.time == pytest.approx(0.01)

    vrun(main)


BAD = [
    ({"host": ""}, ValueError, "host must not be empty"),
    ({"host": b"x"}, TypeError, "host must be a str, got b'x'"),
    (
        {"host": "fe80::1%no-such-if9"},
        ValueError,
        "host 'fe80::1%no-such-if9': no network interface",
    ),
    (
        {"family": []},
        TypeError,
        r"family must be an int \(AF_UNSPEC, AF_INET or AF_INET6\), got \[\]",
    ),
    ({"port": "80"}, TypeError, "port must be an int, got '80'"),
    ({"port": 70000}, ValueError, "port must be in 0-65535, got 70000"),
    ({"family": socket.AF_UNIX}, ValueError, "family must be AF_UNSPEC, AF_INET or AF_INET6"),
    ({"happy_eyeballs_delay": -1}, ValueError, "happy_eyeballs_delay must be a finite"),
    ({"resolution_delay": float("nan")}, ValueError, "resolution_delay must be a finite"),
    (
        {"first_address_family_count": 0},
        ValueError,
        "first_address_family_count must be at least 1",
    ),
    ({"local_addr": ("localhost", 0)}, ValueError, r"local_addr \('localhost', 0\): host"),
    ({"local_addr": "192.0.2.1"}, TypeError, "local_addr must be a tuple"),
    ({"resolver": "dns"}, TypeError, "resolver must be callable or None, got 'dns'"),
    ({"attempt_timeout": -2}, ValueError, "attempt_timeout must be a finite, positive"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), BAD)
def test_bad_arguments(
    vrun: Runner[Any], kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    async def main() -> None:
        call: dict[str, Any] = {"host": "x.test", "port": 80, "resolver": ScriptedResolver({})}
        call.update(kwargs)
        with pytest.raises(exc, match=match):
            await connect(**call)

    vrun(main)


def test_errors_of_abandoned_lookups_are_ignored(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, delay=0.01)

        async def raises_when_cancelled(host: str, port: int, family: int) -> list[AddrInfoType]:
            if family == V4:
                return [ai(A4, port)]
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise KeyError("resolver bug on cancellation") from None
            return []  # pragma: no cover - never reached

        sock = await connect(
            "x.test", 80, resolver=raises_when_cancelled, socket_factory=net.socket_factory
        )
        sock.close()

    vrun(main)


@pytest.mark.parametrize("on", ["ResolutionStarted", "ResolutionFinished", "HistoryReordered"])
def test_a_trace_that_raises_during_resolution(vrun: Runner[Any], on: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script(A6, outcome="hang")
        net.script(A4, delay=0.01)
        history = happydial.AddressHistory(clock=loop.time)
        history.record_success(ai(B6)[4], 0.01)
        resolver = ScriptedResolver({V6: (0.01, [A6, B6]), V4: (0.02, [A4])})

        def trace(event: happydial.TraceEvent) -> None:
            if type(event).__name__ == on:
                raise ZeroDivisionError(on)

        with pytest.raises(ZeroDivisionError, match=on):
            await connect(
                "x.test",
                80,
                resolver=resolver,
                socket_factory=net.socket_factory,
                trace=trace,
                history=history,
            )
        assert net.open_sockets == []

    vrun(main)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("192.0.2.1", (socket.AF_INET, ("192.0.2.1", 80))),
        ("2001:db8::1", (socket.AF_INET6, ("2001:db8::1", 80, 0, 0))),
        ("dual.test", None),  # a letter and no colon: a name, said without ipaddress
        ("1.2.3", None),  # digits and dots, yet not an address: ipaddress says so
        ("\u0661.\u0662.\u0663.\u0664", None),  # Unicode digits: isdigit(), not IPv4
        ("::g", None),  # a colon, yet not an address
        ("192.0.2.1.test", None),
    ],
)
def test_only_ip_literals_skip_the_resolver(
    host: str, expected: tuple[int, tuple[object, ...]] | None
) -> None:
    found = happydial._connect._literal_addr_infos(host, 80)
    assert (None if found is None else (found[0][0], found[0][4])) == expected
