"""A reference model of a connect race, and a generator of random race scenarios.

The model is written from the rules in ``happydial._schedule``'s docstring, not from
its code: pure Python, no asyncio, no sockets. Given a scenario it returns every
outcome the race may have. Events that fall on the same instant (two connects that
finish together, a failure on the tick of the attempt delay, a cancellation at the
moment of a win) may be handled by the event loop in more than one order, so the
model explores every order and returns the set of possible outcomes; a real run must
produce one of them. Most scenarios have exactly one possible outcome.

Rules modelled:

* The first attempt starts at once. The next starts ``delay`` after the previous
  *start*, or at once when the most recently started attempt fails; an older
  attempt failing moves nothing. ``delay=None``: only when the latest fails;
  ``delay=0``: all at once.
* ``attempt_timeout``: an attempt pending that long fails with ``TimeoutError``.
* ``max_in_flight``: when a start is due and that many attempts are pending, the
  oldest pending one fails (a ``TimeoutError`` of its own wording) in that instant,
  then the start happens; with ``delay=0`` the start waits instead, until any
  pending attempt fails.
* Socket creation or binding that fails is a failure at the start instant.
* A connect whose outcome is known when it is called (``unreachable_now``: an
  unreachable network) fails at the start instant on the writer-callback path
  (``connect_ex`` answers it); on the task path it fails in the same instant, once
  the attempt's task runs. On the writer path an exception from the connect
  (``runtime``, ``bug_connect``) can only come from ``connect_ex``, so there it
  too happens at the start instant, whatever its delay.
* Items may be added while the race runs: a due start happens on arrival.
* The first success wins; a programming error ends the race and propagates; the
  caller's cancellation ends it with ``CancelledError``, even when it comes in the
  instant the race ended, before the caller's task resumed; when every attempt has
  failed and no more can come, the errors are aggregated by CPython's rules.
"""

from __future__ import annotations

import copy
import errno
import math
import random
import socket
from dataclasses import dataclass, field

EPS = 1e-7
V6 = int(socket.AF_INET6)
V4 = int(socket.AF_INET)

# Outcomes of one address, as the fake network plays them.
CONNECTS = (
    "connect",
    "refuse",
    "reset",
    "unreachable",
    "unreachable_now",
    "runtime",
    "hang",
    "bug_connect",
)
AT_START = ("factory", "bug_factory")
# Outcomes the writer path's connect_ex gives at once (see the module docstring).
WRITER_AT_ONCE = ("unreachable_now", "runtime", "bug_connect")
ERRNOS = {
    "refuse": errno.ECONNREFUSED,
    "reset": errno.ECONNRESET,
    "unreachable": errno.ENETUNREACH,
    "unreachable_now": errno.ENETUNREACH,
}
LOCAL_V6, LOCAL_V4 = "2001:db8:ffff::1", "192.0.2.254"


@dataclass(frozen=True)
class Addr:
    host: str
    family: int
    delay: float  # seconds from the start of its connect to the outcome
    outcome: str  # one of CONNECTS or AT_START


@dataclass
class Scenario:
    seed: int
    addrs: list[Addr]  # as given to start_connection, or the race's initial items
    delay: float | None
    interleave: int | None = None
    attempt_timeout: float | None = None
    # Per family: "ok" (binds), "bind" (bind raises EADDRINUSE), "missing" (no local
    # address of that family). None: no local_addr_infos at all.
    local: dict[int, str] | None = None
    all_errors: bool = False
    # ConnectRace mode: items added mid-race at strictly increasing times, then
    # stop_feeding at stop_at (None: in the same callback as the last batch).
    race_mode: bool = False
    batches: list[tuple[float, list[Addr]]] = field(default_factory=list)
    stop_at: float | None = None
    cancel_at: float | None = None
    max_in_flight: int | None = 6  # start_connection's default

    def all_addrs(self) -> list[Addr]:
        return self.addrs + [a for _, batch in self.batches for a in batch]

    def describe(self) -> str:
        lines = [
            (
                f"seed={self.seed} delay={self.delay} interleave={self.interleave}"
                f" attempt_timeout={self.attempt_timeout} local={self.local}"
                f" all_errors={self.all_errors} race_mode={self.race_mode}"
                f" stop_at={self.stop_at} cancel_at={self.cancel_at}"
                f" max_in_flight={self.max_in_flight}"
            ),
            *(f"  {a.host:16} {a.delay:<8} {a.outcome}" for a in self.addrs),
        ]
        for at, batch in self.batches:
            lines.append(f"  add at {at}:")
            lines.extend(f"    {a.host:16} {a.delay:<8} {a.outcome}" for a in batch)
        return "\n".join(lines)


