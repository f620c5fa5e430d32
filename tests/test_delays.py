"""Delay policies: the pure values and clamps, and their use in a race (virtual clock)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import socket
from typing import Any

import pytest

import happydial
from happydial import (
    MAX_DELAY,
    MIN_DELAY,
    RECOMMENDED_MIN_DELAY,
    AddressHistory,
    AddrInfoType,
    ConstantDelay,
    DelayPolicy,
    ExponentialDelay,
    LanDelay,
    connect,
    effective_delay,
    start_connection,
)
from happydial._delays import is_lan_address
from happydial.testing import FakeNetwork, Outcome, Path

from .conftest import Runner

V6, V4 = socket.AF_INET6, socket.AF_INET


def ai(host: str, port: int = 80, scope_id: int = 0) -> AddrInfoType:
    if ":" in host:
        return (V6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, scope_id))
    return (V4, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


PUBLIC4, PUBLIC6 = ai("203.0.113.7"), ai("2001:db8::7")
LAN4, LAN6 = ai("192.168.1.10"), ai("fe80::1", scope_id=2)


# ---------------------------------------------------------------------------
# Constants and the protocol
# ---------------------------------------------------------------------------


def test_rfc_8305_bounds() -> None:
    assert (MIN_DELAY, RECOMMENDED_MIN_DELAY, MAX_DELAY) == (0.01, 0.1, 2.0)


@pytest.mark.parametrize(
    ("policy", "name", "field"),
    [
        (ConstantDelay(), "constant", "seconds"),
        (ExponentialDelay(), "exponential", "base"),
        (LanDelay(), "lan", "lan"),
    ],
)
def test_each_policy_is_a_frozen_delay_policy(policy: Any, name: str, field: str) -> None:
    assert isinstance(policy, DelayPolicy)
    assert policy.name == name
    assert getattr(type(policy), "name", None) == name  # a class constant, not an argument
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(policy, field, 1.0)
    assert not hasattr(policy, "__dict__")  # slots


def test_defaults() -> None:
    assert ConstantDelay() == ConstantDelay(0.25)
    assert ExponentialDelay() == ExponentialDelay(base=0.05, factor=2.0, maximum=2.0)
    assert LanDelay() == LanDelay(lan=0.1, other=0.25)
    assert repr(LanDelay(other=ExponentialDelay())) == (
        "LanDelay(lan=0.1, other=ExponentialDelay(base=0.05, factor=2.0, maximum=2.0))"
    )


def test_numbers_are_normalised_to_float() -> None:
    assert type(ConstantDelay(1).seconds) is float
    policy = ExponentialDelay(base=1, factor=3, maximum=9)
    assert (type(policy.base), type(policy.factor), type(policy.maximum)) == (float,) * 3
    assert type(LanDelay(lan=0, other=1).other) is float


# ---------------------------------------------------------------------------
# Each policy x in_flight, exact values
# ---------------------------------------------------------------------------

IN_FLIGHT = (1, 2, 3, 4, 5, 6, 7, 8)
TABLE: list[tuple[DelayPolicy, AddrInfoType, tuple[float, ...]]] = [
    (ConstantDelay(), PUBLIC4, (0.25,) * 8),
    (ConstantDelay(0.3), LAN4, (0.3,) * 8),
    (ExponentialDelay(), PUBLIC4, (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0)),
    (ExponentialDelay(), LAN6, (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0)),
    (ExponentialDelay(0.1, 3.0, 1.0), PUBLIC6, (0.1, 0.3, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0)),
    (ExponentialDelay(0.2, 1.0), PUBLIC6, (0.2,) * 8),
    (LanDelay(), LAN4, (0.1,) * 8),
    (LanDelay(), LAN6, (0.1,) * 8),
    (LanDelay(), PUBLIC4, (0.25,) * 8),
    (LanDelay(lan=0.05, other=ExponentialDelay()), LAN6, (0.05,) * 8),
    (
        LanDelay(lan=0.05, other=ExponentialDelay()),
        PUBLIC6,
        (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0),
    ),
]


@pytest.mark.parametrize(("policy", "addr_info", "expected"), TABLE)
def test_policy_table(
    policy: DelayPolicy, addr_info: AddrInfoType, expected: tuple[float, ...]
) -> None:
    got = tuple(policy.delay(addr_info, n - 1, n) for n in IN_FLIGHT)
    assert got == pytest.approx(expected, abs=1e-12)
    # The attempt number does not matter to these policies, only what is in flight.
    assert policy.delay(addr_info, 7, 1) == pytest.approx(expected[0])


def test_exponential_far_past_its_maximum() -> None:
    policy = ExponentialDelay()
    assert policy.delay(PUBLIC4, 0, 0) == 0.05  # never asked with 0 in flight; the base
    assert policy.delay(PUBLIC4, 0, 2000) == 2.0  # 2.0 ** 1999 does not fit in a float
    assert ExponentialDelay(1.0, 1.0, 1.0).delay(PUBLIC4, 0, 10**6) == 1.0


# ---------------------------------------------------------------------------
# What is on the LAN
# ---------------------------------------------------------------------------

LAN_TABLE = [
    # IPv4 loopback, link-local, RFC 1918, with the edges of each range.
    ("127.0.0.1", True),
    ("127.255.255.255", True),
    ("128.0.0.0", False),
    ("169.254.0.1", True),
    ("169.254.255.255", True),
    ("169.253.255.255", False),
    ("169.255.0.0", False),
    ("10.0.0.0", True),
    ("10.255.255.255", True),
    ("9.255.255.255", False),
    ("11.0.0.0", False),
    ("172.16.0.0", True),
    ("172.31.255.255", True),
    ("172.15.255.255", False),
    ("172.32.0.0", False),
    ("192.168.0.0", True),
    ("192.168.255.255", True),
    ("192.167.255.255", False),
    ("192.169.0.0", False),
    # RFC 6598 shared address space: the carrier's network, not the LAN.
    ("100.64.0.1", False),
    ("100.127.255.255", False),
    ("203.0.113.7", False),
    ("8.8.8.8", False),
    # IPv6 loopback, link-local (with zones), ULA, and the edges.
    ("::1", True),
    ("::2", False),
    ("::", False),
    ("fe80::1", True),
    ("fe80::1%eth0", True),
    ("fe80::1%2", True),
    ("febf:ffff::1", True),
    ("fe7f:ffff::1", False),
    ("fec0::1", False),
    ("fc00::1", True),
    ("fd12:3456::1", True),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", True),
    ("fbff:ffff::1", False),
    ("fe00::1", False),
    ("2001:db8::1", False),
    ("2606:4700::1111", False),
    # IPv4-mapped IPv6: as the IPv4 address.
    ("::ffff:192.168.1.1", True),
    ("::ffff:10.1.2.3", True),
    ("::ffff:127.0.0.1", True),
    ("::ffff:169.254.1.1", True),
    ("::ffff:100.64.0.1", False),
    ("::ffff:8.8.8.8", False),
    # NAT64 (RFC 6052) of a private address is not mapped: it goes through the NAT64.
    ("64:ff9b::c0a8:101", False),
    # Not an IP literal.
    ("printer.local", False),
    ("", False),
]


@pytest.mark.parametrize(("host", "lan"), LAN_TABLE)
def test_lan_classification(host: str, lan: bool) -> None:
    assert is_lan_address(host) is lan
    expected = 0.1 if lan else 0.25
    family = V6 if ":" in host else V4
    sockaddr: tuple[Any, ...] = (host, 80, 0, 0) if family == V6 else (host, 80)
    entry: AddrInfoType = (family, socket.SOCK_STREAM, 6, "", sockaddr)
    assert LanDelay().delay(entry, 0, 1) == expected


def test_lan_table_is_broad() -> None:
    assert len(LAN_TABLE) >= 20
    assert sum(lan for _, lan in LAN_TABLE) >= 10
    assert any("%" in host for host, lan in LAN_TABLE if lan)


# ---------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------


class _NotAPolicy:
    name = "x"
    delay = 0.1  # not callable


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: ConstantDelay("0.1"), TypeError, "ConstantDelay: seconds .* got '0.1'"),  # type: ignore[arg-type]
        (lambda: ConstantDelay(True), TypeError, "ConstantDelay: seconds .* got True"),
        (lambda: ConstantDelay(None), TypeError, "ConstantDelay: seconds .* got None"),  # type: ignore[arg-type]
        (lambda: ConstantDelay(-0.1), ValueError, "ConstantDelay: seconds .* got -0.1"),
        (lambda: ConstantDelay(math.nan), ValueError, "ConstantDelay: seconds .* got nan"),
        (lambda: ConstantDelay(math.inf), ValueError, "ConstantDelay: seconds .* got inf"),
        (lambda: ExponentialDelay(base=0), ValueError, "base must be positive, got 0"),
        (lambda: ExponentialDelay(base=-1), ValueError, "base must be .* got -1"),
        (lambda: ExponentialDelay(base="1"), TypeError, "base must be .* got '1'"),  # type: ignore[arg-type]
        (lambda: ExponentialDelay(factor=0.5), ValueError, "factor must be >= 1, got 0.5"),
        (lambda: ExponentialDelay(factor=math.nan), ValueError, "factor must be .* got nan"),
        (lambda: ExponentialDelay(maximum=None), TypeError, "maximum must be .* got None"),  # type: ignore[arg-type]
        (
            lambda: ExponentialDelay(base=0.5, maximum=0.1),
            ValueError,
            r"maximum \(0.1\) must not be below base \(0.5\)",
        ),
        (lambda: LanDelay(lan=-1), ValueError, "LanDelay: lan .* got -1"),
        (lambda: LanDelay(lan="fast"), TypeError, "LanDelay: lan .* got 'fast'"),  # type: ignore[arg-type]
        (lambda: LanDelay(other=math.inf), ValueError, "LanDelay: other .* got inf"),
        (lambda: LanDelay(other=None), TypeError, "LanDelay: other must be .* got None"),  # type: ignore[arg-type]
        (lambda: LanDelay(other="0.25"), TypeError, "LanDelay: other must be .* got '0.25'"),  # type: ignore[arg-type]
        (lambda: LanDelay(other=_NotAPolicy()), TypeError, "LanDelay: other must be"),  # type: ignore[arg-type]
        (lambda: LanDelay(other=ConstantDelay), TypeError, "LanDelay: other must be"),  # type: ignore[arg-type]
    ],
)
def test_bad_constructor_arguments(make: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()


# ---------------------------------------------------------------------------
# effective_delay: checks and clamps every policy answer
# ---------------------------------------------------------------------------


class Fixed:
    """A custom policy answering *value* (whatever it is)."""

    name = "fixed"

    def __init__(self, value: object) -> None:
        self.value = value

    def delay(self, addr_info: AddrInfoType, attempt: int, in_flight: int) -> Any:  # noqa: ARG002 - the protocol's signature
        return self.value

    def __repr__(self) -> str:
        return f"Fixed({self.value!r})"


@pytest.mark.parametrize(
    ("answer", "clamped"),
    [
        (0, 0.01),
        (0.0, 0.01),
        (0.001, 0.01),
        (0.00999, 0.01),
        (0.01, 0.01),
        (0.05, 0.05),
        (1, 1.0),
        (2.0, 2.0),
        (2.0001, 2.0),
        (60, 2.0),
        (math.inf, 2.0),
    ],
)
def test_effective_delay_clamps_into_rfc_bounds(answer: float, clamped: float) -> None:
    got = effective_delay(Fixed(answer), PUBLIC4, 0, 1)
    assert got == clamped
    assert type(got) is float


@pytest.mark.parametrize("answer", [None, "0.1", True, False, math.nan, -0.001, -math.inf, [0.1]])
def test_effective_delay_refuses_nonsense(answer: object) -> None:
    with pytest.raises(ValueError, match=r"delay policy Fixed\(.*\) must return .* attempt 3"):
        effective_delay(Fixed(answer), PUBLIC4, 3, 1)


def test_effective_delay_of_the_builtin_policies() -> None:
    assert effective_delay(ConstantDelay(0), PUBLIC4, 0, 1) == 0.01
    assert effective_delay(ConstantDelay(9), PUBLIC4, 0, 1) == 2.0
    assert effective_delay(ExponentialDelay(0.001), PUBLIC4, 0, 1) == 0.01
    assert effective_delay(ExponentialDelay(maximum=30), PUBLIC4, 0, 9) == 2.0
    assert effective_delay(LanDelay(lan=0), LAN4, 0, 1) == 0.01


# ---------------------------------------------------------------------------
# Validation at the public functions
# ---------------------------------------------------------------------------


class _NoName:
    def delay(self, addr_info: AddrInfoType, attempt: int, in_flight: int) -> float:  # noqa: ARG002 - the protocol's signature
        return 0.1


@pytest.mark.parametrize("bad", ["0.25", [0.25], _NoName(), _NotAPolicy(), ConstantDelay])
def test_public_functions_refuse_a_bad_delay(run: Runner[Any], bad: object) -> None:
    async def main() -> None:
        message = r"happy_eyeballs_delay must be a number of seconds, None, or a DelayPolicy"
        with pytest.raises(TypeError, match=message):
            await start_connection([PUBLIC4], happy_eyeballs_delay=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=message):
            await connect("203.0.113.7", 80, happy_eyeballs_delay=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=message):
            await happydial.open_connection("203.0.113.7", 80, happy_eyeballs_delay=bad)

    run(main)


def test_numbers_keep_their_checks(run: Runner[Any]) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match=r"happy_eyeballs_delay must be a number .* True"):
            await start_connection([PUBLIC4], happy_eyeballs_delay=True)
        with pytest.raises(ValueError, match=r"happy_eyeballs_delay must be .* -1"):
            await connect("203.0.113.7", 80, happy_eyeballs_delay=-1)

    run(main)


# ---------------------------------------------------------------------------
# In a race, on the virtual clock
# ---------------------------------------------------------------------------

Script = dict[str, tuple[float, Outcome]]
HANG: tuple[float, Outcome] = (0.0, "hang")


async def race(
    hosts: Script,
    delay: object,
    path: Path = "writer",
    **kwargs: Any,
) -> tuple[object, FakeNetwork, list[happydial.TraceEvent]]:
    """start_connection over *hosts* in order; its result, the network and the trace."""
    loop = asyncio.get_running_loop()
    net = FakeNetwork(loop, path=path)
    for host, (after, outcome) in hosts.items():
        net.script(host, delay=after, outcome=outcome)
    events: list[happydial.TraceEvent] = []
    start = loop.time()
    try:
        result: object = await start_connection(
            [ai(h) for h in hosts],
            happy_eyeballs_delay=delay,  # type: ignore[arg-type]
            interleave=0,
            socket_factory=net.socket_factory,
            trace=events.append,
            **kwargs,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        result = exc
    if isinstance(result, socket.socket):
        result.close()
    assert net.open_sockets == []
    # Times from the call's start: the clock runs on from one race to the next.
    net.start_times = {host: at - start for host, at in net.start_times.items()}
    return result, net, events


def adjusted(events: list[happydial.TraceEvent]) -> list[tuple[int, float, str]]:
    return [
        (e.attempt, round(e.delay, 9), e.reason)
        for e in events
        if isinstance(e, happydial.DelayAdjusted)
    ]


EXP = "exponential"
PATHS = pytest.mark.parametrize("path", ["writer", "task"])


@PATHS
def test_lan_delay_after_a_black_holed_lan_address(vrun: Runner[Any], path: Path) -> None:
    async def main() -> None:
        hosts: Script = {"192.168.1.10": HANG, "192.168.1.11": (0.0005, "connect")}
        result, net, events = await race(hosts, LanDelay(), path)
        assert result.addr_info[4][0] == "192.168.1.11"  # type: ignore[attr-defined]
        assert net.start_times == {"192.168.1.10": 0.0, "192.168.1.11": 0.1}
        assert adjusted(events) == [(0, 0.1, "lan")]
        # Not on the LAN: RFC 8305's 250 ms.
        hosts = {"203.0.113.10": HANG, "203.0.113.11": (0.0005, "connect")}
        _, net, events = await race(hosts, LanDelay(), path)
        assert net.start_times == {"203.0.113.10": 0.0, "203.0.113.11": 0.25}
        assert adjusted(events) == [(0, 0.25, "lan")]

    vrun(main)


@PATHS
def test_exponential_delay_over_black_holes(vrun: Runner[Any], path: Path) -> None:
    async def main() -> None:
        hosts: Script = dict.fromkeys(("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"), HANG)
        result, net, events = await race(hosts, ExponentialDelay(), path, attempt_timeout=1.0)
        assert isinstance(result, OSError)
        assert list(net.start_times.values()) == pytest.approx([0.0, 0.05, 0.15, 0.35])
        assert adjusted(events) == [
            (0, 0.05, "exponential"),
            (1, 0.1, "exponential"),
            (2, 0.2, "exponential"),
        ]
        assert asyncio.get_running_loop().time() == pytest.approx(1.35)

    vrun(main)


def test_exponential_delay_counts_only_attempts_in_flight(vrun: Runner[Any]) -> None:
    async def main() -> None:
        # B is refused 10 ms after it started: C starts at once, with only A and C in
        # flight, so the next delay is 100 ms, not 200 ms.
        hosts: Script = {
            "192.0.2.1": HANG,
            "192.0.2.2": (0.01, "refuse"),
            "192.0.2.3": HANG,
            "192.0.2.4": (0.01, "connect"),
        }
        _, net, events = await race(hosts, ExponentialDelay())
        assert list(net.start_times.values()) == pytest.approx([0.0, 0.05, 0.06, 0.16])
        assert adjusted(events) == [
            (0, 0.05, "exponential"),
            (1, 0.1, "exponential"),
            (2, 0.1, "exponential"),
        ]

    vrun(main)


@pytest.mark.parametrize(
    ("policy", "starts"),
    [
        (ConstantDelay(0.3), [0.0, 0.3, 0.6]),
        (ConstantDelay(0), [0.0, 0.01, 0.02]),  # clamped: never all at once
        (ConstantDelay(5), [0.0, 2.0, 4.0]),  # clamped to 2 s
        (Fixed(0.123), [0.0, 0.123, 0.246]),  # any object of the protocol's shape
    ],
)
def test_constant_and_custom_policies(
    vrun: Runner[Any], policy: object, starts: list[float]
) -> None:
    async def main() -> None:
        hosts: Script = {"192.0.2.1": HANG, "192.0.2.2": HANG, "192.0.2.3": (0.001, "connect")}
        _, net, events = await race(hosts, policy)
        assert list(net.start_times.values()) == pytest.approx(starts)
        name = policy.name  # type: ignore[attr-defined]
        assert [(a, r) for a, _, r in adjusted(events)] == [(0, name), (1, name)]

    vrun(main)


def test_numbers_keep_todays_semantics(vrun: Runner[Any]) -> None:
    async def main() -> None:
        hosts: Script = {"192.0.2.1": HANG, "192.0.2.2": HANG, "192.0.2.3": (0.001, "connect")}
        _, net, events = await race(hosts, 0)  # all at once, not clamped to 10 ms
        assert list(net.start_times.values()) == [0.0, 0.0, 0.0]
        _, net, events = await race(hosts, 0.001)  # not clamped either
        assert list(net.start_times.values()) == pytest.approx([0.0, 0.001, 0.002])
        assert adjusted(events) == []
        hosts = {"192.0.2.1": (0.02, "refuse"), "192.0.2.2": (0.001, "connect")}
        _, net, _ = await race(hosts, None)  # one at a time
        assert list(net.start_times.values()) == pytest.approx([0.0, 0.02])

    vrun(main)


def test_history_overrides_a_policy(vrun: Runner[Any]) -> None:
    async def main() -> None:
        history = AddressHistory(clock=asyncio.get_running_loop().time)
        history.record_success(ai("192.0.2.1")[4], 0.2)  # adaptive: 2 x 200 ms
        history.record_success(ai("192.0.2.9")[4], 3.0)  # adaptive: 6 s, clamped to 2 s
        hosts: Script = {
            "192.0.2.1": HANG,
            "192.0.2.2": HANG,
            "192.0.2.9": HANG,
            "192.0.2.3": (0.001, "connect"),
        }
        _, net, events = await race(hosts, ConstantDelay(0.3), history=history)
        # The history also orders: known-good first, fastest first (RFC 8305 s. 4).
        assert list(net.start_times) == ["192.0.2.1", "192.0.2.9", "192.0.2.2", "192.0.2.3"]
        assert list(net.start_times.values()) == pytest.approx([0.0, 0.4, 2.4, 2.7])
        assert adjusted(events) == [(0, 0.4, "history"), (1, 2.0, "history"), (2, 0.3, "constant")]
        measured = [e.connect_time for e in events if isinstance(e, happydial.DelayAdjusted)]
        assert measured == [pytest.approx(0.2), pytest.approx(3.0), None]

    vrun(main)


def test_no_trace_no_event(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script("192.168.1.10", outcome="hang")
        net.script("192.168.1.11", delay=0.001)
        history = AddressHistory(clock=loop.time)
        history.record_success(ai("192.168.1.10")[4], 0.001)  # adaptive: 100 ms minimum
        for known in (None, history):
            start = loop.time()
            sock = await start_connection(
                [ai("192.168.1.10"), ai("192.168.1.11")],
                happy_eyeballs_delay=LanDelay(lan=0.5),
                socket_factory=net.socket_factory,
                interleave=0,
                history=known,
            )
            sock.close()
            assert net.start_times["192.168.1.11"] - start == pytest.approx(
                0.5 if known is None else 0.1
            )

    vrun(main)


class Raising:
    name = "raising"

    def delay(self, addr_info: AddrInfoType, attempt: int, in_flight: int) -> float:  # noqa: ARG002 - the protocol's signature
        raise RuntimeError("policy bug")


@pytest.mark.parametrize(
    ("policy", "error", "message"),
    [
        (Fixed(math.nan), ValueError, r"delay policy Fixed\(nan\) must return"),
        (Fixed(-1), ValueError, r"delay policy Fixed\(-1\) must return .* got -1 for attempt 0"),
        (Raising(), RuntimeError, "policy bug"),
    ],
)
@PATHS
def test_a_bad_policy_ends_the_race(
    vrun: Runner[Any], path: Path, policy: object, error: type[Exception], message: str
) -> None:
    async def main() -> None:
        hosts: Script = {"192.0.2.1": HANG, "192.0.2.2": (0.001, "connect")}
        result, net, _ = await race(hosts, policy, path)
        assert type(result) is error
        assert isinstance(result, Exception)
        with pytest.raises(error, match=message):
            raise result
        assert "192.0.2.2" not in net.start_times  # nothing started after it

    vrun(main)


# ---------------------------------------------------------------------------
# connect(): the same policies behind a resolver
# ---------------------------------------------------------------------------


class Resolver:
    """Answers each family after 10 ms with *hosts*."""

    def __init__(self, hosts: list[str]) -> None:
        self.hosts = hosts

    async def __call__(self, host: str, port: int, family: int) -> list[AddrInfoType]:  # noqa: ARG002 - the protocol's signature
        await asyncio.sleep(0.01)
        return [ai(h, port) for h in self.hosts if (":" in h) == (family == V6)]


@pytest.mark.parametrize(
    ("policy", "hosts", "starts"),
    [
        (LanDelay(), ["192.168.1.10", "192.168.1.11"], [0.01, 0.11]),
        (LanDelay(), ["203.0.113.10", "203.0.113.11"], [0.01, 0.26]),
        (ExponentialDelay(), ["192.0.2.1", "192.0.2.2", "192.0.2.3"], [0.01, 0.06, 0.16]),
        (ConstantDelay(0.05), ["192.0.2.1", "192.0.2.2", "192.0.2.3"], [0.01, 0.06, 0.11]),
    ],
)
@PATHS
def test_connect_with_a_policy(
    vrun: Runner[Any], path: Path, policy: DelayPolicy, hosts: list[str], starts: list[float]
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop, path=path)
        for host in hosts[:-1]:
            net.script(host, outcome="hang")
        net.script(hosts[-1], delay=0.001)
        events: list[happydial.TraceEvent] = []
        sock = await connect(
            "example.test",
            80,
            family=V4,
            happy_eyeballs_delay=policy,
            resolver=Resolver(hosts),
            socket_factory=net.socket_factory,
            trace=events.append,
        )
        assert sock.addr_info[4][0] == hosts[-1]  # type: ignore[attr-defined]
        sock.close()
        assert list(net.start_times) == hosts
        assert list(net.start_times.values()) == pytest.approx(starts)
        assert {r for _, _, r in adjusted(events)} == {policy.name}
        assert net.open_sockets == []

    vrun(main)


def test_connect_to_a_lan_literal(vrun: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script("fe80::1", delay=0.001)
        sock = await connect(
            "fe80::1%1", 80, happy_eyeballs_delay=LanDelay(), socket_factory=net.socket_factory
        )
        assert sock.addr_info[4] == ("fe80::1", 80, 0, 1)  # type: ignore[attr-defined]
        sock.close()

    vrun(main)


def test_the_wrappers_take_a_policy(run: Runner[Any]) -> None:
    # Real sockets on loopback: the policy goes through open_connection and
    # create_connection to connect(), as any other option.
    async def main() -> None:
        server = await asyncio.start_server(lambda _, writer: writer.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        events: list[happydial.TraceEvent] = []
        try:
            for policy in (LanDelay(), ExponentialDelay(), ConstantDelay(0.1)):
                _, writer = await happydial.open_connection(
                    "127.0.0.1", port, happy_eyeballs_delay=policy, trace=events.append
                )
                assert writer.get_extra_info("peername") == ("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
            transport, _ = await happydial.create_connection(
                asyncio.Protocol, "127.0.0.1", port, happy_eyeballs_delay=LanDelay()
            )
            transport.close()
            await asyncio.sleep(0)  # its connection_lost callback
        finally:
            server.close()
            await server.wait_closed()
        # One address: no next attempt, so no delay was ever needed.
        assert not [e for e in events if isinstance(e, happydial.DelayAdjusted)]
        assert sum(isinstance(e, happydial.AttemptSucceeded) for e in events) == 3

    run(main)
