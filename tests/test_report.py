"""Establishment reports: complete for every outcome, on the virtual clock, exact times.

Each scenario runs a call inside ``happydial.recording()`` on a scripted resolver and
network (``FakeNetwork``, task path: the errors' texts are the script's), and compares
the whole report, field by field, with what the scenario must produce.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import inspect
import json
import socket
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest

import happydial
from happydial import (
    AddrInfoType,
    AttemptReport,
    ConnectionReport,
    LookupReport,
    ReportEvent,
    connect,
    connection_report,
    recording,
    start_connection,
)
from happydial._errors import deadline_error
from happydial._report import record_call
from happydial._trace import RECORDING
from happydial.testing import FakeNetwork, FakeSocket, Path

from .conftest import Runner
from .test_ipv6only import A4 as NAT64_A4
from .test_ipv6only import A4_SYN, PREFIX, discovery, dns64, ipv6_only

V6, V4 = socket.AF_INET6, socket.AF_INET
A6, B6 = "2001:db8::1", "2001:db8::2"
A4, B4 = "192.0.2.1", "192.0.2.2"
NX = socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def ai(host: str, port: int = 443) -> AddrInfoType:
    if ":" in host:
        return (V6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
    return (V4, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


class Resolver:
    """Answers per family after a delay (an exception class is made fresh per call)."""

    def __init__(self, answers: dict[int, tuple[float, list[str] | Callable[[], Exception]]]):
        self.answers = answers

    async def __call__(self, host: str, port: int, family: int) -> list[AddrInfoType]:  # noqa: ARG002 - a resolver's signature
        delay, answer = self.answers[family]
        await asyncio.sleep(delay)
        if callable(answer):
            raise answer()
        return [ai(h, port) for h in answer]


def network(**scripts: tuple[float, Any]) -> FakeNetwork:
    """A FakeNetwork on the running loop; keyword ``A6=(0.003, "refuse")`` scripts A6."""
    net = FakeNetwork(asyncio.get_running_loop())
    for name, (delay, outcome) in scripts.items():
        net.script(globals()[name], delay=delay, outcome=outcome)
    return net


def refused(host: str) -> str:
    sockaddr = ai(host)[4]
    return f"[Errno {errno.ECONNREFUSED}] Connect call failed {sockaddr}"


# -- success after a failure and a delay --------------------------------------------


async def success_after_failure_and_delay() -> tuple[FakeSocket, ConnectionReport]:
    """AAAA at 3 ms (A6 dead, B6), A at 4 ms (A4 refused): B6 wins at 276 ms."""
    net = network(A6=(0, "hang"), A4=(0.003, "refuse"), B6=(0.02, "connect"))
    resolver = Resolver({V6: (0.003, [A6, B6]), V4: (0.004, [A4])})
    with recording() as rec:
        sock = await connect(
            "example.org", 443, resolver=resolver, socket_factory=net.socket_factory
        )
    assert isinstance(sock, FakeSocket)
    [report] = rec.reports
    return sock, report


SUCCESS = ConnectionReport(
    call="connect",
    host="example.org",
    port=443,
    addresses=(),
    outcome="connected",
    duration=0.276,
    peer="[2001:db8::2]:443",
    winner=2,
    error_type=None,
    errno=None,
    error=None,
    delay=0.25,
    attempt_timeout=None,
    timeout=None,
    max_in_flight=6,  # the default
    lookups=(
        LookupReport("AAAA", "example.org", "Resolver", 0.0, 0.003, "answered", (A6, B6)),
        LookupReport("A", "example.org", "Resolver", 0.0, 0.004, "answered", (A4,)),
    ),
    attempts=(
        AttemptReport(
            0, "[2001:db8::1]:443", 0.003, 0.273, "connect", "cancelled", delay_after=0.25
        ),
        AttemptReport(
            1,
            "192.0.2.1:443",
            0.253,
            0.003,
            "connect",
            "failed",
            failure="refused",
            errno=errno.ECONNREFUSED,
            error=refused(A4),
            delay_after=0.25,
        ),
        AttemptReport(
            2, "[2001:db8::2]:443", 0.256, 0.02, "connect", "connected", delay_after=0.25
        ),
    ),
    reordered=(),
    synthesized=(),
    events=(),  # compared on their own
    started_at=0.0,
)

SUCCESS_EVENTS = [
    (
        0.0,
        "connection_started",
        {"call": "connect", "host": "example.org", "port": 443, "delay_ms": 250.0},
    ),
    (0.0, "dns_query_started", {"family": "AAAA"}),
    (0.0, "dns_query_started", {"family": "A"}),
    (3.0, "dns_answer", {"family": "AAAA", "addresses": [A6, B6]}),
    (3.0, "connection_attempt_started", {"attempt": 0, "address": "[2001:db8::1]:443"}),
    (4.0, "dns_answer", {"family": "A", "addresses": [A4]}),
    (253.0, "connection_attempt_started", {"attempt": 1, "address": "192.0.2.1:443"}),
    (
        256.0,
        "connection_attempt_failed",
        {
            "attempt": 1,
            "address": "192.0.2.1:443",
            "stage": "connect",
            "errno": errno.ECONNREFUSED,
            "error": refused(A4),
        },
    ),
    (256.0, "connection_attempt_started", {"attempt": 2, "address": "[2001:db8::2]:443"}),
    (276.0, "connection_attempt_succeeded", {"attempt": 2, "address": "[2001:db8::2]:443"}),
    (
        276.0,
        "connection_attempt_cancelled",
        {"attempt": 0, "address": "[2001:db8::1]:443", "reason": "lost"},
    ),
    (276.0, "connection_established", {"outcome": "connected", "peer": "[2001:db8::2]:443"}),
]


def without_events(report: ConnectionReport) -> ConnectionReport:
    """*report* with the fields a scenario cannot know exactly set to known values."""
    fields = {name: getattr(report, name) for name in ConnectionReport.__dataclass_fields__}
    fields.update(events=(), started_at=0.0)
    return ConnectionReport(**fields)


def test_success_after_a_failure_and_a_delay(vrun: Runner[Any]) -> None:
    async def main() -> None:
        sock, report = await success_after_failure_and_delay()
        sock.close()
        assert without_events(report) == SUCCESS
        assert report.started_at == 0.0  # the virtual clock starts at 0
        assert report.summary() == (
            "connected to [2001:db8::2]:443 in 276 ms; AAAA answered in 3 ms;"
            " A answered in 4 ms; [2001:db8::1]:443 cancelled after 273 ms;"
            " 192.0.2.1:443 refused after 3 ms; [2001:db8::2]:443 connected after 20 ms"
        )

    vrun(main)


def test_json_round_trip_with_exact_events(vrun: Runner[Any]) -> None:
    async def main() -> None:
        sock, report = await success_after_failure_and_delay()
        sock.close()
        exported = report.to_json()
        loaded: Any = json.loads(json.dumps(exported))
        assert loaded == exported
        assert (loaded["qlog_version"], loaded["qlog_format"]) == ("0.3", "JSON")
        [trace] = loaded["traces"]
        assert trace["description"] == report.summary()
        assert trace["common_fields"] == {"time_format": "relative"}
        events = [(e["time"], e["name"], e["data"]) for e in trace["events"]]
        assert events == [
            (time, f"happy_eyeballs:{name}", data) for time, name, data in SUCCESS_EVENTS
        ]
        fields = trace["report"]
        assert fields["duration_ms"] == 276.0
        assert fields["delay_ms"] == 250.0
        assert fields["lookups"][1] == {
            "family": "A",
            "host": "example.org",
            "source": "Resolver",
            "start_ms": 0.0,
            "duration_ms": 4.0,
            "outcome": "answered",
            "addresses": [A4],
            "failure": None,
            "error": None,
        }
        assert fields["attempts"][1] == {
            "index": 1,
            "address": "192.0.2.1:443",
            "start_ms": 253.0,
            "duration_ms": 3.0,
            "stage": "connect",
            "outcome": "failed",
            "failure": "refused",
            "errno": errno.ECONNREFUSED,
            "error": refused(A4),
            "delay_after_ms": 250.0,
            "delay_reason": "configured",
            "synthesized_from": None,
        }
        assert [a["outcome"] for a in fields["attempts"]] == ["cancelled", "failed", "connected"]

    vrun(main)


# -- every attempt failed ------------------------------------------------------------


def test_every_attempt_failed_the_error_carries_the_report(vrun: Runner[Any]) -> None:
    """AAAA times out at 50 ms; A4 refused after 3 ms; B4 out of time after 2 s."""

    async def main() -> None:
        net = network(A4=(0.003, "refuse"), B4=(0, "hang"))
        resolver = Resolver(
            {V6: (0.05, lambda: TimeoutError("AAAA query timed out")), V4: (0.004, [A4, B4])}
        )
        with recording() as rec, pytest.raises(OSError, match="Multiple exceptions") as info:
            await connect(
                "example.org",
                443,
                resolver=resolver,
                socket_factory=net.socket_factory,
                attempt_timeout=2.0,
            )
        [report] = rec.reports
        assert connection_report(info.value) is report
        assert happydial.failed_addr_infos(info.value) == [ai(A4), ai(B4)]  # still there
        assert report.summary() == (
            "failed after 2.05 s; AAAA timed out after 50 ms; A answered in 4 ms;"
            " 192.0.2.1:443 refused after 3 ms; 192.0.2.2:443 timed out after 2 s"
        )
        assert (report.outcome, report.duration, report.peer, report.winner) == (
            "failed",
            2.053,
            None,
            None,
        )
        assert (report.error_type, report.errno) == ("OSError", None)
        assert report.error == str(info.value)
        assert report.attempt_timeout == 2.0
        assert report.lookups == (
            LookupReport(
                "AAAA",
                "example.org",
                "Resolver",
                0.0,
                0.05,
                "failed",
                failure="timed out",
                error="AAAA query timed out",
            ),
            LookupReport("A", "example.org", "Resolver", 0.0, 0.004, "answered", (A4, B4)),
        )
        assert report.attempts == (
            AttemptReport(
                0,
                "192.0.2.1:443",
                0.05,
                0.003,
                "connect",
                "failed",
                failure="refused",
                errno=errno.ECONNREFUSED,
                error=refused(A4),
                delay_after=0.25,
            ),
            AttemptReport(
                1,
                "192.0.2.2:443",
                0.053,
                2.0,
                "connect",
                "failed",
                failure="timed out",
                error="connect timed out after 2.0 s",
                delay_after=0.25,
            ),
        )
        assert report.events[-1] == ReportEvent(
            2.053, "connection_failed", (("outcome", "failed"), ("error", report.error))
        )

    vrun(main)


def test_no_address_at_all_the_lookups_explain(vrun: Runner[Any]) -> None:
    async def main() -> None:
        resolver = Resolver({V6: (0.01, lambda: NX), V4: (0.02, lambda: NX)})
        with recording() as rec, pytest.raises(socket.gaierror) as info:
            await connect("nowhere.test", 443, resolver=resolver)
        [report] = rec.reports
        assert connection_report(info.value) is report
        assert (report.outcome, report.error_type, report.errno) == (
            "failed",
            "gaierror",
            socket.EAI_NONAME,
        )
        assert report.attempts == ()
        assert report.summary() == (
            "failed after 20 ms;"
            " AAAA failed after 10 ms ([Errno -2] Name or service not known);"
            " A failed after 20 ms ([Errno -2] Name or service not known)"
        )

    vrun(main)


def test_a_lookup_error_for_one_family(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = network(A4=(0.01, "connect"))
        resolver = Resolver({V6: (0.01, lambda: NX), V4: (0.02, [A4])})
        with recording() as rec:
            sock = await connect(
                "example.org", 443, resolver=resolver, socket_factory=net.socket_factory
            )
        sock.close()
        [report] = rec.reports
        assert report.lookups == (
            LookupReport(
                "AAAA",
                "example.org",
                "Resolver",
                0.0,
                0.01,
                "failed",
                failure="failed",
                error="[Errno -2] Name or service not known",
            ),
            LookupReport("A", "example.org", "Resolver", 0.0, 0.02, "answered", (A4,)),
        )
        assert report.summary() == (
            "connected to 192.0.2.1:443 in 30 ms;"
            " AAAA failed after 10 ms ([Errno -2] Name or service not known);"
            " A answered in 20 ms; 192.0.2.1:443 connected after 10 ms"
        )

    vrun(main)


# -- cancelled ---------------------------------------------------------------------


def test_cancelled_mid_race(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = network(A6=(0, "hang"))
        resolver = Resolver({V6: (0.003, [A6]), V4: (5.0, [A4])})
        with recording() as rec:
            task = loop.create_task(
                connect("example.org", 443, resolver=resolver, socket_factory=net.socket_factory)
            )
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError) as info:
                await task
        assert net.open_sockets == []
        assert not hasattr(info.value, "happydial_report")  # propagated untouched
        assert connection_report(info.value) is None
        [report] = rec.reports
        assert (report.outcome, report.duration, report.error, report.errno) == (
            "cancelled",
            0.1,
            None,
            None,
        )
        assert report.lookups[1] == LookupReport(
            "A", "example.org", "Resolver", 0.0, None, "abandoned"
        )
        assert report.attempts == (
            AttemptReport(
                0, "[2001:db8::1]:443", 0.003, 0.097, "connect", "abandoned", delay_after=0.25
            ),
        )
        assert report.summary() == (
            "cancelled after 100 ms; AAAA answered in 3 ms; A unanswered;"
            " [2001:db8::1]:443 abandoned after 97 ms"
        )
        assert report.events[-2:] == (
            ReportEvent(
                0.1,
                "connection_attempt_cancelled",
                (("attempt", 0), ("address", "[2001:db8::1]:443"), ("reason", "abandoned")),
            ),
            ReportEvent(0.1, "connection_cancelled", (("outcome", "cancelled"),)),
        )

    vrun(main)


# -- stages: socket and bind --------------------------------------------------------


def test_a_bind_failure_is_stage_bind(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = network()
        unavailable = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        net.bind_errors["192.0.2.99"] = unavailable
        with recording() as rec, pytest.raises(OSError) as info:
            await start_connection(
                [ai(A6), ai(A4)],
                happy_eyeballs_delay=0.25,
                local_addr_infos=[ai("192.0.2.99", 0)],
                socket_factory=net.socket_factory,
            )
        [report] = rec.reports
        assert connection_report(info.value) is report
        assert report.addresses == ("[2001:db8::1]:443", "192.0.2.1:443")
        assert [(a.stage, a.start, a.duration, a.failure, a.errno) for a in report.attempts] == [
            ("bind", 0.0, 0.0, "family not supported", errno.EAFNOSUPPORT),
            ("bind", 0.0, 0.0, "address not available", errno.EADDRNOTAVAIL),
        ]
        assert report.summary() == (
            "failed after 0 ms; [2001:db8::1]:443 bind failed (family not supported);"
            " 192.0.2.1:443 bind failed (address not available)"
        )

    vrun(main)


def test_a_socket_failure_is_stage_socket(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = network(A4=(0.01, "connect"))
        net.factory_errors[A6] = OSError(errno.EMFILE, "Too many open files")
        with recording() as rec:
            sock = await start_connection(
                [ai(A6), ai(A4)], happy_eyeballs_delay=0.25, socket_factory=net.socket_factory
            )
        sock.close()
        [report] = rec.reports
        assert report.attempts[0] == AttemptReport(
            0,
            "[2001:db8::1]:443",
            0.0,
            0.0,
            "socket",
            "failed",
            failure="failed",
            errno=errno.EMFILE,
            error="[Errno 24] Too many open files",
            delay_after=0.25,
        )
        assert report.summary() == (
            "connected to 192.0.2.1:443 in 10 ms;"
            " [2001:db8::1]:443 socket failed ([Errno 24] Too many open files);"
            " 192.0.2.1:443 connected after 10 ms"
        )

    vrun(main)


def test_an_error_with_no_short_word_is_shown_whole(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = network(A4=(0.001, OSError(errno.EIO, "Input/output error")))
        with recording() as rec, pytest.raises(OSError, match="Input/output error"):
            await start_connection([ai(A4)], socket_factory=net.socket_factory)
        assert rec.reports[0].summary() == (
            "failed after 1 ms; 192.0.2.1:443 failed after 1 ms ([Errno 5] Input/output error)"
        )

    vrun(main)


# -- history, NAT64, delay policies, and events newer than this code -----------------


def test_history_reordering_and_its_delay(vrun: Runner[Any]) -> None:
    async def main() -> None:
        history = happydial.AddressHistory()
        history.record_success(ai(A4)[4], 0.02)
        adaptive = history.delay_for(0.02)
        net = network(A4=(0, "hang"), A6=(0.01, "connect"))
        with recording() as rec:
            sock = await start_connection(
                [ai(A6), ai(A4)],
                happy_eyeballs_delay=0.25,
                history=history,
                socket_factory=net.socket_factory,
            )
        sock.close()
        [report] = rec.reports
        assert len(report.reordered) == 1
        assert "192.0.2.1" in report.reordered[0]
        assert [(a.address, a.start, a.delay_after, a.delay_reason) for a in report.attempts] == [
            ("192.0.2.1:443", 0.0, adaptive, "history"),
            ("[2001:db8::1]:443", adaptive, 0.25, "configured"),
        ]
        ms = round(adaptive * 1000)
        assert report.summary() == (
            f"connected to [2001:db8::1]:443 in {ms + 10} ms;"
            f" 192.0.2.1:443 cancelled after {ms + 10} ms"
            f" (next attempt after {ms} ms: history);"
            " [2001:db8::1]:443 connected after 10 ms"
        )
        names = [event.name for event in report.events]
        assert names[:4] == [
            "connection_started",
            "addresses_reordered",
            "connection_attempt_started",
            "attempt_delay_chosen",
        ]
        reorder = dict(report.events[1].data)
        assert reorder["before"] == ("[2001:db8::1]:443", "192.0.2.1:443")
        assert reorder["after"] == ("192.0.2.1:443", "[2001:db8::1]:443")

    vrun(main)


def test_nat64_synthesis(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4_SYN, delay=0.02)
        with recording() as rec:
            sock = await connect(
                NAT64_A4,
                80,
                resolver=dns64(),
                socket_factory=net.socket_factory,
                sources=ipv6_only,
                nat64=discovery(),
            )
        sock.close()
        [report] = rec.reports
        made = f"[{A4_SYN}]:80"
        assert report.synthesized == (f"{made} from 192.0.2.1:80 (NAT64 prefix {PREFIX})",)
        assert report.attempts == (
            AttemptReport(
                0,
                made,
                0.01,
                0.02,
                "connect",
                "connected",
                delay_after=0.25,
                synthesized_from="192.0.2.1:80",
            ),
        )
        assert report.peer == made
        assert report.lookups == ()  # a literal: discovery's query is not the call's lookup

    vrun(main)


class _Capped(NamedTuple):
    """An event type newer than the report code (a cap on attempts, say)."""

    attempt: int
    time: float


class _PolicyDelay(happydial.DelayAdjusted):
    """DelayAdjusted as it will be with its reason field (here a class attribute)."""

    reason = "lan"


def test_future_arguments_reasons_and_events(vrun: Runner[Any]) -> None:
    """max_in_flight, timeout, a policy's reason, an unknown event: a stand-in call."""

    async def connect(
        host: str,
        port: int,
        *,
        happy_eyeballs_delay: object = 0.25,
        timeout: float | None = None,  # noqa: ASYNC109 - the coming connect's deadline
        max_in_flight: int | None = None,
        trace: Callable[[object], object] | None = None,
        fail_at: float = 0.0,
    ) -> None:
        if RECORDING.get() is not None:
            return await record_call(connect, locals())
        assert trace is not None
        loop = asyncio.get_running_loop()
        trace(happydial.AttemptStarted(0, ai(A4), loop.time()))
        trace(_PolicyDelay(0, ai(A4), 0.1, None, loop.time()))
        trace(_Capped(0, loop.time()))
        # An answer whose start was not seen (no such path today): a zero-length lookup.
        trace(happydial.ResolutionFinished(host, socket.AF_INET, (ai(A4),), loop.time()))
        await asyncio.sleep(fail_at)
        if timeout is not None and fail_at >= timeout:
            raise deadline_error(timeout, [])  # what a connect whose deadline passed raises
        raise TimeoutError("an attempt's own timeout, not the deadline")

    async def main() -> None:
        with recording() as rec:
            for fail_at in (2.0, 1.0):
                with pytest.raises(TimeoutError):
                    await connect(
                        "h.test",
                        80,
                        happy_eyeballs_delay="lan policy",
                        timeout=2.0,
                        max_in_flight=4,
                        fail_at=fail_at,
                    )
            with pytest.raises(TimeoutError):
                await connect("h.test", 80, fail_at=1.0)
        deadline, early, no_timeout = rec.reports
        assert (deadline.outcome, early.outcome, no_timeout.outcome) == (
            "timeout",
            "failed",
            "failed",
        )
        assert (deadline.timeout, deadline.max_in_flight, deadline.delay) == (2.0, 4, "lan policy")
        assert (no_timeout.timeout, no_timeout.max_in_flight, no_timeout.delay) == (
            None,
            None,
            0.25,
        )
        assert deadline.summary() == (
            "timed out after 2 s; A answered in 0 ms;"
            " 192.0.2.1:443 abandoned (next attempt after 100 ms: lan)"
        )
        assert [e.name for e in deadline.events] == [
            "connection_started",
            "connection_attempt_started",
            "attempt_delay_chosen",
            "capped",
            "dns_answer",
            "connection_timed_out",
        ]
        assert deadline.lookups == (
            LookupReport("A", "h.test", "getaddrinfo_resolver", 0.0, 0.0, "answered", (A4,)),
        )
        assert deadline.to_json()["traces"][0]["report"]["delay_ms"] == "lan policy"  # type: ignore[index]

    vrun(main)