def interleave(addrs: list[Addr], count: int) -> list[Addr]:
    """RFC 8305 section 4: *count* of the first family, then the families alternate."""
    if not addrs:
        return []
    first = [a for a in addrs if a.family == addrs[0].family]
    other = [a for a in addrs if a.family != addrs[0].family]
    result, first = first[:count], first[count:]
    while first or other:
        if other:
            result.append(other.pop(0))
        if first:
            result.append(first.pop(0))
    return result


def initial_queue(sc: Scenario) -> list[Addr]:
    if sc.race_mode:
        return list(sc.addrs)
    count = sc.interleave
    if count is None and sc.delay is not None:
        count = 1
    return interleave(sc.addrs, count) if count else list(sc.addrs)


# -- errors ----------------------------------------------------------------------

# An attempt's error: (type name, errno, key); errors with equal keys have equal str().
Sig = tuple[str, int | None, tuple[object, ...]]


def error_sig(addr: Addr, local: dict[int, str] | None) -> Sig | None:
    """The error of an attempt that fails at its start, or None if it connects."""
    if addr.outcome == "factory":
        return ("OSError", errno.EMFILE, ("factory",))
    if local is not None:
        mode = local[addr.family]
        if mode == "bind":
            return ("OSError", errno.EADDRINUSE, ("bind", addr.family))
        if mode == "missing":
            return ("OSError", errno.EAFNOSUPPORT, ("nolocal", addr.family))
    return None


def connect_error_sig(addr: Addr) -> Sig:
    if addr.outcome == "runtime":
        return ("RuntimeError", None, ("runtime",))
    code = ERRNOS[addr.outcome]
    name = {errno.ECONNREFUSED: "ConnectionRefusedError", errno.ECONNRESET: "ConnectionResetError"}
    return (name.get(code, "OSError"), code, ("connect", addr.host))


TIMEOUT_SIG: Sig = ("TimeoutError", None, ("timeout",))
DROPPED_SIG: Sig = ("TimeoutError", None, ("dropped",))
_SUBCLASS = {errno.ECONNREFUSED: "ConnectionRefusedError", errno.ECONNRESET: "ConnectionResetError"}


def aggregate(sigs: list[Sig], *, all_errors: bool) -> tuple[str, int | None]:
    """The type and errno of what is raised when every attempt failed (``_errors`` rules)."""
    if all_errors:
        return ("ExceptionGroup", None)
    first = sigs[0]
    if all(s[2] == first[2] for s in sigs):
        return (first[0], first[1])
    codes = {s[1] for s in sigs}
    if len(codes) == 1 and first[1] and all(s[0] != "RuntimeError" for s in sigs):
        return (_SUBCLASS.get(first[1], "OSError"), first[1])
    if all(s[0] == "RuntimeError" for s in sigs):
        return ("RuntimeError", None)
    return ("OSError", None)


# -- the model -------------------------------------------------------------------

# An outcome: (starts, result, end time, connect end times). starts: ((host, t), ...)
# in start order; result: ("win", host) | ("bug", host) | ("cancel",) |
# ("fail", type, errno, ((host, type, errno), ...)) | ("stuck",); connect end
# times: ((host, t), ...) for attempts whose connect began.
Outcome = tuple[
    tuple[tuple[str, float], ...], tuple[object, ...], float, tuple[tuple[str, float], ...]
]


def _r(t: float) -> float:
    return round(t, 6)


