"""A scripted network and a virtual clock for the blocking racer (``happydial.sync``).

The blocking driver takes its clock and its selector as seams. :class:`FakeNet`
provides both: sockets whose ``connect_ex`` answers as scripted (at once, or after a
delay on the virtual clock, or never), and a selector whose ``select(timeout)``
advances the clock to the next scripted outcome or to the end of the timeout,
whichever comes first, so a race of minutes runs in microseconds.
"""

from __future__ import annotations

import errno
import itertools
import math
import selectors
import socket
from collections.abc import Mapping
from typing import Any

from happydial import AddrInfoType
from happydial._blocking import BlockingRace

ERRNOS = {
    "connect": 0,
    "refuse": errno.ECONNREFUSED,
    "unreachable": errno.ENETUNREACH,
    "reset": errno.ECONNRESET,
    "hang": 0,
}


class FakeSock:
    """A socket whose connect answers as its address is scripted."""

    def __init__(self, net: FakeNet, addr_info: AddrInfoType) -> None:
        self.net = net
        self.addr_info = addr_info
        self.fd = net.next_fd()
        self.close_count = 0
        self.blocking = True
        self.timeout: float | None = None
        self.ready_at = math.inf
        self.error = 0
        self.bound: tuple[Any, ...] | None = None
        net.sockets.append(self)

    def bind(self, address: tuple[Any, ...]) -> None:
        self.bound = address

    def fileno(self) -> int:
        return self.fd if self.close_count == 0 else -1

    def setblocking(self, flag: bool) -> None:
        self.blocking = flag
        self.timeout = None if flag else 0.0

    def settimeout(self, value: float | None) -> None:
        self.timeout = value
        self.blocking = value is None or value > 0

    def getblocking(self) -> bool:
        return self.blocking

    def gettimeout(self) -> float | None:
        return self.timeout

    def close(self) -> None:
        self.close_count += 1

    def connect_ex(self, address: tuple[Any, ...]) -> int:
        assert self.close_count == 0, "connect on a closed socket"
        host = address[0]
        delay, outcome, at_once = self.net.scripts[host]
        self.net.start_times[host] = self.net.now
        self.error = ERRNOS[outcome]
        if at_once:
            return self.error
        if outcome != "hang":
            self.ready_at = self.net.now + delay
        return errno.EINPROGRESS

    def getpeername(self) -> tuple[Any, ...]:
        raise OSError(errno.ENOTCONN, "not connected")  # connects complete on the clock

    def getsockopt(self, level: int, option: int) -> int:
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR)
        return self.error


class FakeSelector(selectors.BaseSelector):
    """Write-readiness by the script, on the virtual clock."""

    def __init__(self, net: FakeNet) -> None:
        self.net = net
        self.keys: dict[Any, selectors.SelectorKey] = {}
        self.closed = False
        net.selectors.append(self)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        assert fileobj not in self.keys, "registered twice"
        key = selectors.SelectorKey(fileobj, fileobj.fileno(), events, data)
        self.keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self.keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        net = self.net
        socks = [k.fileobj for k in self.keys.values() if isinstance(k.fileobj, FakeSock)]
        first = min((s.ready_at for s in socks), default=math.inf)
        first = min(first, min((lookup.at for lookup in net.lookups), default=math.inf))
        until = math.inf if timeout is None else net.now + timeout
        assert min(first, until) < math.inf, "the race waits forever"
        times = sorted(s.ready_at for s in socks if s.ready_at < math.inf)
        if first < math.inf and (
            abs(first - until) < 1e-9 or any(b - a < 1e-9 for a, b in itertools.pairwise(times))
        ):
            net.ties += 1  # two things due at one instant: which goes first is a driver's pick
        if first > net.now:
            net.now = min(first, until)
        net.selects += 1
        events = []
        if net.answer_due():  # the answers were posted: the wake-up socket is readable
            events += [
                (key, selectors.EVENT_READ)
                for key in self.keys.values()
                if not isinstance(key.fileobj, FakeSock)
            ]
        ready = sorted((s for s in socks if s.ready_at <= net.now), key=lambda s: s.ready_at)
        return events + [(self.keys[s], selectors.EVENT_WRITE) for s in ready]

    def close(self) -> None:
        self.closed = True
        self.keys.clear()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self.keys


class FakeLookup:
    """One scripted lookup: its answer is posted (as a pool thread would) at ``at``."""

    def __init__(self, at: float, on_answer: Any, result: Any, error: Exception | None) -> None:
        self.at = at
        self.on_answer = on_answer
        self.result = result
        self.error = error
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeNet:
    """Scripts per host, the virtual clock, and every socket and selector made."""

    def __init__(self) -> None:
        self.now = 0.0
        self.scripts: dict[str, tuple[float, str, bool]] = {}
        self.start_times: dict[str, float] = {}
        self.sockets: list[FakeSock] = []
        self.selectors: list[FakeSelector] = []
        self.selects = 0
        self.ties = 0
        self.dns: dict[int, tuple[float, Any]] = {}  # family -> (delay, entries or error)
        self.lookups: list[FakeLookup] = []
        self.asked: list[tuple[str, int, int]] = []
        self._fd = 1000

    def script(
        self, host: str, delay: float = 0.0, outcome: str = "connect", *, at_once: bool = False
    ) -> None:
        self.scripts[host] = (delay, outcome, at_once)

    def answer(self, family: int, delay: float, answer: Any) -> None:
        """Script the lookup of *family*: after *delay*, *answer* (addresses or an error)."""
        self.dns[family] = (delay, answer)

    def getaddrinfo(self, host: str, port: int, family: int, on_answer: Any) -> FakeLookup:
        """``start_threaded_getaddrinfo`` on the virtual clock."""
        self.asked.append((host, port, family))
        delay, answer = self.dns[family]
        error = answer if isinstance(answer, Exception) else None
        result = (
            None if error is not None else [(*a[:4], (*a[4][:1], port, *a[4][2:])) for a in answer]
        )
        lookup = FakeLookup(self.now + delay, on_answer, result, error)
        self.lookups.append(lookup)
        return lookup

    def answer_due(self) -> bool:
        """Post the answers whose time has come; whether any was posted."""
        due = [lookup for lookup in self.lookups if lookup.at <= self.now]
        self.lookups = [lookup for lookup in self.lookups if lookup.at > self.now]
        posted = False
        for lookup in due:
            if not lookup.cancelled:
                lookup.on_answer(lookup.result, lookup.error)
                posted = True
        return posted

    def next_fd(self) -> int:
        self._fd += 1
        return self._fd

    def clock(self) -> float:
        return self.now

    def socket_factory(self, addr_info: AddrInfoType) -> socket.socket:
        return FakeSock(self, addr_info)  # type: ignore[return-value]

    def race_class(self, *, sockets: bool = False) -> Any:
        """``BlockingRace`` on this network's clock and selector (patch it into sync).

        *sockets*: and on its sockets, unless the caller gives a socket factory of
        its own (``create_connection`` passes ``socket_factory=None`` by default).
        """

        def race(*args: Any, socket_factory: Any = None, **kwargs: Any) -> BlockingRace:
            if sockets and socket_factory is None:
                socket_factory = self.socket_factory
            return BlockingRace(
                *args,
                socket_factory=socket_factory,
                clock=self.clock,
                new_selector=lambda: FakeSelector(self),
                **kwargs,
            )

        return race