def test_a_policy_delay_with_no_event_is_named_by_the_policy(vrun: Runner[Any]) -> None:
    async def start_connection(
        addr_infos: Any, *, happy_eyeballs_delay: object = None, trace: Any = None
    ) -> None:
        if RECORDING.get() is not None:
            return await record_call(start_connection, locals())
        trace(happydial.AttemptStarted(0, ai(A4), asyncio.get_running_loop().time()))
        raise OSError(errno.ECONNREFUSED, "refused")

    async def main() -> None:
        with recording() as rec:
            for delay in ("exponential", None):
                with pytest.raises(OSError):
                    await start_connection(iter([ai(A4)]), happy_eyeballs_delay=delay)
        policy, none = rec.reports
        assert (policy.attempts[0].delay_after, policy.attempts[0].delay_reason) == (
            None,
            "exponential",
        )
        assert (none.attempts[0].delay_after, none.attempts[0].delay_reason) == (
            None,
            "configured",
        )
        assert policy.addresses == ()  # an iterator is never read by the report

    vrun(main)


# -- who gets a report ----------------------------------------------------------------


def test_nested_calls_give_one_report(vrun: Runner[Any]) -> None:
    """A resolver that connects (DNS over TCP, say) is part of the outer call."""

    async def main() -> None:
        net = network(A4=(0.01, "connect"), B4=(0.005, "connect"))

        async def resolver(host: str, port: int, family: int) -> list[AddrInfoType]:
            if family == V6:
                raise NX
            dns = await start_connection([ai(B4, 53)], socket_factory=net.socket_factory)
            dns.close()
            return [ai(A4, port)]

        with recording() as rec:
            sock = await connect(
                "example.org", 443, resolver=resolver, socket_factory=net.socket_factory
            )
        sock.close()
        [report] = rec.reports
        assert (report.call, report.peer, report.duration) == ("connect", "192.0.2.1:443", 0.015)

    vrun(main)