class _World:
    __slots__ = (
        "due",
        "ends",
        "errors",
        "feeding",
        "fired",
        "next_batch",
        "pending",
        "queue",
        "result",
        "starts",
        "t",
    )

    def __init__(self, queue: tuple[Addr, ...], feeding: bool) -> None:
        self.t = 0.0
        self.queue = queue
        self.starts: tuple[tuple[Addr, float], ...] = ()
        self.pending: frozenset[int] = frozenset()
        self.due = 0.0  # when the next start is allowed
        self.fired = True  # the due instant has been reached (its timer ran)
        self.errors: tuple[tuple[int, Sig], ...] = ()
        self.ends: tuple[tuple[int, float], ...] = ()
        self.next_batch = 0
        self.feeding = feeding
        self.result: tuple[object, ...] | None = None

    def key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)


class Model:
    def __init__(self, sc: Scenario, path: str) -> None:
        self.sc = sc
        self.writer = path == "writer"
        self.memo: dict[tuple[object, ...], frozenset[Outcome]] = {}

    def outcomes(self) -> frozenset[Outcome]:
        w = _World(tuple(initial_queue(self.sc)), self.sc.race_mode)
        self._start_due(w)
        self._check_all_failed(w)
        return self._explore(w)

    # -- exploration -------------------------------------------------------------

    def _explore(self, w: _World) -> frozenset[Outcome]:
        if w.result is not None:
            ended = frozenset([self._outcome(w)])
            cancel_at = self.sc.cancel_at
            if cancel_at is not None and abs(w.t - cancel_at) <= EPS and w.result != ("cancel",):
                # The race ended in the instant of the caller's cancellation: the
                # cancellation may still reach the task before it resumes.
                w2 = copy.copy(w)
                w2.result = ("cancel",)
                ended |= {self._outcome(w2)}
            return ended
        key = w.key()
        cached = self.memo.get(key)
        if cached is not None:
            return cached
        events = self._events(w)
        if not events:
            w2 = copy.copy(w)
            w2.result = ("stuck",)
            result = frozenset([self._outcome(w2)])
        else:
            now = min(e[0] for e in events)
            simultaneous = [e for e in events if e[0] <= now + EPS]
            inert = self._inert(w, simultaneous)
            choices = [inert] if inert is not None else simultaneous
            result = frozenset()
            for event in choices:
                w2 = copy.copy(w)
                w2.t = max(w.t, event[0])
                self._apply(w2, event)
                result |= self._explore(w2)
        self.memo[key] = result
        return result

    def _events(self, w: _World) -> list[tuple[float, str, int]]:
        sc = self.sc
        events: list[tuple[float, str, int]] = []
        for a in w.pending:
            addr, start = w.starts[a]
            if addr.outcome != "hang":
                delay = 0.0 if addr.outcome == "unreachable_now" else addr.delay
                events.append((start + delay, "done", a))
            if sc.attempt_timeout is not None:
                events.append((start + sc.attempt_timeout, "timeout", a))
        more = w.next_batch < len(sc.batches)
        if not w.fired and w.due < math.inf and (w.queue or more):
            events.append((w.due, "due", -1))
        if more:
            events.append((sc.batches[w.next_batch][0], "add", -1))
        elif w.feeding and sc.stop_at is not None:
            events.append((sc.stop_at, "stop", -1))
        if sc.cancel_at is not None:
            events.append((max(sc.cancel_at, w.t), "cancel", -1))
        return events

    def _inert(
        self, w: _World, simultaneous: list[tuple[float, str, int]]
    ) -> tuple[float, str, int] | None:
        """A failure of a non-latest attempt that commutes with everything at this instant."""
        latest = len(w.starts) - 1
        if self.sc.max_in_flight is not None and (
            any(e[1] in ("due", "add") for e in simultaneous) or (self.sc.delay == 0 and w.queue)
        ):
            # max_in_flight: a start at this instant may drop that attempt first, or
            # (delay 0) that failure frees the slot a waiting start needs.
            return None
        for event in simultaneous:
            _, kind, a = event
            if kind not in ("done", "timeout") or a == latest or len(w.pending) < 2:
                continue
            if kind == "done" and w.starts[a][0].outcome in ("connect", "bug_connect"):
                continue
            if sum(1 for e in simultaneous if e[2] == a) > 1:
                continue  # its connect and its timeout coincide: the order matters
            return event
        return None

    def _apply(self, w: _World, event: tuple[float, str, int]) -> None:
        _, kind, a = event
        if kind == "done":
            addr = w.starts[a][0]
            if addr.outcome == "connect":
                self._finish(w, ("win", addr.host))
            elif addr.outcome == "bug_connect":
                self._finish(w, ("bug", addr.host))
            else:
                self._fail(w, a, connect_error_sig(addr))
        elif kind == "timeout":
            self._fail(w, a, TIMEOUT_SIG)
        elif kind == "due":
            w.fired = True
            self._start_due(w)
        elif kind == "add":
            _, batch = self.sc.batches[w.next_batch]
            w.queue = (*w.queue, *batch)
            w.next_batch += 1
            if w.next_batch == len(self.sc.batches) and self.sc.stop_at is None:
                w.feeding = False
            self._start_due(w)
        elif kind == "stop":
            w.feeding = False
        else:
            self._finish(w, ("cancel",))
        self._check_all_failed(w)

    # -- the rules ---------------------------------------------------------------

    def _start_due(self, w: _World) -> None:
        cap = self.sc.max_in_flight
        while w.result is None and w.fired and w.queue:
            if cap is not None and len(w.pending) >= cap:
                if self.sc.delay == 0:
                    return  # all at once: the start waits for a failure to free a slot
                oldest = min(w.pending)  # dropped to make room, in this instant
                w.pending = w.pending - {oldest}
                w.errors = (*w.errors, (oldest, DROPPED_SIG))
                w.ends = (*w.ends, (oldest, w.t))
                continue
            addr, w.queue = w.queue[0], w.queue[1:]
            a = len(w.starts)
            w.starts = (*w.starts, (addr, w.t))
            if addr.outcome == "bug_factory":
                self._finish(w, ("bug", addr.host))
                return
            sig = error_sig(addr, self.sc.local)
            if sig is not None:
                # Failed at its start: it is the latest, so the next starts at once.
                w.errors = (*w.errors, (a, sig))
                continue
            if self.path_at_start(addr):
                w.ends = (*w.ends, (a, w.t))  # its connect began and ended
                if addr.outcome == "bug_connect":
                    self._finish(w, ("bug", addr.host))
                    return
                w.errors = (*w.errors, (a, connect_error_sig(addr)))
                continue
            w.pending = w.pending | {a}
            if self.sc.delay is None:
                w.due, w.fired = math.inf, False
            else:
                w.due, w.fired = w.t + self.sc.delay, self.sc.delay == 0

    def path_at_start(self, addr: Addr) -> bool:
        """Whether *addr*'s connect outcome comes inside its launch (writer path)."""
        return self.writer and addr.outcome in WRITER_AT_ONCE

    def _fail(self, w: _World, a: int, sig: Sig) -> None:
        w.pending = w.pending - {a}
        w.errors = (*w.errors, (a, sig))
        w.ends = (*w.ends, (a, w.t))
        if a == len(w.starts) - 1:
            w.due, w.fired = w.t, True
            self._start_due(w)
        elif self.sc.delay == 0:
            self._start_due(w)  # a start that waited for a slot (max_in_flight)

    def _check_all_failed(self, w: _World) -> None:
        if w.result is None and not w.pending and not w.queue and not w.feeding:
            if not w.starts:
                self._finish(w, ("fail", "OSError", None, ()))
                return
            sigs = [sig for _, sig in sorted(w.errors)]
            kind, code = aggregate(sigs, all_errors=self.sc.all_errors)
            per = tuple((w.starts[i][0].host, s[0], s[1]) for i, s in sorted(w.errors))
            self._finish(w, ("fail", kind, code, per))

    def _finish(self, w: _World, result: tuple[object, ...]) -> None:
        w.ends = (*w.ends, *((a, w.t) for a in sorted(w.pending)))
        w.pending = frozenset()
        w.result = result

    def _outcome(self, w: _World) -> Outcome:
        assert w.result is not None
        starts = tuple((addr.host, _r(t)) for addr, t in w.starts)
        ends = tuple(sorted((w.starts[a][0].host, _r(t)) for a, t in w.ends))
        return (starts, w.result, _r(w.t), ends)


