"""connect() on an IPv6-only host: IPv4 reached through NAT64 (RFC 8305 section 7).

The host's sources are injected: an IPv6 source for every IPv6 destination and none
for IPv4 (no IPv4 address or route), as on a mobile network with NAT64/DNS64. The
NAT64 prefix is the network-specific 64:ff9b:1::/96 (RFC 8215), which may carry the
documentation addresses the tests use (the Well-Known Prefix must not).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import pytest

import happydial
from happydial import AddrInfoType, Nat64Discovery, connect, open_connection
from happydial._cli import Timeline
from happydial.testing import FakeNetwork

from .conftest import Runner

V6, V4 = socket.AF_INET6, socket.AF_INET
PREFIX = "64:ff9b:1::/96"
A4, B4 = "192.0.2.1", "192.0.2.2"
A4_SYN, B4_SYN = "64:ff9b:1::c000:201", "64:ff9b:1::c000:202"
A6 = "2001:db8::a"
WKA_ANSWER = "64:ff9b:1::c000:aa"  # 192.0.0.170 in the prefix: ipv4only.arpa's AAAA


def ai(host: str, port: int = 80) -> AddrInfoType:
    if ":" in host:
        return (V6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
    return (V4, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


def ipv6_only(addr_info: AddrInfoType) -> str | None:
    """The sources of an IPv6-only host: none for any IPv4 destination."""
    return "2001:db8:c::2" if addr_info[0] == V6 else None


class Dns:
    """A resolver with scripted answers and delays; records every question."""

    def __init__(self, answers: dict[tuple[str, int], tuple[float, list[str] | BaseException]]):
        self.answers = answers
        self.asked: list[tuple[str, int, float]] = []

    async def __call__(self, host: str, port: int, family: int) -> list[AddrInfoType]:
        loop = asyncio.get_running_loop()
        self.asked.append((host, family, loop.time()))
        delay, answer = self.answers.get(
            (host, family), (0.0, socket.gaierror(socket.EAI_NODATA, "no data"))
        )
        await asyncio.sleep(delay)
        if isinstance(answer, BaseException):
            raise answer
        return [ai(h, port) for h in answer]


def dns64(**names: Any) -> Dns:
    """ipv4only.arpa answered after 10 ms, plus *names* keyed by (host, family)."""
    answers: dict[tuple[str, int], Any] = {("ipv4only.arpa", V6): (0.01, [WKA_ANSWER])}
    for key, value in names.items():
        name, family = key.rsplit("_", 1)  # h_test_6: h.test's AAAA
        answers[name.replace("_", "."), V6 if family == "6" else V4] = value
    return Dns(answers)


def discovery() -> Nat64Discovery:
    return Nat64Discovery(clock=asyncio.get_running_loop().time, network_key=None)


async def _call(
    host: str, resolver: Any, net: FakeNetwork, **kwargs: Any
) -> tuple[list[happydial.TraceEvent], BaseException | None]:
    """The trace of one connect (times from the call's start) and its error, if any."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    events: list[happydial.TraceEvent] = []
    kwargs.setdefault("sources", ipv6_only)
    try:
        sock = await connect(
            host,
            80,
            resolver=resolver,
            socket_factory=net.socket_factory,
            trace=events.append,
            **kwargs,
        )
    except (OSError, ExceptionGroup) as exc:
        error: BaseException | None = exc
    else:
        sock.close()
        error = None
    return [e._replace(time=round(e.time - start, 6)) for e in events], error


def _started(events: list[happydial.TraceEvent]) -> list[tuple[str, float]]:
    return [(e.addr_info[4][0], e.time) for e in events if isinstance(e, happydial.AttemptStarted)]


def _winner(events: list[happydial.TraceEvent]) -> tuple[str, float]:
    [won] = [e for e in events if isinstance(e, happydial.AttemptSucceeded)]
    return won.addr_info[4][0], won.time


# -- IPv4 literals (section 7.1) -------------------------------------------------


def test_an_ipv4_literal_is_raced_through_nat64(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4_SYN, delay=0.02)
        dns, nat64 = dns64(), discovery()
        events, error = await _call(A4, dns, net, nat64=nat64)
        assert error is None
        assert dns.asked == [("ipv4only.arpa", V6, dns.asked[0][2])]
        assert events[0] == happydial.AddressSynthesized(ai(A4_SYN), ai(A4), PREFIX, 0.01)
        assert _started(events) == [(A4_SYN, 0.01)]
        assert _winner(events) == (A4_SYN, 0.03)
        # Later calls: the prefix is known; no query, one RTT.
        events, error = await _call(A4, dns, net, nat64=nat64)
        assert error is None
        assert len(dns.asked) == 1
        assert _winner(events) == (A4_SYN, 0.02)

    vrun(main)


def test_a_failed_synthesised_attempt_names_both_addresses(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4_SYN, outcome="refuse")
        _, error = await _call(A4, dns64(), net, nat64=discovery())
        assert isinstance(error, ConnectionRefusedError)
        assert error.__notes__ == [
            f"while connecting to [{A4_SYN}]:80",
            f"synthesised from {A4}:80 with the NAT64 prefix {PREFIX} (RFC 8305 section 7)",
        ]
        assert happydial.failed_addr_infos(error) == [ai(A4_SYN)]
        # With all_errors, each member of the group says it too.
        _, group = await _call(A4, dns64(), net, nat64=discovery(), all_errors=True)
        assert isinstance(group, ExceptionGroup)
        [member] = group.exceptions
        assert member.__notes__[-1].startswith(f"synthesised from {A4}:80")

    vrun(main)


@pytest.mark.parametrize(
    ("answer", "note"),
    [
        (
            (0.0, socket.gaierror(socket.EAI_NONAME, "no such name")),
            "no NAT64 prefix was found (ipv4only.arpa: [Errno -2] no such name)",
        ),
        ((0.0, ["2001:db8::1"]), "no NAT64 prefix was found (ipv4only.arpa has no DNS64 answer)"),
    ],
)
def test_with_no_prefix_the_literal_is_raced_and_the_error_says_why(
    vrun: Runner[Any], answer: Any, note: str
) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, outcome="unreachable", at_once=True)
        dns = Dns({("ipv4only.arpa", V6): answer})
        events, error = await _call(A4, dns, net, nat64=discovery())
        assert _started(events) == [(A4, 0.0)]
        assert isinstance(error, OSError)
        assert error.errno == errno.ENETUNREACH
        assert error.__notes__[-1] == f"{A4}:80: no IPv4 path from this host, and {note}"

    vrun(main)