def test_concurrent_calls_each_get_their_own_report(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = network(A4=(0.02, "connect"), B4=(0.01, "refuse"))
        with recording() as rec:
            results = await asyncio.gather(
                start_connection([ai(A4)], socket_factory=net.socket_factory),
                start_connection([ai(B4)], socket_factory=net.socket_factory),
                return_exceptions=True,
            )
        sock, error = results
        assert isinstance(sock, FakeSocket)
        sock.close()
        assert isinstance(error, ConnectionRefusedError)
        first, second = rec.reports  # in the order they ended
        assert connection_report(error) is first
        assert (first.outcome, first.addresses, [a.address for a in first.attempts]) == (
            "failed",
            ("192.0.2.2:443",),
            ["192.0.2.2:443"],
        )
        assert (second.outcome, second.peer, [a.address for a in second.attempts]) == (
            "connected",
            "192.0.2.1:443",
            ["192.0.2.1:443"],
        )

    vrun(main)


def test_no_recording_no_report(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = network(A4=(0.01, "refuse"))
        with pytest.raises(OSError) as info:
            await start_connection([ai(A4)], socket_factory=net.socket_factory)
        assert connection_report(info.value) is None
        assert not hasattr(info.value, "happydial_report")
        with recording() as rec:
            pass
        with pytest.raises(OSError):  # after the block: not recorded
            await start_connection([ai(A4)], socket_factory=net.socket_factory)
        assert rec.reports == []
        assert repr(rec) == "<Recording of 0 reports>"

    vrun(main)


def test_recordings_nest_the_innermost_gets_the_report(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = network(A4=(0.01, "connect"))
        with recording() as outer:
            with recording() as inner:
                (await start_connection([ai(A4)], socket_factory=net.socket_factory)).close()
            (await start_connection([ai(A4)], socket_factory=net.socket_factory)).close()
        assert (len(outer.reports), len(inner.reports)) == (1, 1)

    vrun(main)


def test_the_callers_trace_gets_every_event(vrun: Runner[Any]) -> None:
    async def traced(into: list[happydial.TraceEvent]) -> None:
        net = network(A6=(0, "hang"), A4=(0.003, "refuse"), B6=(0.02, "connect"))
        resolver = Resolver({V6: (0.003, [A6, B6]), V4: (0.004, [A4])})
        sock = await connect(
            "example.org",
            443,
            resolver=resolver,
            socket_factory=net.socket_factory,
            trace=into.append,
        )
        sock.close()

    async def main() -> None:
        plain: list[happydial.TraceEvent] = []
        await traced(plain)
        recorded: list[happydial.TraceEvent] = []
        with recording() as rec:
            await traced(recorded)
        start = plain[0].time
        assert [(type(e), round(e.time - start, 9)) for e in plain] == [
            (type(e), round(e.time - rec.reports[0].started_at, 9)) for e in recorded
        ]
        assert len(plain) == 10
        assert len(rec.reports[0].events) == len(plain) + 2  # + started, ended

    vrun(main)


def test_a_bad_argument_is_refused_in_the_calls_own_words(vrun: Runner[Any]) -> None:
    async def main() -> None:
        with recording() as rec:
            with pytest.raises(TypeError, match="trace must be callable") as info:
                await start_connection([ai(A4)], trace="print")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="port must be in 0-65535"):
                await connect("example.org", 70000)
            with pytest.raises(TypeError, match="host must be a str"):
                await connect(host=b"example.org", port=443)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="is not an IP address"):
                await start_connection(addr_infos=[ai("not-an-ip.test")])
            with pytest.raises(ValueError, match="must be a 5-tuple"):
                await start_connection([("x",)])  # type: ignore[list-item]
        bad_trace, bad_port, bad_host, bad_address, malformed = rec.reports
        assert malformed.addresses == ()
        assert connection_report(info.value) is bad_trace
        assert bad_trace.summary() == (
            "failed after 0 ms: trace must be callable or None, got 'print'"
        )
        assert (bad_port.host, bad_port.port) == ("example.org", 70000)  # as given
        assert (bad_host.host, bad_host.port) == (None, 443)
        assert bad_address.addresses == ("not-an-ip.test:443",)
        assert (bad_port.outcome, bad_port.error_type) == ("failed", "ValueError")

    vrun(main)


def _races_alive() -> int:
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "ConnectRace")


