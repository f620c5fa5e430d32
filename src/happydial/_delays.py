"""Attempt-delay policies: how long to wait between two connection attempt starts.

RFC 8305 section 5 calls this wait the Connection Attempt Delay: 250 ms by default; a
delay derived from history or policy must have a floor, as no attempt may start within
10 ms of the previous one (a MUST NOT, :data:`MIN_DELAY`), with 100 ms the recommended
minimum (:data:`RECOMMENDED_MIN_DELAY`) and 2 s the recommended maximum
(:data:`MAX_DELAY`). Section 8 lists the same values as the configurable ones. A
:class:`DelayPolicy` picks the delay per attempt; the racer asks it through
:func:`effective_delay`, never directly.

Invariants of this module:

* Pure: no I/O, no clock, no event loop. The policies here answer from their
  arguments only, so the same inputs give the same delay (the virtual-clock tests
  rely on it); a caller's own policy should too.
* Every delay a policy returns goes through :func:`effective_delay`, which refuses
  nonsense (not a number, a bool, NaN, negative: a programming error, raised as
  :class:`ValueError`) and clamps the rest into ``[MIN_DELAY, MAX_DELAY]``. A policy
  may thus say ``0`` or ``inf`` and still never race everything at once or stall.
* The value types are frozen and validated when built: a bad policy fails where it
  is written, not in the middle of a connection.
* A plain number given as ``happy_eyeballs_delay`` is not a policy and is not
  clamped: ``None`` still means one at a time and ``0`` all at once.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from ._addresses import AddrInfoType
from ._validate import is_delay_policy

__all__ = [
    "MAX_DELAY",
    "MIN_DELAY",
    "RECOMMENDED_MIN_DELAY",
    "ConstantDelay",
    "DelayPolicy",
    "ExponentialDelay",
    "LanDelay",
    "effective_delay",
    "is_lan_address",
]

MIN_DELAY = 0.01
"""RFC 8305 section 5's floor: no attempt starts within 10 ms of the previous one."""

RECOMMENDED_MIN_DELAY = 0.1
"""RFC 8305 section 5's recommended minimum, 100 ms."""

MAX_DELAY = 2.0
"""RFC 8305 section 5's recommended maximum, 2 s."""


@runtime_checkable
class DelayPolicy(Protocol):
    """Picks the delay between attempt starts (RFC 8305 section 5's Connection Attempt Delay).

    Pass an instance as ``happy_eyeballs_delay`` to :func:`happydial.start_connection`,
    :func:`happydial.connect` or the wrappers. Its answers are clamped into
    ``[MIN_DELAY, MAX_DELAY]``; a non-number, NaN or negative answer is an error.
    """

    @property
    def name(self) -> str:
        """A short name for trace events and reports (``"constant"``, ``"lan"``)."""
        ...  # pragma: no cover - a protocol member has no body to run

    def delay(self, addr_info: AddrInfoType, attempt: int, in_flight: int) -> float:
        """Seconds from the start of attempt *attempt* to the start of the next.

        Args:
            addr_info: The address of attempt *attempt*, the one that just started.
            attempt: Its number in the race, from 0.
            in_flight: How many attempts are in flight now, this one included (>= 1).
        """
        ...  # pragma: no cover - a protocol method has no body to run