def test_discovery_off_says_so(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, outcome="unreachable", at_once=True)
        dns = dns64()
        _, error = await _call(A4, dns, net, nat64=Nat64Discovery(discover=False))
        assert dns.asked == []
        assert isinstance(error, OSError)
        assert error.__notes__[-1].endswith("and NAT64 discovery is off")

    vrun(main)


def test_an_address_the_prefix_must_not_carry_is_raced_as_it_is(vrun: Runner[Any]) -> None:
    # RFC 6052 section 3.1: the Well-Known Prefix carries no documentation address.
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, outcome="unreachable", at_once=True)
        nat64 = discovery()
        nat64.configure("64:ff9b::/96")
        events, error = await _call(A4, dns64(), net, nat64=nat64)
        assert _started(events) == [(A4, 0.0)]
        assert isinstance(error, OSError)
        assert error.__notes__[-1] == (
            f"{A4}:80: no IPv4 path from this host, and it is documentation, TEST-NET-1"
            " (RFC 5737), which the NAT64 prefix 64:ff9b::/96 must not carry"
            " (RFC 6052 section 3.1)"
        )

    vrun(main)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sources": None},  # the hermetic dual-stack host: it has an IPv4 source
        {"nat64": False},
        {"family": V4},
    ],
)
def test_nothing_is_synthesised_where_ipv4_works_or_when_off(
    vrun: Runner[Any], kwargs: dict[str, Any]
) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4)
        dns = dns64()
        options = {"nat64": discovery(), **kwargs}  # sources=None: the hermetic host's
        events, error = await _call(A4, dns, net, **options)
        assert error is None
        assert dns.asked == []
        assert _winner(events) == (A4, 0.0)

    vrun(main)


def test_an_ipv6_literal_is_left_alone(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A6)
        dns = dns64()
        events, error = await _call(A6, dns, net, nat64=discovery())
        assert (error, dns.asked, _winner(events)) == (None, [], (A6, 0.0))

    vrun(main)


# -- host names (section 7.2) ------------------------------------------------------