@pytest.mark.parametrize("outcome", ["refuse", "connect", "hang"])
def test_recording_makes_no_reference_cycle(vrun: Runner[Any], outcome: str) -> None:
    """A recorded call, failed, won or cancelled, leaves nothing for the cyclic GC."""

    async def call(net: FakeNetwork) -> None:
        task = asyncio.create_task(start_connection([ai(A4)], socket_factory=net.socket_factory))
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            (await task).close()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            del task  # the frame would hold the task, whose error holds the frame

    async def main() -> None:
        net = network(A4=(0.003, outcome))
        gc.collect()
        gc.disable()
        try:
            before = _races_alive()
            with recording() as rec:
                for _ in range(20):
                    await call(net)
            await asyncio.sleep(0)
            alive = _races_alive() - before
        finally:
            gc.enable()
        assert alive == 0
        assert len(rec.reports) == 20
        assert json.dumps([r.to_json() for r in rec.reports])  # plain values only
        assert net.open_sockets == []

    vrun(main)


def test_connection_report_checks_its_argument() -> None:
    with pytest.raises(TypeError, match="error must be an exception, got 'x'"):
        connection_report("x")  # type: ignore[arg-type]
    looped = OSError("a")
    looped.__cause__ = OSError("b")
    looped.__cause__.__cause__ = looped
    assert connection_report(looped) is None


