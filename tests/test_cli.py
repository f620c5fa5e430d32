"""python -m happydial: the timeline, JSON output, exit statuses and the demo."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from happydial._cli import main


@pytest.fixture
def live() -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0), backlog=16)
    yield srv.getsockname()[1]
    srv.close()


def test_demo_shows_the_fallback() -> None:
    out = io.StringIO()
    assert main(["demo", "--delay", "0.05"], out=out) == 0
    text = out.getvalue()
    assert "attempt 0 [::1]" in text
    assert "attempt 1 127.0.0.1" in text
    assert "connected to 127.0.0.1" in text
    lines = [line for line in text.splitlines() if "attempt 1" in line and "started" in line]
    assert float(lines[0].split()[0]) >= 50.0


def test_connect_prints_the_timeline(live: int) -> None:
    out = io.StringIO()
    assert main(["127.0.0.1", str(live)], out=out) == 0
    assert f"connected to 127.0.0.1:{live}" in out.getvalue()
    assert "attempt 0 127.0.0.1" in out.getvalue()


def test_json_output(live: int) -> None:
    out = io.StringIO()
    assert main(["localhost", str(live), "--json", "--family", "4"], out=out) == 0
    result = json.loads(out.getvalue())
    assert result["ok"] is True
    assert result["peer"] == f"127.0.0.1:{live}"
    events = [e["event"] for e in result["timeline"]]
    assert events[0] == "ResolutionStarted"
    assert result["timeline"][0]["family"] == "A"
    assert result["timeline"][0]["host"] == "localhost"
    assert "AttemptSucceeded" in events


def test_failure_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    out = io.StringIO()
    assert main(["localhost", str(port), "--timeout", "1"], out=out) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"happydial: cannot connect to localhost port {port}: ")
    assert len(err.splitlines()) == 1
    assert "failed: [Errno 111]" in out.getvalue()
    out = io.StringIO()
    assert main(["no-such-host.invalid", "80", "--json"], out=out) == 1
    result = json.loads(out.getvalue())
    assert result["ok"] is False
    assert "cannot resolve" in result["error"]
    assert {e["event"] for e in result["timeline"]} == {"ResolutionStarted", "ResolutionFailed"}


def test_port_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["example.org"])
    assert info.value.code == 2
    assert "PORT is required" in capsys.readouterr().err


def test_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "happydial", "demo", "--delay", "0.02"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "connected to" in result.stdout


def test_history_events_are_rendered() -> None:
    from happydial import DelayAdjusted, HistoryReordered
    from happydial._cli import Timeline

    a6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 80, 0, 0))
    a4 = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 80))
    timeline = Timeline(10.0)
    timeline(HistoryReordered((a6, a4), (a4, a6), ("192.0.2.1 connected in 5.0 ms",), 10.0))
    timeline(DelayAdjusted(0, a4, 0.1, 0.005, 10.001))
    out = io.StringIO()
    timeline.render(out)
    assert out.getvalue().splitlines() == [
        "      0.0 ms  history reordered: 192.0.2.1 connected in 5.0 ms",
        "      1.0 ms  next attempt in 100 ms (measured connect time)",
    ]
    records = [timeline.describe(e)[1] for e in timeline.events]
    assert records[0]["order"] == ["192.0.2.1:80", "[2001:db8::1]:80"]
    assert records[1]["delay_ms"] == 100.0