def test_an_a_only_name_is_synthesised_as_soon_as_aaaa_fails(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(B4_SYN, delay=0.02)
        dns = dns64(h_test_4=(0.03, [A4, B4]))
        events, error = await _call("h.test", dns, net, nat64=discovery())
        assert error is None
        # AAAA fails at once; A answers at 30 ms; the discovery takes 10 ms more.
        synthesised = [e for e in events if isinstance(e, happydial.AddressSynthesized)]
        assert [(e.addr_info[4][0], e.origin[4][0], e.time) for e in synthesised] == [
            (A4_SYN, A4, 0.04),
            (B4_SYN, B4, 0.04),
        ]
        assert _started(events) == [(A4_SYN, 0.04), (B4_SYN, 0.29)]
        assert _winner(events) == (B4_SYN, 0.31)

    vrun(main)


def test_synthesised_addresses_wait_the_last_resort_delay_behind_native_ones(
    vrun: Runner[Any],
) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4_SYN)
        dns = dns64(h_test_6=(0.01, [A6]), h_test_4=(0.02, [A4]))
        events, error = await _call("h.test", dns, net, nat64=discovery())
        assert error is None
        # The native address first (it hangs); the synthesised one 2 s after the
        # native attempt started (the AAAA answer), though it was made at 30 ms.
        assert _started(events) == [(A6, 0.01), (A4_SYN, 2.01)]
        events, error = await _call("h.test", dns, net, nat64=discovery(), last_resort_delay=0.5)
        assert _started(events) == [(A6, 0.01), (A4_SYN, 0.51)]

    vrun(main)


@pytest.mark.parametrize(
    ("aaaa", "started"),
    [
        # A late AAAA answer restarts the delay: the native attempt gets its 2 s.
        ((1.0, [A6]), [(A6, 1.0), (A4_SYN, 3.0)]),
        # A late AAAA failure releases the synthesised address at once.
        ((1.0, socket.gaierror(socket.EAI_NODATA, "no AAAA")), [(A4_SYN, 1.0)]),
        # No AAAA answer within the delay: synthesised first, native when it comes.
        ((5.0, [A6]), [(A4_SYN, 2.02), (A6, 5.0)]),
    ],
)
def test_a_pending_aaaa_lookup_is_waited_for_at_most_the_delay(
    vrun: Runner[Any], aaaa: Any, started: list[tuple[str, float]]
) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script("*", outcome="refuse", delay=10.0)
        dns = dns64(h_test_6=aaaa, h_test_4=(0.01, [A4]))
        events, _ = await _call("h.test", dns, net, nat64=discovery(), attempt_timeout=20)
        assert _started(events) == started

    vrun(main)


def test_a_dns64_answer_is_native_and_its_local_copy_is_dropped(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4_SYN, outcome="refuse")
        dns = dns64(h_test_6=(0.01, [A4_SYN]), h_test_4=(0.01, [A4]))
        events, error = await _call("h.test", dns, net, nat64=discovery())
        # One attempt only: the DNS64 answer, tried at once; no local copy is made.
        assert _started(events) == [(A4_SYN, 0.01)]
        assert not [e for e in events if isinstance(e, happydial.AddressSynthesized)]
        assert events[-1].time == 0.01  # the race ends with its attempt, not 2 s later
        assert isinstance(error, ConnectionRefusedError)

    vrun(main)


def test_a_native_win_abandons_the_discovery_and_the_timer(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A6, delay=0.01)
        slow = Dns(
            {
                ("ipv4only.arpa", V6): (5.0, [WKA_ANSWER]),
                ("h.test", V6): (0.01, [A6]),
                ("h.test", V4): (0.0, [A4]),
            }
        )
        nat64 = discovery()
        events, error = await _call("h.test", slow, net, nat64=nat64)
        assert error is None
        assert _winner(events) == (A6, 0.02)
        assert nat64.state is None  # the discovery was cancelled with its last caller
        dns = dns64(h_test_6=(0.01, [A6]), h_test_4=(0.0, [A4]))
        events, error = await _call("h.test", dns, net, nat64=discovery())
        assert _winner(events) == (A6, 0.02)
        # The leak guard checks that the last-resort timer did not outlive the call.

    vrun(main)


def test_with_no_prefix_a_answers_are_raced_as_they_are(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, outcome="unreachable", at_once=True)
        net.script(A6, outcome="refuse", delay=0.5)
        dns = Dns({("h.test", V4): (0.0, [A4]), ("h.test", V6): (0.01, [A6])})
        events, error = await _call("h.test", dns, net, nat64=discovery())
        assert _started(events) == [(A6, 0.01), (A4, 0.26)]  # as with no NAT64 support
        assert isinstance(error, OSError)
        assert error.__notes__[-1] == (
            f"{A4}:80: no IPv4 path from this host, and no NAT64 prefix was found"
            " (ipv4only.arpa: [Errno -5] no data)"
        )

    vrun(main)