def model_outcomes(sc: Scenario, path: str = "task") -> frozenset[Outcome]:
    """Every outcome *sc* may have on the connect *path* ("writer" or "task")."""
    return Model(sc, path).outcomes()


# -- scenarios -------------------------------------------------------------------

_OUTCOMES = [
    "connect",
    "refuse",
    "reset",
    "unreachable",
    "unreachable_now",
    "runtime",
    "hang",
    "factory",
]
_WEIGHTS = [30, 15, 5, 5, 4, 2, 22, 5]


def _grid(rng: random.Random, top: int = 10) -> float:
    return round(rng.randint(1, top) * 0.05, 10)


def _delay(rng: random.Random, previous: list[float]) -> float:
    roll = rng.random()
    if roll < 0.1:
        return 0.0
    if roll < 0.55:
        return _grid(rng)
    if roll < 0.7 and previous:
        return rng.choice(previous)  # an exact tie with another address
    return round(rng.uniform(0.001, 0.6), 3)


def generate(seed: int) -> Scenario:
    rng = random.Random(seed)
    n = rng.randint(1, 12)
    delays: list[float] = []
    addrs = []
    for i in range(n):
        family = rng.choice((V6, V4))
        host = f"2001:db8::{i + 1:x}" if family == V6 else f"192.0.2.{i + 1}"
        d = _delay(rng, delays)
        delays.append(d)
        addrs.append(Addr(host, family, d, rng.choices(_OUTCOMES, _WEIGHTS)[0]))
    if rng.random() < 0.08:  # rarely, a programming error
        i = rng.randrange(n)
        addrs[i] = Addr(
            addrs[i].host,
            addrs[i].family,
            addrs[i].delay,
            rng.choice(("bug_factory", "bug_connect")),
        )
    delay = rng.choice([None, 0.0, 0.05, 0.25, round(rng.uniform(0.01, 0.4), 3)])
    sc = Scenario(seed, addrs, delay)
    sc.interleave = rng.choice([None, 0, 1, 2])
    if rng.random() < 0.4:
        sc.attempt_timeout = rng.choice([0.05, 0.1, 0.25, 0.3, round(rng.uniform(0.02, 0.8), 3)])
    if rng.random() < 0.25:
        modes = ["ok", "ok", "ok", "bind", "missing"]
        sc.local = {V6: rng.choice(modes), V4: rng.choice(modes)}
    sc.all_errors = rng.random() < 0.15
    sc.max_in_flight = rng.choice([6, 6, None, 1, 2, 3])
    if rng.random() < 0.3:
        _split_into_batches(rng, sc)
    if rng.random() < 0.25:
        sc.cancel_at = _grid(rng, 24) if rng.random() < 0.5 else round(rng.uniform(0, 1.2), 3)
    if any(o[1] == ("stuck",) for o in model_outcomes(sc)):
        # Every remaining attempt hangs: only the caller's cancellation ends it.
        sc.cancel_at = _grid(rng, 40)
    return sc


def _split_into_batches(rng: random.Random, sc: Scenario) -> None:
    sc.race_mode = True
    sc.interleave = None
    addrs = sc.addrs
    cut = rng.randint(0, len(addrs) - 1)
    sc.addrs, rest = addrs[:cut], addrs[cut:]
    times = sorted(rng.sample(range(16), k=min(len(rest), rng.randint(1, 3))))
    bounds = sorted(rng.sample(range(1, len(rest)), k=len(times) - 1))
    parts = [rest[i:j] for i, j in zip([0, *bounds], [*bounds, len(rest)], strict=True)]
    sc.batches = [(round(t * 0.05, 10), part) for t, part in zip(times, parts, strict=True)]
    if rng.random() < 0.5:
        sc.stop_at = round((times[-1] + rng.randint(1, 8)) * 0.05, 10)