def test_human_durations() -> None:
    from happydial._report import _human

    assert [_human(s) for s in (0, 0.0004, 0.003, 0.0125, 0.2516, 1, 2.25, 10.0)] == [
        "0 ms",
        "0.4 ms",
        "3 ms",
        "12 ms",
        "252 ms",
        "1 s",
        "2.25 s",
        "10 s",
    ]


@pytest.mark.parametrize("function", [happydial.start_connection, happydial.connect])
def test_the_entry_points_are_plain_coroutine_functions(function: Callable[..., Any]) -> None:
    # aiohttp autospecs start_connection; Sphinx and help() read the docstring. The
    # recording check is in the body, not a wrapper: no extra coroutine per call.
    assert inspect.iscoroutinefunction(function)
    assert not hasattr(function, "__wrapped__")
    assert function.__code__.co_name == function.__name__
    assert function.__module__ in ("happydial._racer", "happydial._connect")
    assert "RECORDING" in function.__code__.co_names


@pytest.mark.parametrize("path", ["writer", "task"])
def test_a_real_deadline_and_a_dropped_attempt(vrun: Runner[Any], path: Path) -> None:
    async def main() -> ConnectionReport:
        net = FakeNetwork(asyncio.get_running_loop(), path=path)
        net.script(A4, outcome="hang")
        net.script(B4, outcome="hang")
        with recording() as rec, pytest.raises(TimeoutError) as caught:
            await happydial.start_connection(
                [ai(A4), ai(B4)],
                socket_factory=net.socket_factory,
                happy_eyeballs_delay=0.25,
                max_in_flight=1,
                timeout=0.4,
            )
        (report,) = rec.reports
        assert connection_report(caught.value) is report
        return report

    report = vrun(main)
    assert (report.outcome, report.timeout, report.max_in_flight) == ("timeout", 0.4, 1)
    assert report.duration == pytest.approx(0.4)
    first, second = report.attempts
    # The first was dropped for the second (max_in_flight=1); the second met the deadline.
    assert (first.outcome, first.start, first.duration) == ("failed", 0.0, pytest.approx(0.25))
    assert "max_in_flight" in (first.error or "")
    assert (second.outcome, second.start) == ("failed", pytest.approx(0.25))
    assert "deadline passed" in (second.error or "")