def test_reachable_a_answers_are_not_synthesised(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4)
        dns = dns64(h_test_4=(0.0, [A4]))

        def some_ipv4(addr_info: AddrInfoType) -> str | None:
            return "198.51.100.2" if addr_info[4][0] == A4 else ipv6_only(addr_info)

        events, error = await _call("h.test", dns, net, nat64=discovery(), sources=some_ipv4)
        assert (error, _winner(events)) == (None, (A4, 0.0))
        assert ("ipv4only.arpa", V6) not in [(h, f) for h, f, _ in dns.asked]

    vrun(main)


def test_a_resolver_bug_in_the_discovery_ends_the_race(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        dns = dns64(h_test_4=(0.0, [A4]))
        dns.answers["ipv4only.arpa", V6] = (0.0, RuntimeError("resolver bug"))
        with pytest.raises(RuntimeError, match="resolver bug"):
            await connect(
                "h.test",
                80,
                resolver=dns,
                socket_factory=net.socket_factory,
                sources=ipv6_only,
                nat64=discovery(),
            )
        with pytest.raises(RuntimeError, match="resolver bug"):
            await connect(
                A4,
                80,
                resolver=dns,
                socket_factory=net.socket_factory,
                sources=ipv6_only,
                nat64=discovery(),
            )

    vrun(main)


def test_a_discovery_cancelled_by_another_caller_finds_nothing(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, outcome="unreachable", at_once=True)
        dns = dns64(h_test_4=(0.0, [A4]))
        dns.answers["ipv4only.arpa", V6] = (0.0, asyncio.CancelledError())
        events, error = await _call("h.test", dns, net, nat64=discovery())
        assert _started(events) == [(A4, 0.0)]
        assert isinstance(error, OSError)

    vrun(main)


def test_a_trace_that_raises_on_synthesis_ends_the_call(vrun: Runner[Any]) -> None:
    class BoomError(Exception):
        pass

    def trace(event: happydial.TraceEvent) -> None:
        if isinstance(event, happydial.AddressSynthesized):
            raise BoomError

    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script("*")
        for host in (A4, "h.test"):
            with pytest.raises(BoomError):
                await connect(
                    host,
                    80,
                    resolver=dns64(h_test_4=(0.0, [A4])),
                    socket_factory=net.socket_factory,
                    sources=ipv6_only,
                    nat64=discovery(),
                    trace=trace,
                )
        assert net.open_sockets == []

    vrun(main)


def test_a_sources_bug_on_release_ends_the_race(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        calls: list[str] = []

        def sources(addr_info: AddrInfoType) -> str | None:
            calls.append(addr_info[4][0])
            if addr_info[4][0] == A4_SYN:
                raise LookupError("sources bug")
            return ipv6_only(addr_info)

        with pytest.raises(LookupError, match="sources bug"):
            await connect(
                "h.test",
                80,
                resolver=dns64(h_test_4=(0.0, [A4])),
                socket_factory=net.socket_factory,
                sources=sources,
                nat64=discovery(),
            )

    vrun(main)


def test_the_default_discovery_is_shared(vrun: Runner[Any]) -> None:
    async def main() -> None:
        default = happydial.default_nat64_discovery()
        assert default is happydial.default_nat64_discovery()
        default.configure(PREFIX)
        try:
            net = FakeNetwork(asyncio.get_running_loop())
            net.script(A4_SYN)
            events, error = await _call(A4, dns64(), net)
            assert (error, _winner(events)) == (None, (A4_SYN, 0.0))
        finally:
            default.configure(None)

    vrun(main)


def test_the_wrappers_pass_the_options_on(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop(), path="writer")
        net.script(A4_SYN, outcome="refuse", at_once=True)
        with pytest.raises(ConnectionRefusedError) as caught:
            await open_connection(
                A4,
                80,
                resolver=dns64(),
                socket_factory=net.socket_factory,
                sources=ipv6_only,
                nat64=discovery(),
                last_resort_delay=1.0,
            )
        assert caught.value.__notes__[-1].startswith(f"synthesised from {A4}:80")

    vrun(main)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"nat64": None}, TypeError, "nat64 must be a Nat64Discovery or a bool, got None"),
        ({"nat64": "64:ff9b::/96"}, TypeError, "nat64 must be a Nat64Discovery or a bool"),
        ({"last_resort_delay": None}, TypeError, "last_resort_delay must be a number"),
        ({"last_resort_delay": True}, TypeError, "last_resort_delay must be a number"),
        ({"last_resort_delay": -1}, ValueError, "last_resort_delay must be a finite"),
        ({"last_resort_delay": float("nan")}, ValueError, "last_resort_delay must be a finite"),
    ],
)
def test_bad_options_are_refused(
    vrun: Runner[Any], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    async def main() -> None:
        with pytest.raises(error, match=match):
            await connect("h.test", 80, **kwargs)

    vrun(main)


def test_the_cli_timeline_shows_a_synthesis() -> None:
    timeline = Timeline(start=1.0)
    event = happydial.AddressSynthesized(ai(A4_SYN), ai(A4), PREFIX, 1.5)
    text, record = timeline.describe(event)
    assert text == f"synthesised [{A4_SYN}]:80 from {A4}:80 (NAT64 prefix {PREFIX})"
    assert record == {
        "event": "AddressSynthesized",
        "ms": 500.0,
        "address": f"[{A4_SYN}]:80",
        "origin": f"{A4}:80",
        "prefix": PREFIX,
    }


def test_a_partly_reachable_a_answer_keeps_its_resolution_delay(vrun: Runner[Any]) -> None:
    # A4 has an IPv4 source, B4 none: A4 waits the resolution delay for AAAA as usual;
    # B4 (nothing to synthesise it with) joins it when the discovery finds nothing.
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script("*", outcome="refuse")

        def sources(addr_info: AddrInfoType) -> str | None:
            return "198.51.100.2" if addr_info[4][0] == A4 else ipv6_only(addr_info)

        dns = Dns(
            {
                ("h.test", V4): (0.0, [A4, B4]),
                ("h.test", V6): (1.0, [A6]),
                ("ipv4only.arpa", V6): (0.01, [A6]),
            }
        )
        events, error = await _call("h.test", dns, net, nat64=discovery(), sources=sources)
        assert _started(events) == [(A4, 0.05), (B4, 0.05), (A6, 1.0)]
        assert isinstance(error, OSError)

    vrun(main)


def test_errors_without_attempts_or_synthesis_are_left_alone(vrun: Runner[Any]) -> None:
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(A4, outcome="unreachable", at_once=True)
        _, error = await _call(A4, dns64(), net, nat64=False)
        assert isinstance(error, OSError)
        assert error.__notes__ == [f"while connecting to {A4}:80"]
        _, error = await _call("h.test", dns64(), net, nat64=discovery())
        assert isinstance(error, socket.gaierror)
        assert not hasattr(error, "__notes__")

    vrun(main)


def test_a_known_prefix_synthesises_within_the_answer(vrun: Runner[Any]) -> None:
    # With a configured prefix the synthesis needs no query: on an eager task factory
    # it is over before the rest of the A answer (A4, reachable) is fed; both are raced.
    async def main() -> None:
        net = FakeNetwork(asyncio.get_running_loop())
        net.script(B4_SYN, outcome="refuse")
        net.script(A4, delay=0.01)

        def sources(addr_info: AddrInfoType) -> str | None:
            return "198.51.100.2" if addr_info[4][0] == A4 else ipv6_only(addr_info)

        nat64 = discovery()
        nat64.configure(PREFIX)
        dns = Dns({("h.test", V4): (0.001, [A4, B4])})
        events, error = await _call("h.test", dns, net, nat64=nat64, sources=sources)
        assert error is None
        assert _started(events) == [(B4_SYN, 0.001), (A4, 0.001)]
        assert _winner(events) == (A4, 0.011)

    vrun(main)


def test_the_default_options_are_one_shared_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # Per call, nat64=True with the default delay allocates nothing: every call in
    # flight holds the same frozen value. (The suite gives each test its own default
    # discovery; here it is the process's own again.)
    from happydial import _ipv6only

    shared = _ipv6only._DEFAULT_USE
    monkeypatch.setattr(_ipv6only, "_DEFAULT", shared.discovery)
    use = _ipv6only.check_nat64_options(True, 2.0, socket.AF_UNSPEC)
    assert use is shared
    other = _ipv6only.check_nat64_options(True, 0.5, socket.AF_UNSPEC)
    assert other == _ipv6only.Nat64Use(shared.discovery, 0.5)
    mine = Nat64Discovery()
    assert _ipv6only.check_nat64_options(mine, 2.0, socket.AF_UNSPEC) == _ipv6only.Nat64Use(
        mine, 2.0
    )
