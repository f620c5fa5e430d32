# ruff: noqa: INP001 - a standalone script, not part of a package
"""Draw ``docs/_static/race-timeline.svg`` from a real race on the virtual clock.

The race runs :func:`happydial.start_connection` on a
:class:`happydial.testing.VirtualClockLoop` against a scripted
:class:`happydial.testing.FakeNetwork`, and draws what its ``trace`` reported. The
same scenario runs as a doctest in ``docs/how-it-works.md``, so the figure and the
page cannot drift apart silently: re-run this script when the scheduler changes.

Run it with any Python that has happydial and matplotlib installed, from the
repository root (the docs build itself never needs matplotlib)::

    /tmp/bench-venv/bin/python docs/_scripts/timeline.py
"""

from __future__ import annotations

import socket
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt

import happydial
from happydial.testing import FakeNetwork, VirtualClockLoop

OUT = Path(__file__).resolve().parent.parent / "_static" / "race-timeline.svg"
DELAY = 0.25

# Two IPv6 and two IPv4 addresses, IPv6 first as a resolver following RFC 6724 gives them.
ADDR_INFOS = [
    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 443, 0, 0)),
    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::2", 443, 0, 0)),
    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 443)),
    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.2", 443)),
]


def run_race() -> list[happydial.TraceEvent]:
    """Run the scripted race and return its trace events."""
    loop = VirtualClockLoop()
    try:
        net = FakeNetwork(loop)
        net.script("2001:db8::1", delay=0.40, outcome="unreachable")
        net.script("192.0.2.1", delay=0.05, outcome="refuse")
        net.script("2001:db8::2", outcome="hang")
        net.script("192.0.2.2", delay=0.08)
        events: list[happydial.TraceEvent] = []
        sock = loop.run_until_complete(
            happydial.start_connection(
                ADDR_INFOS,
                happy_eyeballs_delay=DELAY,
                socket_factory=net.socket_factory,
                trace=events.append,
            )
        )
        sock.close()
        return events
    finally:
        loop.close()


COLOURS = {
    "AttemptFailed": "#d1495b",
    "AttemptSucceeded": "#2e8b57",
    "AttemptCancelled": "#8d99ae",
}
LABELS = {
    "AttemptFailed": "failed",
    "AttemptSucceeded": "connected: wins",
    "AttemptCancelled": "cancelled, socket closed",
}


def draw(events: list[happydial.TraceEvent], out: Path) -> None:
    """Draw one bar per attempt, from its start to its end."""
    starts = {e.attempt: e for e in events if isinstance(e, happydial.AttemptStarted)}
    ends = {
        e.attempt: e
        for e in events
        if isinstance(
            e, happydial.AttemptFailed | happydial.AttemptSucceeded | happydial.AttemptCancelled
        )
    }
    end_time = max(e.time for e in events)
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "happydial", "font.size": 10})
    fig, ax = plt.subplots(figsize=(8.6, 3.3))
    for index, start in starts.items():
        end = ends[index]
        kind = type(end).__name__
        y = -index
        ax.barh(y, end.time - start.time, left=start.time, height=0.5, color=COLOURS[kind])
        ax.plot([start.time], [y], marker="|", markersize=16, color="black")
        text = f"{LABELS[kind]} at {end.time * 1000:.0f} ms"
        if isinstance(end, happydial.AttemptFailed):
            reason = "refused" if isinstance(end.error, ConnectionRefusedError) else "unreachable"
            text = f"{reason} at {end.time * 1000:.0f} ms"
        ax.text(end.time + 0.008, y, text, va="center", fontsize=9)
    # Annotate the two scheduling rules the race shows.
    ax.annotate(
        "most recent attempt failed:\nnext one starts at once",
        xy=(0.30, -1.75),
        xytext=(0.02, -2.9),
        fontsize=8.5,
        arrowprops={"arrowstyle": "->", "color": "#444"},
    )
    ax.annotate(
        "an older attempt failed:\nthe schedule does not move",
        xy=(0.40, -0.25),
        xytext=(0.47, 0.55),
        fontsize=8.5,
        arrowprops={"arrowstyle": "->", "color": "#444"},
    )
    ax.annotate(
        "",
        xy=(0.55, -3.45),
        xytext=(0.30, -3.45),
        arrowprops={"arrowstyle": "<->", "color": "#444"},
    )
    ax.text(0.425, -3.78, "250 ms after the previous start", ha="center", fontsize=8.5)
    ticks = [-i for i in starts]
    names = [f"#{i} {_where(s.addr_info)}" for i, s in starts.items()]
    ax.set_yticks(ticks, names)
    ax.set_ylim(-4.1, 1.2)
    ax.set_xlim(-0.02, end_time + 0.30)
    ax.set_xticks([0, 0.25, 0.30, 0.40, 0.55, end_time])
    ax.xaxis.set_major_formatter(lambda x, _pos: f"{x * 1000:.0f}")
    ax.set_xlabel("loop time (ms)")
    for spine in ("top", "right", "left"):
        ax.spines[spine].set_visible(False)
    ax.grid(axis="x", linestyle=":", linewidth=0.8)
    ax.set_title(
        f"start_connection(happy_eyeballs_delay={DELAY}): four addresses, interleaved",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)


def _where(addr_info: happydial.AddrInfoType) -> str:
    host = addr_info[4][0]
    return f"[{host}]" if ":" in host else host


def main() -> None:
    """Run the race and write the figure."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    draw(run_race(), OUT)


if __name__ == "__main__":
    main()
