"""What every section shares: the run's settings, targets, section reports, small helpers.

Stdlib only: the race child (``race_child.py``) imports nothing heavier, so its
peak RSS is the implementation's, not the harness's.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

AddrInfo = tuple[int, int, int, str, tuple[str, int] | tuple[str, int, int, int]]

IMPLS = ("happydial", "aiohappyeyeballs")
"""The implementations compared, in table order (the floor, where there is one, comes first)."""


@dataclass(frozen=True)
class Config:
    """How much of everything to run; ``--quick`` shrinks it all to a few seconds."""

    quick: bool
    out: Path
    loops: tuple[str, ...]
    # Section 1: per-connection cost.
    rounds: int
    per_batch: int
    # Section 2: concurrent races.
    race_sizes: tuple[int, ...]
    race_delay: float
    race_reps: int
    # Section 3: the address layer.
    timeit_repeats: int
    timeit_seconds: float
    # Section 5: host names (sequential and concurrent connects, slow names, rounds).
    names_seq: int = 1_000
    names_conc: int = 2_000
    names_slow: int = 300
    names_rounds: int = 3
    # The slow-DNS part's rounds: its figure depends on the lab's DNS path, which the
    # machine's other work slows, so a median of more rounds than the local part's.
    names_slow_rounds: int = 7

    @classmethod
    def make(cls, *, quick: bool, out: Path) -> Config:
        loops = tuple(name for name in ("asyncio", "uvloop") if name in loop_factories())
        if quick:
            return cls(quick, out, loops, 2, 20, (20,), 0.02, 1, 2, 0.002, 20, 50, 10, 1, 1)
        return cls(quick, out, loops, 30, 500, (100, 1_000, 5_000), 0.25, 5, 7, 0.05)


@dataclass(frozen=True)
class Target:
    """A goal from the issue: *measured* must be at most *limit* (both ratios)."""

    name: str
    measured: float
    limit: float

    @property
    def passed(self) -> bool:
        return self.measured <= self.limit

    def row(self) -> list[str]:
        verdict = "PASS" if self.passed else "FAIL"
        return [self.name, f"<= {self.limit:.2f}x", f"{self.measured:.3f}x", verdict]


@dataclass
class SectionReport:
    """What one section hands to the report: Markdown, targets, chart files."""

    title: str
    markdown: str
    targets: list[Target] = field(default_factory=list)
    charts: list[Path] = field(default_factory=list)


Section = Callable[[Config], SectionReport]
"""A section runs its benchmark and reports; ``cli.SECTIONS`` lists them in order."""


def loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loops available here, by name."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in bench/requirements.txt
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


def addr_info(host: str, port: int) -> AddrInfo:
    """A getaddrinfo 5-tuple for an IP literal."""
    if ":" in host:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


def raise_nofile(wanted: int) -> int:
    """Raise the soft descriptor limit towards *wanted* (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        return new
    return soft


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def micros(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def ratio(value: float) -> str:
    return f"{value:.3f}x"
