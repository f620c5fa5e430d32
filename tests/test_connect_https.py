"""connect() with HTTPS records (RFC 9460, Happy Eyeballs v3) on a virtual clock."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest

import happydial
from happydial import AddrInfoType, ServiceBinding, connect
from happydial._cli import Timeline
from happydial.testing import FakeNetwork, FakeSocket, Outcome

from .conftest import Runner
from .test_connect import NX, ai

V6, V4 = socket.AF_INET6, socket.AF_INET
SB = ServiceBinding
HOST = "example.test"
A6, B6, C6, H6, J6 = "2001:db8::a", "2001:db8::b", "2001:db8::c", "2001:db8::1", "2001:db8::2"
A4, H4 = "192.0.2.1", "192.0.2.101"
HANG: tuple[float, Outcome] = (0.0, "hang")
OK: tuple[float, Outcome] = (0.02, "connect")
Answer = tuple[float, list[str] | BaseException]


class HttpsResolver:
    """Scripted A/AAAA answers per (name, family) and HTTPS answers per name."""

    def __init__(
        self,
        answers: dict[tuple[str, int], Answer],
        https: dict[str, tuple[float, list[ServiceBinding] | BaseException]],
    ) -> None:
        self.answers = answers
        self.https_answers = https
        self.calls: list[tuple[str, int, int, float]] = []
        self.https_calls: list[tuple[str, float]] = []

    async def __call__(self, host: str, port: int, family: int) -> list[AddrInfoType]:
        self.calls.append((host, port, family, asyncio.get_running_loop().time()))
        delay, answer = self.answers.get((host, family), (0.0, NX))
        await asyncio.sleep(delay)
        if isinstance(answer, BaseException):
            raise answer
        return [ai(h, port) for h in answer]

    async def resolve_https(self, host: str) -> list[ServiceBinding]:
        self.https_calls.append((host, asyncio.get_running_loop().time()))
        delay, answer = self.https_answers.get(host, (0.0, []))
        await asyncio.sleep(delay)
        if isinstance(answer, BaseException):
            raise answer
        return answer


@dataclass
class Case:
    answers: dict[tuple[str, int], Answer]
    https: dict[str, tuple[float, list[ServiceBinding] | BaseException]]
    hosts: dict[str, tuple[float, Outcome]]
    starts: list[tuple[str, int, float]]  # (address, port, start time), in order
    end: float
    kwargs: dict[str, Any] = field(default_factory=dict)


def both(delay: float, v6: list[str] | BaseException, v4: list[str] | BaseException) -> Any:
    return {(HOST, V6): (delay, v6), (HOST, V4): (delay, v4)}


HINTS = SB(1, ipv6hint=(H6,), ipv4hint=(H4,), alpn=("h2",))
CASES = {
    "hints race at once, before AAAA and A (1 s late)": Case(
        both(1.0, [A6], [A4]),
        {HOST: (0.0, [HINTS])},
        {H6: OK},
        [(H6, 443, 0.0)],
        0.02,
    ),
    "IPv4 hints only: they wait the resolution delay for IPv6": Case(
        both(1.0, [A6], [A4]),
        {HOST: (0.0, [SB(1, ipv4hint=(H4,))])},
        {H4: OK},
        [(H4, 443, 0.05)],
        0.07,
    ),
    "no HTTPS record: as without, no added delay": Case(
        {(HOST, V6): (0.01, [A6]), (HOST, V4): (0.02, [A4])},
        {HOST: (0.0, [])},
        {A6: (0.1, "connect")},
        [(A6, 443, 0.01)],
        0.11,
    ),
    "a slow HTTPS answer holds AAAA at most the resolution delay": Case(
        {(HOST, V6): (0.01, [A6]), (HOST, V4): (0.02, [A4])},
        {HOST: (5.0, [SB(1, port=8443)])},
        {A6: (0.1, "connect")},
        [(A6, 443, 0.06)],
        0.16,
    ),
    "an HTTPS answer within the resolution delay sets the port": Case(
        {(HOST, V6): (0.01, [A6]), (HOST, V4): (0.02, [A4])},
        {HOST: (0.03, [SB(1, port=8443)])},
        {A6: (0.1, "connect")},
        [(A6, 8443, 0.03)],
        0.13,
    ),
    "the HTTPS lookup fails: as without": Case(
        {(HOST, V6): (0.01, [A6]), (HOST, V4): (0.02, [A4])},
        {HOST: (0.0, OSError("HTTPS query refused"))},
        {A6: (0.1, "connect")},
        [(A6, 443, 0.01)],
        0.11,
    ),
    "real answers drop untried hints; a tried hint is not tried again": Case(
        both(0.1, [H6, A6], [A4]),
        {HOST: (0.0, [SB(1, ipv6hint=(H6, J6))])},
        {H6: HANG, A4: HANG, A6: OK},
        [(H6, 443, 0.0), (A4, 443, 0.25), (A6, 443, 0.5)],  # J6, dropped, would go before A6
        0.52,
    ),
    "records in priority order, each on its target's addresses, the name's own last": Case(
        {
            ("one.test", V6): (0.01, [A6]),
            ("two.test", V6): (0.01, [B6]),
            (HOST, V6): (0.01, [C6]),
        },
        {HOST: (0.0, [SB(2, "two.test", port=8002), SB(1, "one.test", port=8001)])},
        {A6: HANG, B6: HANG, C6: OK},
        [(A6, 8001, 0.01), (B6, 8002, 0.26), (C6, 443, 0.51)],
        0.53,
        {"family": V6},
    ),
    "a dead priority-1 endpoint: priority 2 after one attempt delay": Case(
        {("one.test", V6): (0.0, [A6]), ("two.test", V6): (0.0, [B6])},
        {HOST: (0.0, [SB(1, "one.test"), SB(2, "two.test")])},
        {A6: HANG, B6: OK},
        [(A6, 443, 0.0), (B6, 443, 0.25)],
        0.27,
        {"family": V6},
    ),
    "AliasMode: the alias target's addresses": Case(
        {("cdn.test", V6): (0.01, [B6]), ("cdn.test", V4): (0.01, [A4])},
        {HOST: (0.0, [SB(0, "cdn.test")]), "cdn.test": (0.0, [SB(1, port=8443)])},
        {B6: OK},
        [(B6, 8443, 0.01)],
        0.03,
    ),
    "an h3-only record is skipped: its target is never asked": Case(
        {(HOST, V6): (0.01, [A6])},
        {HOST: (0.0, [SB(1, "quic.test", alpn=("h3",), no_default_alpn=True)])},
        {A6: OK},
        [(A6, 443, 0.01)],
        0.03,
        {"family": V6},
    ),
    "hints of a target whose lookup fails stay": Case(
        {(HOST, V6): (0.0, NX), ("svc.test", V6): (0.0, NX)},
        {HOST: (0.0, [SB(1, "svc.test", ipv6hint=(H6,))])},
        {H6: OK},
        [(H6, 443, 0.0)],
        0.02,
        {"family": V6},
    ),
    "an answer before the HTTPS records: its record endpoints come with them": Case(
        {(HOST, V6): (0.0, [A6]), (HOST, V4): (0.0, [A4])},
        {HOST: (0.02, [SB(1, port=8443), SB(2, "two.test")])},
        {A6: HANG, A4: OK},
        [(A6, 8443, 0.02), (A4, 8443, 0.27)],
        0.29,
    ),
}


def run_case(vrun: Runner[Any], case: Case) -> tuple[Any, float, list[Any], HttpsResolver]:
    async def main() -> tuple[Any, float, list[Any], HttpsResolver]:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        for host, (delay, outcome) in case.hosts.items():
            net.script(host, delay=delay, outcome=outcome)
        resolver = HttpsResolver(case.answers, case.https)
        events: list[happydial.TraceEvent] = []
        try:
            result: Any = await connect(
                HOST,
                443,
                resolver=resolver,
                socket_factory=net.socket_factory,
                trace=events.append,
                **case.kwargs,
            )
        except OSError as exc:
            result = exc
        assert net.open_sockets == ([result] if isinstance(result, FakeSocket) else [])
        return result, loop.time(), events, resolver

    outcome: tuple[Any, float, list[Any], HttpsResolver] = vrun(main)
    return outcome


@pytest.mark.parametrize("name", list(CASES))
def test_case(vrun: Runner[Any], name: str) -> None:
    case = CASES[name]
    result, end, events, resolver = run_case(vrun, case)
    assert isinstance(result, FakeSocket)
    result.close()
    starts = [
        (e.addr_info[4][0], e.addr_info[4][1], e.time)
        for e in events
        if isinstance(e, happydial.AttemptStarted)
    ]
    assert [s[:2] for s in starts] == [s[:2] for s in case.starts]
    assert [s[2] for s in starts] == pytest.approx([s[2] for s in case.starts])
    assert end == pytest.approx(case.end)
    assert resolver.https_calls[0] == (HOST, 0.0), "asked with AAAA and A, at once"


def test_h3_only_target_never_asked(vrun: Runner[Any]) -> None:
    _, _, _, resolver = run_case(
        vrun, CASES["an h3-only record is skipped: its target is never asked"]
    )
    assert [c[0] for c in resolver.calls] == [HOST]


def test_two_records_one_target_one_lookup(vrun: Runner[Any]) -> None:
    case = Case(
        {("svc.test", V6): (0.01, [A6])},
        {HOST: (0.0, [SB(1, "svc.test", port=8001), SB(2, "svc.test", port=8002)])},
        {A6: (0.01, "refuse")},
        [],
        0.0,
        {"family": V6},
    )
    result, _, events, resolver = run_case(vrun, case)
    assert isinstance(result, OSError)
    assert [(c[0], c[2]) for c in resolver.calls] == [(HOST, V6), ("svc.test", V6)]
    tried = [e.addr_info[4][:2] for e in events if isinstance(e, happydial.AttemptStarted)]
    assert tried == [(A6, 8001), (A6, 8002)]
    failed = [e for e in events if isinstance(e, happydial.ResolutionFailed)]
    assert [(e.host, e.family) for e in failed] == [(HOST, V6)]


def test_trace_tells_the_records_and_the_chosen_one(vrun: Runner[Any]) -> None:
    ech = b"\x00\x04\x00\x01\x00\x01"
    record = SB(1, "svc.test", port=8443, alpn=("h3", "h2"), ech=ech)
    case = Case(
        {("svc.test", V6): (0.01, [A6])},
        {HOST: (0.0, [record])},
        {A6: OK},
        [],
        0.0,
        {"family": V6},
    )
    result, _, events, _ = run_case(vrun, case)
    result.close()
    resolved = [e for e in events if isinstance(e, happydial.ServiceBindingsResolved)]
    assert resolved == [happydial.ServiceBindingsResolved(HOST, HOST, (record,), None, 0.0)]
    chosen = [e for e in events if isinstance(e, happydial.ServiceBindingChosen)]
    assert chosen == [
        happydial.ServiceBindingChosen(
            HOST, record, ("h2", "http/1.1"), ech, ai(A6, 8443), chosen[0].time
        )
    ]
    assert chosen[0].time == pytest.approx(0.03)
    names = [(type(e).__name__, getattr(e, "host", None)) for e in events]
    assert ("ResolutionStarted", "svc.test") in names
    assert ("ResolutionFinished", "svc.test") in names
    timeline = Timeline(0.0)
    assert timeline.describe(resolved[0])[0] == "lookup HTTPS answered: 1 svc.test port 8443"
    text, record_json = timeline.describe(chosen[0])
    assert (
        text == "HTTPS record 1 svc.test port 8443 chosen: ALPN h2,http/1.1, ECH config (not used)"
    )
    assert record_json["alpn"] == ["h2", "http/1.1"]
    assert record_json["ech"] is True


def test_timeline_of_an_empty_or_failed_https_lookup() -> None:
    timeline = Timeline(0.0)
    empty = happydial.ServiceBindingsResolved(HOST, HOST, (), None, 0.0)
    assert timeline.describe(empty)[0] == "lookup HTTPS answered: no record"
    failed = happydial.ServiceBindingsResolved(HOST, HOST, (), OSError("refused"), 0.0)
    assert timeline.describe(failed)[0] == "lookup HTTPS failed: refused"
    chosen = happydial.ServiceBindingChosen(HOST, SB(1), ("http/1.1",), None, ai(A6), 0.0)
    assert timeline.describe(chosen)[0] == "HTTPS record 1 . chosen: ALPN http/1.1"


def test_no_chosen_event_when_the_name_own_address_wins(vrun: Runner[Any]) -> None:
    case = CASES["records in priority order, each on its target's addresses, the name's own last"]
    result, _, events, _ = run_case(vrun, case)
    result.close()
    assert not [e for e in events if isinstance(e, happydial.ServiceBindingChosen)]


def test_a_trace_that_raises_on_the_chosen_event_closes_the_socket(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(H6, delay=0.01)
        resolver = HttpsResolver(both(1.0, [A6], [A4]), {HOST: (0.0, [HINTS])})

        def trace(event: happydial.TraceEvent) -> None:
            if isinstance(event, happydial.ServiceBindingChosen):
                raise RuntimeError("trace bug")  # noqa: TRY004 - not a type check: a bug

        with pytest.raises(RuntimeError, match="trace bug"):
            await connect(
                HOST, 443, resolver=resolver, socket_factory=net.socket_factory, trace=trace
            )
        assert net.open_sockets == []
        assert [s.close_count for s in net.sockets] == [1]

    vrun(main)


def test_a_trace_that_raises_on_the_records_event_ends_the_call(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        resolver = HttpsResolver(both(1.0, [A6], [A4]), {HOST: (0.0, [HINTS])})

        def trace(event: happydial.TraceEvent) -> None:
            if isinstance(event, happydial.ServiceBindingsResolved):
                raise RuntimeError("trace bug")  # noqa: TRY004 - not a type check: a bug

        with pytest.raises(RuntimeError, match="trace bug"):
            await connect(
                HOST, 443, resolver=resolver, socket_factory=net.socket_factory, trace=trace
            )
        assert net.sockets == []

    vrun(main)


def test_a_bug_in_resolve_https_reaches_the_caller(vrun: Runner[Any]) -> None:
    async def main() -> None:
        resolver = HttpsResolver(both(1.0, [A6], [A4]), {HOST: (0.01, ValueError("bug"))})
        with pytest.raises(ValueError, match="bug"):
            await connect(HOST, 443, resolver=resolver)

    vrun(main)


def test_cancelled_while_the_https_lookup_runs_leaves_nothing(vrun: Runner[Any]) -> None:
    async def main() -> None:
        resolver = HttpsResolver(both(5.0, [A6], [A4]), {HOST: (5.0, [HINTS])})
        task = asyncio.get_running_loop().create_task(connect(HOST, 443, resolver=resolver))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    vrun(main)


class Switched(HttpsResolver):
    https = False


def test_a_resolver_whose_https_is_off_is_not_asked(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A6, delay=0.01)
        resolver = Switched(both(0.01, [A6], [A4]), {HOST: (0.0, [HINTS])})
        sock = await connect(HOST, 443, resolver=resolver, socket_factory=net.socket_factory)
        sock.close()
        assert resolver.https_calls == []
        assert net.start_times == {A6: pytest.approx(0.01)}

    vrun(main)


def test_resolve_https_must_be_callable(vrun: Runner[Any]) -> None:
    class Bad(HttpsResolver):
        resolve_https = "yes"  # type: ignore[assignment]

    async def main() -> None:
        with pytest.raises(TypeError, match=r"resolver\.resolve_https must be callable"):
            await connect(HOST, 443, resolver=Bad({}, {}))

    vrun(main)


def test_dnspython_resolver_https_option() -> None:
    assert happydial.DnspythonResolver().https is False
    assert happydial.DnspythonResolver(https=True).https is True
    with pytest.raises(TypeError, match="https must be a bool, got 1"):
        happydial.DnspythonResolver(https=1)  # type: ignore[arg-type]


def test_held_ipv4_answer_and_ipv4_hints_leave_together(vrun: Runner[Any]) -> None:
    case = Case(
        {(HOST, V4): (0.0, [A4]), (HOST, V6): (1.0, [A6])},
        {HOST: (0.02, [SB(1, "svc.test", ipv4hint=(H4,))])},
        {H4: OK},
        [(H4, 443, 0.05)],  # the hint, ranked first, when the resolution delay ends
        0.07,
    )
    result, _, _, _ = run_case(vrun, case)
    result.close()


def test_hints_are_ignored_for_an_answer_already_in(vrun: Runner[Any]) -> None:
    # RFC 9460 section 7.3: with the target's A records at hand, its ipv4hint is ignored.
    case = Case(
        {(HOST, V4): (0.0, [A4]), (HOST, V6): (1.0, [A6])},
        {HOST: (0.02, [SB(1, ipv4hint=(H4,))])},
        {A4: OK},
        [(A4, 443, 0.05)],
        0.07,
    )
    result, _, events, _ = run_case(vrun, case)
    result.close()
    started = [e.addr_info[4] for e in events if isinstance(e, happydial.AttemptStarted)]
    assert started == [(A4, 443)]


@pytest.mark.parametrize(
    "name",
    [
        "records in priority order, each on its target's addresses, the name's own last",
        "hints of a target whose lookup fails stay",
    ],
)
def test_without_a_trace(vrun: Runner[Any], name: str) -> None:
    case = CASES[name]

    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        for host, (delay, outcome) in case.hosts.items():
            net.script(host, delay=delay, outcome=outcome)
        resolver = HttpsResolver(case.answers, case.https)
        sock = await connect(
            HOST, 443, resolver=resolver, socket_factory=net.socket_factory, **case.kwargs
        )
        sock.close()
        assert net.start_times == {h: pytest.approx(t) for h, _, t in case.starts}

    vrun(main)


class Abandoned(HttpsResolver):
    async def resolve_https(self, host: str) -> list[ServiceBinding]:  # noqa: ARG002
        try:
            await asyncio.sleep(5.0)
        except asyncio.CancelledError:
            raise OSError("transport closed under the query") from None
        return []  # pragma: no cover - abandoned before


def test_an_abandoned_https_lookup_that_raises_is_nobodys_business(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A6, delay=0.02)
        resolver = Abandoned({(HOST, V6): (0.01, [A6])}, {})
        sock = await connect(
            HOST, 443, resolver=resolver, family=V6, socket_factory=net.socket_factory
        )
        sock.close()
        assert net.start_times == {A6: pytest.approx(0.06)}  # held the resolution delay
        await asyncio.sleep(0)

    vrun(main)


def test_a_bad_sources_mapping_meeting_the_hints_reaches_the_caller(vrun: Runner[Any]) -> None:
    def sources(addr_info: AddrInfoType) -> str:
        if addr_info[4][0] == H6:
            raise KeyError(H6)
        return "2001:db8::99"

    async def main() -> None:
        resolver = HttpsResolver(both(1.0, [A6], [A4]), {HOST: (0.0, [HINTS])})
        with pytest.raises(KeyError):
            await connect(HOST, 443, resolver=resolver, sources=sources)

    vrun(main)


def test_dnspython_resolve_https_from_dns(run: Runner[Any]) -> None:
    from .test_resolver import DnsServer, make_dnspython

    server = DnsServer()
    server.zone(
        {
            "svc.test": {
                "HTTPS": {
                    "records": [
                        "2 . alpn=h2",
                        "1 pop.svc.test. port=8443 ipv6hint=2001:db8::1 ech=AAQAAQAB",
                    ]
                }
            },
            "plain.test": {"A": {"addresses": ["192.0.2.1"]}},
            "broken.test": {"HTTPS": {"records": [], "rcode": "SERVFAIL"}},
        }
    )

    async def main() -> None:
        resolver = make_dnspython(server)
        records = await resolver.resolve_https("svc.test")
        assert sorted(records, key=lambda r: r.priority) == [
            SB(1, "pop.svc.test", 8443, ipv6hint=("2001:db8::1",), ech=b"\x00\x04\x00\x01\x00\x01"),
            SB(2, alpn=("h2",)),
        ]
        assert await resolver.resolve_https("plain.test") == []  # no HTTPS record
        assert await resolver.resolve_https("nowhere.test") == []  # no such name
        with pytest.raises(socket.gaierror) as info:
            await resolver.resolve_https("broken.test")
        assert info.value.errno == socket.EAI_AGAIN
        await asyncio.sleep(0)

    try:
        run(main)
    finally:
        server.close()


def test_the_report_names_the_record_won_on(vrun: Runner[Any]) -> None:
    record = SB(1, "svc.test", port=8443, alpn=("h2",), ech=b"\x00\x04\x00\x01\x00\x01")

    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A6, delay=0.02)
        resolver = HttpsResolver({("svc.test", V6): (0.01, [A6])}, {HOST: (0.0, [record])})
        with happydial.recording() as rec:
            sock = await connect(
                HOST, 443, resolver=resolver, family=V6, socket_factory=net.socket_factory
            )
            sock.close()
            failing = HttpsResolver({}, {HOST: (0.0, OSError("refused"))})
            with pytest.raises(socket.gaierror):
                await connect(HOST, 443, resolver=failing, family=V6)
        won, failed = rec.reports
        assert won.service == record
        assert failed.service is None
        assert [(lk.host, lk.family, lk.outcome) for lk in won.lookups] == [
            (HOST, "AAAA", "failed"),
            ("svc.test", "AAAA", "answered"),
        ]
        notes = {e.name: dict(e.data) for e in won.events}
        assert notes["https_records"] == {"name": HOST, "records": ("1 svc.test port 8443",)}
        assert notes["https_record_chosen"] == {
            "record": "1 svc.test port 8443",
            "alpn": ("h2", "http/1.1"),
            "ech": True,
        }
        report = won.to_json()["traces"][0]["report"]  # type: ignore[index]
        assert report["service"] == {
            "priority": 1,
            "target": "svc.test",
            "port": 8443,
            "alpn": ["h2", "http/1.1"],
            "ech": True,
        }
        assert failed.to_json()["traces"][0]["report"]["service"] is None  # type: ignore[index]
        error_note = {e.name: dict(e.data) for e in failed.events}["https_records"]
        assert error_note == {"name": HOST, "records": (), "error": "refused"}

    vrun(main)