def _number(value: object, owner: str, name: str) -> float:
    """A finite, non-negative number of seconds, named in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class ConstantDelay:
    """The same delay after every attempt: RFC 8305's fixed Connection Attempt Delay.

    Args:
        seconds: The delay (250 ms, RFC 8305 section 5's recommended value).
    """

    seconds: float = 0.25
    name: ClassVar[str] = "constant"

    def __post_init__(self) -> None:
        """Validate and normalise the arguments."""
        object.__setattr__(self, "seconds", _number(self.seconds, "ConstantDelay", "seconds"))

    def delay(self, addr_info: AddrInfoType, attempt: int, in_flight: int) -> float:  # noqa: ARG002 - the protocol's signature
        """Always :attr:`seconds`."""
        return self.seconds


@dataclass(frozen=True, slots=True)
class ExponentialDelay:
    """A delay that grows with the attempts in flight: ``base * factor ** (in_flight - 1)``.

    The Happy Eyeballs v3 draft proposes it and Firefox Nightly ships it with 50 ms
    doubling: the first fallback starts at 50 ms (on purpose below RFC 8305's
    recommended 100 ms minimum: most failures are quick, and a slow first attempt
    costs little), while each further one waits twice as long, so a list of
    black-holed addresses does not open sockets at a constant rate.

    Args:
        base: The delay with one attempt in flight (50 ms).
        factor: The growth per extra attempt in flight (at least 1).
        maximum: The largest delay (RFC 8305's 2 s).
    """

    base: float = 0.05
    factor: float = 2.0
    maximum: float = MAX_DELAY
    name: ClassVar[str] = "exponential"

    def __post_init__(self) -> None:
        """Validate and normalise the arguments."""
        base = _number(self.base, "ExponentialDelay", "base")
        if base == 0:
            raise ValueError(f"ExponentialDelay: base must be positive, got {self.base!r}")
        factor = _number(self.factor, "ExponentialDelay", "factor")
        maximum = _number(self.maximum, "ExponentialDelay", "maximum")
        if factor < 1:
            raise ValueError(f"ExponentialDelay: factor must be >= 1, got {self.factor!r}")
        if maximum < base:
            raise ValueError(
                f"ExponentialDelay: maximum ({self.maximum!r}) must not be below base"
                f" ({self.base!r})"
            )
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "factor", factor)
        object.__setattr__(self, "maximum", maximum)

    def delay(self, addr_info: AddrInfoType, attempt: int, in_flight: int) -> float:  # noqa: ARG002 - the protocol's signature
        """``base * factor ** (in_flight - 1)``, at most :attr:`maximum`."""
        try:
            value = self.base * self.factor ** max(in_flight - 1, 0)
        except OverflowError:  # factor ** steps beyond a float: far beyond maximum
            return self.maximum
        return min(value, self.maximum)


# Destinations on the local network: RTTs there are well under a millisecond, and a
# 250 ms wait behind a dead address is pure loss (aiohomekit#350). Not 100.64/10 (RFC
# 6598 shared address space): that is the carrier's network, behind a CGN.
_LAN_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in ("127.0.0.0/8", "169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
_LAN_V6 = tuple(ipaddress.IPv6Network(n) for n in ("::1/128", "fe80::/10", "fc00::/7"))


def is_lan_address(host: str) -> bool:
    """Whether IP literal *host* is on the local network (loopback, link-local, private).

    Covers IPv4 loopback, link-local (169.254/16) and RFC 1918 ranges, IPv6 loopback,
    link-local (fe80::/10) and unique local (fc00::/7) addresses, and the
    IPv4-mapped forms of the IPv4 ones. A ``%zone`` suffix is ignored. Anything
    that is not an IP literal is not on the LAN.
    """
    plain = host.partition("%")[0]
    try:
        ip = ipaddress.ip_address(plain)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is None:
            return any(ip in net for net in _LAN_V6)
        ip = mapped
    return any(ip in net for net in _LAN_V4)


@dataclass(frozen=True, slots=True)
class LanDelay:
    """A short delay for destinations on the local network, another for the rest.

    Args:
        lan: The delay after an attempt to a loopback, link-local or private address
            (RFC 8305's recommended minimum, 100 ms).
        other: The delay after any other attempt: seconds, or a :class:`DelayPolicy`
            to ask.
    """

    lan: float = RECOMMENDED_MIN_DELAY
    other: float | DelayPolicy = 0.25
    name: ClassVar[str] = "lan"

    def __post_init__(self) -> None:
        """Validate and normalise the arguments."""
        object.__setattr__(self, "lan", _number(self.lan, "LanDelay", "lan"))
        other = self.other
        if isinstance(other, (int, float)):
            object.__setattr__(self, "other", _number(other, "LanDelay", "other"))
        elif not is_delay_policy(other):
            raise TypeError(
                f"LanDelay: other must be a number of seconds or a DelayPolicy, got {other!r}"
            )

    def delay(self, addr_info: AddrInfoType, attempt: int, in_flight: int) -> float:
        """:attr:`lan` for a local destination, else :attr:`other`'s answer."""
        if is_lan_address(addr_info[4][0]):
            return self.lan
        other = self.other
        if isinstance(other, float):
            return other
        return other.delay(addr_info, attempt, in_flight)


def effective_delay(
    policy: DelayPolicy, addr_info: AddrInfoType, attempt: int, in_flight: int
) -> float:
    """Ask *policy* for the delay after *attempt*, checked and clamped to RFC 8305's bounds.

    Returns:
        The delay, in ``[MIN_DELAY, MAX_DELAY]``.

    Raises:
        ValueError: The policy answered with a non-number, a bool, NaN or a negative
            number (a bug in the policy), naming the policy and the answer.
    """
    value: object = policy.delay(addr_info, attempt, in_flight)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(
            f"delay policy {policy!r} must return a number of seconds >= 0,"
            f" got {value!r} for attempt {attempt}"
        )
    return min(max(float(value), MIN_DELAY), MAX_DELAY)
