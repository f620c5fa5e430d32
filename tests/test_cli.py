"""happydial / python -m happydial: the documented invocations, the output contract, the demo.

Nothing here asks real DNS: host names are answered by a scripted resolver, and the
documented examples run on a virtual clock against a scripted network (``WORLD``), so
their output is exact and the documentation can show it as is. When the output changes
on purpose, print the new text to paste into the docs with, from ``tests/``:
``python -c 'from test_cli import run_cli; print(run_cli(["example.org", "443"])[1])'``.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

import happydial
from happydial import AttemptFailed, DelayAdjusted, HistoryReordered
from happydial._cli import (
    Environment,
    Timeline,
    _attempt_delay,
    _dead_listener,
    _describe_delay,
    _parser,
    main,
)
from happydial._errors import format_sockaddr
from happydial.testing import FakeNetwork, run_virtual

ROOT = Path(__file__).parent.parent

# The scripted world of the documentation's examples: host -> family -> (answer delay,
# addresses or an error), and address -> how connecting to it goes.
NXDOMAIN = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
WORLD: dict[str, dict[int, tuple[float, list[str] | OSError]]] = {
    "example.org": {
        socket.AF_INET6: (0.014, ["2001:db8::10"]),
        socket.AF_INET: (0.011, ["192.0.2.10"]),
    },
    "example.net": {
        socket.AF_INET6: (0.009, ["2001:db8::20"]),
        socket.AF_INET: (0.010, ["192.0.2.20"]),
    },
    "no-such-host.invalid": {socket.AF_INET6: (0.004, NXDOMAIN), socket.AF_INET: (0.004, NXDOMAIN)},
}
PATHS: dict[str, tuple[float, Any]] = {
    "2001:db8::10": (0.0, "hang"),  # a dead IPv6 path
    "192.0.2.10": (0.018, "connect"),
    "2001:db8::20": (0.0, "hang"),
    "192.0.2.20": (0.0, "hang"),  # a black-holed host
    "::1": (0.0002, "connect"),
}


async def world_resolver(host: str, port: int, family: int) -> list[happydial.AddrInfoType]:
    delay, answer = WORLD.get(host, {}).get(family, (0.0, NXDOMAIN))
    await asyncio.sleep(delay)
    if isinstance(answer, OSError):
        raise answer
    return happydial.ip_addresses_to_addr_infos(answer, port)


def world_options() -> dict[str, Any]:
    net = FakeNetwork(asyncio.get_running_loop())
    for address, (delay, outcome) in PATHS.items():
        net.script(address, delay=delay, outcome=outcome)
    return {"resolver": world_resolver, "socket_factory": net.socket_factory}


def run_on_virtual_clock(coro: Coroutine[Any, Any, int]) -> int:
    result: int = run_virtual(lambda: coro)
    return result


def run_cli(argv: list[str], *, virtual: bool = True) -> tuple[int, str]:
    """Run the command as a terminal shows it: stdout and stderr in one stream."""
    out = io.StringIO()
    env = Environment(stdout=out, stderr=out)
    if virtual:
        env.run, env.connect_options = run_on_virtual_clock, world_options
    status = main(argv, env=env)
    return status, out.getvalue()


# ---------------------------------------------------------------------------
# Every invocation shown in the documentation runs as shown.

_CONSOLE = re.compile(r"^```(?:console|text)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_COMMAND = re.compile(r"^\$ (?:python -m )?happydial( .*)?$")
_STATUS = re.compile(r"\s+# exit status (\d+)$")


def documented_invocations() -> list[tuple[str, list[str], int, list[str]]]:
    """(where, argv, exit status, output lines) for every ``$ happydial ...`` shown."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in _CONSOLE.findall(path.read_text(encoding="utf-8")):
            lines = block.splitlines()
            for i, line in enumerate(lines):
                if _COMMAND.match(line) is None:
                    continue
                status = _STATUS.search(line)
                command = line[: status.start()] if status else line
                argv = shlex.split(command)[1:]
                argv = argv[2:] if argv[:2] == ["-m", "happydial"] else argv[1:]
                output = []
                for rest in lines[i + 1 :]:
                    if rest.startswith("$ "):
                        break
                    output.append(rest)
                where = f"{path.relative_to(ROOT)}: {command}"
                found.append((where, argv, int(status[1]) if status else 0, output))
    return found


INVOCATIONS = documented_invocations()


def test_the_documentation_shows_invocations() -> None:
    shown = {" ".join(argv) for _, argv, _, _ in INVOCATIONS}
    assert {"demo", "example.org 443", "localhost 99999", "no-such-host.invalid 443"} <= shown
    assert {status for _, _, status, _ in INVOCATIONS} == {0, 1, 2}


_DEMO_RUN: dict[str, tuple[int, str]] = {}


@pytest.mark.parametrize(
    ("argv", "status", "expected"),
    [(argv, status, output) for _, argv, status, output in INVOCATIONS],
    ids=[where for where, _, _, _ in INVOCATIONS],
)
def test_documented_invocation(argv: list[str], status: int, expected: list[str]) -> None:
    if argv[:1] == ["demo"]:
        # The demo runs for real (its times vary): the first line and the status.
        key = " ".join(argv)
        if key not in _DEMO_RUN:
            _DEMO_RUN[key] = run_cli(argv, virtual=False)
        got_status, got = _DEMO_RUN[key]
        assert (got_status, got.splitlines()[0]) == (status, expected[0])
        return
    got_status, got = run_cli(argv)
    lines = got.splitlines()
    assert (got_status, lines[0]) == (status, expected[0])
    # On the scripted network the whole output is exact. (The resolution error's
    # wording belongs to connect(); tests below check the CLI prints it once.)
    assert len(lines) == len(expected), got
    for line, want in zip(lines, expected, strict=True):
        if want.startswith("happydial: cannot resolve "):
            assert line.startswith(want.split(":")[0] + ": cannot resolve ")
        else:
            assert line == want


# ---------------------------------------------------------------------------
# Bad arguments: one line, exit status 2, nothing runs (issue 12, item 13).


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["localhost", "99999"], "PORT must be a number from 1 to 65535, got '99999'"),
        (["localhost", "0"], "PORT must be a number from 1 to 65535, got '0'"),
        (["localhost", "http"], "PORT must be a number from 1 to 65535, got 'http'"),
        (["localhost:", "--json"], "PORT must be a number from 1 to 65535, got ''"),
        (["", "80"], "HOST must not be empty, got ''"),
        ([":80"], "HOST must not be empty, got ':80'"),
        (["[]:80"], "'[]:80': brackets are only for IPv6 addresses, as in [::1]:443"),
        (
            ["[192.0.2.1]:80"],
            "'[192.0.2.1]:80': brackets are only for IPv6 addresses, as in [::1]:443",
        ),
        (["[::1:80"], "'[::1:80': write an IPv6 address and port as [::1]:443"),
        (["localhost:80", "81"], "the port is given twice: 'localhost:80' and '81'"),
        (["[::1]:80", "80"], "the port is given twice: '[::1]:80' and '80'"),
        (
            ["localhost", "80", "--delay", "-1"],
            "argument --delay: must be a number of seconds, 0 or more, got '-1'",
        ),
        (
            ["localhost", "80", "--delay", "nan"],
            "argument --delay: must be a number of seconds, 0 or more, got 'nan'",
        ),
        (
            ["localhost", "80", "--delay", "soon"],
            "argument --delay: must be a number of seconds, 0 or more, got 'soon'",
        ),
        (
            ["::1", "80", "--timeout", "0"],
            "argument --deadline/--timeout: must be a number of seconds, more than 0, got '0'",
        ),
        (
            ["::1", "80", "--family", "4"],
            "::1 is an IPv6 address, but --family 4 asks for IPv4 only",
        ),
        (
            ["192.0.2.1:80", "--family", "6"],
            "192.0.2.1 is an IPv4 address, but --family 6 asks for IPv6 only",
        ),
        (["fe80::1%nosuch0", "80"], "host 'fe80::1%nosuch0': no network interface named 'nosuch0'"),
        (["demo", "80"], "demo takes no PORT (for a host named demo, write demo.)"),
        (
            ["demo", "--family", "6"],
            "demo takes no --family: it races one IPv6 and one IPv4 address",
        ),
        (["--delay", "1"], "the following arguments are required: HOST"),
        (["--policy", "lan"], "the following arguments are required: HOST"),
        (["localhost", "80", "443"], "unrecognized arguments: 443"),
    ],
)
def test_bad_argument_is_one_line_and_status_2(argv: list[str], message: str) -> None:
    status, output = run_cli(argv)
    assert (status, output) == (2, f"happydial: error: {message}\n")


@pytest.mark.parametrize(("option", "value"), [("--family", "5"), ("--policy", "fast")])
def test_bad_choice_is_one_line_and_status_2(option: str, value: str) -> None:
    # argparse words the choices differently across Python versions: check the start.
    status, output = run_cli(["::1", "80", option, value])
    assert status == 2
    assert output.startswith(f"happydial: error: argument {option}: invalid choice: '{value}'")
    assert output.count("\n") == 1


@pytest.mark.parametrize(
    ("target", "hint"),
    [
        ("example.org", "give HOST PORT (example.org 443) or HOST:PORT (example.org:443)"),
        ("[::1]", "give HOST PORT (::1 443) or [IPV6]:PORT ('[::1]:443')"),
        ("::1", "give HOST PORT (::1 443) or [IPV6]:PORT ('[::1]:443')"),
        ("a b", "give HOST PORT ('a b' 443) or HOST:PORT (a b:443)"),
    ],
)
def test_missing_port_says_what_to_type(target: str, hint: str) -> None:
    assert run_cli([target]) == (2, f"happydial: error: PORT is required: {hint}\n")


@pytest.mark.parametrize(
    ("argv", "peer"),
    [
        (["::1", "8765"], "[::1]:8765"),
        (["[::1]", "8765"], "[::1]:8765"),
        (["[::1]:8765"], "[::1]:8765"),
        (["example.org:443"], "192.0.2.10:443"),
        (["example.org", "443", "--delay", "0"], "192.0.2.10:443"),
    ],
)
def test_host_and_port_spellings(argv: list[str], peer: str) -> None:
    status, output = run_cli(argv)
    assert status == 0
    assert output.splitlines()[-1].startswith(f"connected to {peer} in ")


def test_delay_is_passed_on() -> None:
    status, output = run_cli(["example.org", "443", "--delay", "0.1"])
    assert status == 0
    assert "    114.0 ms  attempt 1 192.0.2.10:443 started" in output.splitlines()


def test_policy_exponential() -> None:
    status, output = run_cli(["example.org", "443", "--policy", "exponential"])
    assert status == 0
    assert output.splitlines()[4:] == [
        "     14.0 ms  attempt 0 [2001:db8::10]:443 started",
        "     14.0 ms  next attempt in 50 ms (exponential policy)",
        "     64.0 ms  attempt 1 192.0.2.10:443 started",
        "     82.0 ms  attempt 1 192.0.2.10:443 connected",
        "     82.0 ms  attempt 0 [2001:db8::10]:443 cancelled",
        "connected to 192.0.2.10:443 in 82.0 ms",
    ]


@pytest.mark.parametrize(("delay", "started"), [([], 264.0), (["--delay", "0.1"], 114.0)])
def test_policy_lan_uses_delay_for_other_destinations(delay: list[str], started: float) -> None:
    status, output = run_cli(["example.org", "443", "--policy", "lan", "--json", *delay])
    assert status == 0
    timeline = json.loads(output)["timeline"]
    adjusted = [e for e in timeline if e["event"] == "DelayAdjusted"]
    assert adjusted == [
        {
            "event": "DelayAdjusted",
            "ms": 14.0,
            "attempt": 0,
            "delay_ms": started - 14.0,
            "reason": "lan",
        }
    ]
    second = [e for e in timeline if e["event"] == "AttemptStarted"][1]
    assert (second["address"], second["ms"]) == ("192.0.2.10:443", started)


def test_policy_constant_passes_the_number_on() -> None:
    # The default: the number itself, unclamped, with no DelayAdjusted events.
    status, output = run_cli(["example.org", "443", "--policy", "constant", "--delay", "0"])
    assert status == 0
    assert "next attempt" not in output
    assert "     14.0 ms  attempt 1 192.0.2.10:443 started" in output.splitlines()


@pytest.mark.parametrize(
    ("argv", "delay", "text"),
    [
        ([], 0.25, "attempt delay 250 ms"),
        (["--delay", "0"], 0.0, "attempt delay 0 ms"),
        (["--policy", "constant", "--delay", "1"], 1.0, "attempt delay 1000 ms"),
        (
            ["--policy", "exponential"],
            happydial.ExponentialDelay(),
            "attempt delay 50 ms, doubling with each attempt in flight",
        ),
        (
            ["--policy", "lan", "--delay", "0.3"],
            happydial.LanDelay(lan=0.1, other=0.3),
            "attempt delay 100 ms on the LAN, 300 ms elsewhere",
        ),
    ],
)
def test_policy_options(argv: list[str], delay: object, text: str) -> None:
    args = _parser("happydial", io.StringIO()).parse_args(["demo", *argv])
    assert _attempt_delay(args) == delay
    assert type(_attempt_delay(args)) is type(delay)
    assert _describe_delay(args) == text


def test_demo_with_a_policy() -> None:
    out = io.StringIO()
    argv = ["demo", "--json", "--policy", "lan", "--timeout", "0.1"]
    assert main(argv, env=Environment(stdout=out)) == 0
    raced = json.loads(out.getvalue())["happy_eyeballs"]
    adjusted = [e for e in raced["timeline"] if e["event"] == "DelayAdjusted"]
    assert [(e["attempt"], e["delay_ms"], e["reason"]) for e in adjusted] == [(0, 100.0, "lan")]
    assert raced["peer"].startswith("127.0.0.1:")
    assert raced["ms"] >= 100.0


# ---------------------------------------------------------------------------
# Failures: text on stderr, or one JSON object with --json; exit status 1.


def failing_resolver(aaaa: OSError, a: OSError) -> Any:
    async def resolve(host: str, port: int, family: int) -> list[happydial.AddrInfoType]:
        raise aaaa if family == socket.AF_INET6 else a

    return resolve


async def connect_error(resolver: Any, **options: Any) -> str:
    with pytest.raises(socket.gaierror) as info:
        await happydial.connect("db.test", 5432, resolver=resolver, **options)
    assert info.value.strerror is not None
    return info.value.strerror


@pytest.mark.parametrize(
    ("aaaa", "a"),
    [
        (socket.gaierror(socket.EAI_NODATA, "No address"), NXDOMAIN),
        (NXDOMAIN, NXDOMAIN),
    ],
    ids=["different", "identical"],
)
def test_resolution_failure_is_said_once(aaaa: OSError, a: OSError) -> None:
    # No real DNS: the resolver fails both families. connect() words the error
    # (naming the families); the CLI prints it once, as is, and nothing else.
    resolver = failing_resolver(aaaa, a)
    expected = asyncio.run(connect_error(resolver))
    assert expected.startswith("cannot resolve 'db.test'")
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, connect_options=lambda: {"resolver": resolver})
    assert main(["db.test", "5432"], env=env) == 1
    assert err.getvalue() == f"happydial: {expected}\n"
    lines = out.getvalue().splitlines()
    assert [line.split(" ms  ", 1)[1] for line in lines] == [
        "lookup AAAA db.test started",
        f"lookup AAAA failed: {aaaa}",
        "lookup A db.test started",
        f"lookup A failed: {a}",
    ]
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, connect_options=lambda: {"resolver": resolver})
    assert main(["db.test", "5432", "--json"], env=env) == 1
    result = json.loads(out.getvalue())
    assert (result["ok"], result["error"], err.getvalue()) == (False, expected, "")
    assert [(e["event"], e["family"]) for e in result["timeline"]] == [
        ("ResolutionStarted", "AAAA"),
        ("ResolutionFailed", "AAAA"),
        ("ResolutionStarted", "A"),
        ("ResolutionFailed", "A"),
    ]
    fields = result["report"]["traces"][0]["report"]
    assert (fields["outcome"], fields["error_type"]) == ("failed", "gaierror")
    assert [(lookup["family"], lookup["error"]) for lookup in fields["lookups"]] == [
        ("AAAA", str(aaaa)),
        ("A", str(a)),
    ]
    one_family = asyncio.run(connect_error(resolver, family=socket.AF_INET))
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, connect_options=lambda: {"resolver": resolver})
    assert main(["db.test", "5432", "--family", "4"], env=env) == 1
    assert err.getvalue() == f"happydial: {one_family}\n"


@pytest.fixture
def refused_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()  # nothing listens there any more
    return port


def test_connection_failure_on_real_sockets(refused_port: int) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["127.0.0.1", str(refused_port)], env=Environment(stdout=out, stderr=err)) == 1
    assert err.getvalue().startswith(
        f"happydial: cannot connect to 127.0.0.1 port {refused_port}: "
    )
    assert err.getvalue().count("\n") == 1
    assert [line.split(" ms  ", 1)[1].split(":")[0] for line in out.getvalue().splitlines()] == [
        "attempt 0 127.0.0.1",
        "attempt 0 127.0.0.1",
    ]
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err)
    assert main([f"127.0.0.1:{refused_port}", "--json"], env=env) == 1
    result = json.loads(out.getvalue())
    assert err.getvalue() == ""
    assert result["ok"] is False
    assert result["error"].startswith(f"cannot connect to 127.0.0.1 port {refused_port}: ")
    assert [e["event"] for e in result["timeline"]] == ["AttemptStarted", "AttemptFailed"]
    [attempt] = result["report"]["traces"][0]["report"]["attempts"]
    assert (attempt["outcome"], attempt["failure"]) == ("failed", "refused")


def test_timeout_gives_up_with_the_timeline_so_far() -> None:
    status, output = run_cli(["example.net", "443", "--json", "--deadline", "2.5"])
    assert status == 1
    result = json.loads(output)
    assert result["error"] == "cannot connect to example.net port 443: no connection within 2.5 s"
    # connect(timeout=2.5): the attempts still connecting then failed by the deadline.
    assert [(e["event"], e["ms"]) for e in result["timeline"]][-2:] == [
        ("AttemptFailed", 2500.0),
        ("AttemptFailed", 2500.0),
    ]
    # The deadline is connect()'s own: its report says so, attempt by attempt.
    [trace] = result["report"]["traces"]
    assert trace["description"] == (
        "timed out after 2.5 s; AAAA answered in 9 ms; A answered in 10 ms;"
        " [2001:db8::20]:443 timed out after 2.49 s; 192.0.2.20:443 timed out after 2.24 s"
    )
    assert trace["events"][-1]["name"] == "happy_eyeballs:connection_timed_out"


def test_json_report_is_the_documented_one() -> None:
    # docs/cli.md shows this description (read with jq): keep the two in step.
    status, output = run_cli(["example.org", "443", "--json"])
    assert status == 0
    report = json.loads(output)["report"]
    assert report["qlog_version"] == "0.3"
    [trace] = report["traces"]
    assert trace["description"] == (
        "connected to 192.0.2.10:443 in 282 ms; AAAA answered in 14 ms; A answered in 11 ms;"
        " [2001:db8::10]:443 cancelled after 268 ms; 192.0.2.10:443 connected after 18 ms"
    )
    assert trace["description"] in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert [a["outcome"] for a in trace["report"]["attempts"]] == ["cancelled", "connected"]


def test_timeout_is_the_old_name_of_deadline() -> None:
    status, output = run_cli(["example.net", "443", "--json", "--timeout", "0.5"])
    assert status == 1
    assert json.loads(output)["error"].endswith("no connection within 0.5 s")


def test_max_in_flight_caps_the_attempts() -> None:
    # Two dead addresses and a cap of 1: the first is dropped when the second starts.
    status, output = run_cli(
        ["example.net", "443", "--json", "--deadline", "1", "--max-in-flight", "1"]
    )
    assert status == 1
    timeline = [(e["event"], e["ms"]) for e in json.loads(output)["timeline"]]
    dropped = timeline.index(("AttemptFailed", 259.0))
    assert timeline[dropped + 1] == ("AttemptStarted", 259.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "0",
            "argument --max-in-flight: must be a number of attempts, 1 or more, or none, got '0'",
        ),
        (
            "x",
            "argument --max-in-flight: must be a number of attempts, 1 or more, or none, got 'x'",
        ),
    ],
)
def test_max_in_flight_refuses_bad_values(value: str, message: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err)
    assert main(["example.net", "443", "--max-in-flight", value], env=env) == 2
    assert message in err.getvalue()


# ---------------------------------------------------------------------------
# Success, on real loopback sockets.


@pytest.fixture
def live() -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0), backlog=16)
    yield srv.getsockname()[1]
    srv.close()


def test_connect_prints_the_timeline_as_it_goes(live: int) -> None:
    out = io.StringIO()
    assert main(["127.0.0.1", str(live)], env=Environment(stdout=out)) == 0
    lines = out.getvalue().splitlines()
    assert [line.split(" ms  ", 1)[1] for line in lines[:2]] == [
        f"attempt 0 127.0.0.1:{live} started",
        f"attempt 0 127.0.0.1:{live} connected",
    ]
    assert re.fullmatch(rf"connected to 127\.0\.0\.1:{live} in \d+\.\d ms", lines[2])


def test_json_output(live: int) -> None:
    out = io.StringIO()
    options = {"resolver": happydial_loopback_resolver}
    env = Environment(stdout=out, connect_options=lambda: options)
    assert main(["localhost", str(live), "--json", "--family", "4"], env=env) == 0
    result = json.loads(out.getvalue())
    assert result["ok"] is True
    assert result["peer"] == f"127.0.0.1:{live}"
    assert [e["event"] for e in result["timeline"]] == [
        "ResolutionStarted",
        "ResolutionFinished",
        "AttemptStarted",
        "AttemptSucceeded",
    ]
    assert result["timeline"][0]["family"] == "A"
    assert result["timeline"][0]["host"] == "localhost"
    assert result["timeline"][1]["addresses"] == ["127.0.0.1"]


async def happydial_loopback_resolver(
    host: str, port: int, family: int
) -> list[happydial.AddrInfoType]:
    return happydial.ip_addresses_to_addr_infos(["127.0.0.1"], port)


# ---------------------------------------------------------------------------
# Ctrl-C: the timeline so far, then exit status 130, no traceback.


@pytest.fixture(autouse=True)
def _ctrl_c_works() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt here and in child processes, however we were started.

    A shell starts background jobs with SIGINT ignored, and a child inherits that: these
    tests would then wait for the command's deadline instead of being interrupted.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


async def interrupting_resolver(host: str, port: int, family: int) -> list[happydial.AddrInfoType]:
    if family == socket.AF_INET:
        signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C now
    await asyncio.sleep(3600)
    raise AssertionError("not reached: Ctrl-C cancels the lookup")  # pragma: no cover


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_prints_the_timeline_so_far(as_json: bool) -> None:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(
        stdout=out, stderr=err, connect_options=lambda: {"resolver": interrupting_resolver}
    )
    argv = ["db.test", "5432", *(["--json"] if as_json else [])]
    assert main(argv, env=env) == 130
    if as_json:
        result = json.loads(out.getvalue())
        assert (result["ok"], result["error"], err.getvalue()) == (False, "interrupted", "")
        assert [e["event"] for e in result["timeline"]] == ["ResolutionStarted"] * 2
        fields = result["report"]["traces"][0]["report"]
        assert fields["outcome"] == "cancelled"
        assert [lookup["outcome"] for lookup in fields["lookups"]] == ["abandoned"] * 2
    else:
        assert [line.split(" ms  ", 1)[1] for line in out.getvalue().splitlines()] == [
            "lookup AAAA db.test started",
            "lookup A db.test started",
        ]
        assert err.getvalue() == "happydial: interrupted\n"


def test_ctrl_c_in_a_real_process_prints_no_traceback() -> None:
    dead, fillers = _dead_listener()  # connecting to it hangs: a real Ctrl-C is needed
    port = dead.getsockname()[1]
    host = dead.getsockname()[0]
    try:
        with subprocess.Popen(  # noqa: S603 - our own entry point, fixed arguments
            [sys.executable, "-m", "happydial", host, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # printed as it happens, before Ctrl-C
            proc.send_signal(signal.SIGINT)
            rest, err = proc.communicate(timeout=30)
    finally:
        for sock in (*fillers, dead):
            sock.close()
    where = format_sockaddr((host, port))
    assert first.split(" ms  ", 1)[1] == f"attempt 0 {where} started\n"
    # The race is cancelled: its last event, then one line on stderr, no traceback.
    assert [line.split(" ms  ", 1)[1] for line in rest.splitlines()] == [
        f"attempt 0 {where} cancelled"
    ]
    assert (proc.returncode, err) == (130, "happydial: interrupted\n")


def test_ctrl_c_before_anything_ran() -> None:
    def interrupt(coro: Coroutine[Any, Any, int]) -> int:
        coro.close()
        raise KeyboardInterrupt

    err = io.StringIO()
    assert main(["db.test", "5432"], env=Environment(stderr=err, run=interrupt)) == 130
    assert err.getvalue() == "happydial: interrupted\n"
    out = io.StringIO()
    assert main(["db.test", "5432", "--json"], env=Environment(stdout=out, run=interrupt)) == 130
    assert json.loads(out.getvalue()) == {
        "ok": False,
        "error": "interrupted",
        "timeline": [],
        "report": None,  # no connection was started
    }


# ---------------------------------------------------------------------------
# The demo.


def test_demo_shows_both_times_side_by_side() -> None:
    out = io.StringIO()
    assert main(["demo", "--delay", "0.05", "--timeout", "0.3"], env=Environment(stdout=out)) == 0
    text = out.getvalue()
    assert text.startswith("happydial demo: two listeners on this machine, no network needed.\n")
    assert "Happy Eyeballs (attempt delay 50 ms):" in text
    assert "(here each attempt is given up after 0.3 s;" in text
    racing, one_by_one = text.split("One address at a time")
    assert re.search(r"attempt 1 127\.0\.0\.1:\d+ connected", racing)
    assert re.search(r"attempt 0 \[::1\]:\d+ failed: ", one_by_one)
    started = [line for line in racing.splitlines() if "attempt 1" in line and "started" in line]
    assert float(started[0].split()[0]) >= 50.0
    he = re.search(r"\n  Happy Eyeballs 127\.0\.0\.1:\d+ +(\d+\.\d) ms\n", text)
    seq = re.search(r"\n  one at a time  127\.0\.0\.1:\d+ +(\d+\.\d) ms\n", text)
    assert he is not None
    assert seq is not None
    assert 50.0 <= float(he[1]) < 300.0 <= float(seq[1])


def test_demo_json() -> None:
    out = io.StringIO()
    argv = ["demo", "--json", "--delay", "0.02", "--timeout", "0.1"]
    assert main(argv, env=Environment(stdout=out)) == 0
    result = json.loads(out.getvalue())
    assert result["ok"] is True
    raced, one_by_one = result["happy_eyeballs"], result["one_at_a_time"]
    assert raced["peer"] == one_by_one["peer"]
    assert raced["peer"].startswith("127.0.0.1:")
    assert [e["event"] for e in one_by_one["timeline"]] == [
        "AttemptStarted",
        "AttemptFailed",
        "AttemptStarted",
        "AttemptSucceeded",
    ]
    assert one_by_one["ms"] >= 100.0


def test_help_and_version() -> None:
    status, output = run_cli(["--help"])
    assert status == 0
    assert output.startswith("usage: happydial [options] HOST PORT\n")
    words = " ".join(output.split())
    assert "(default: 0.25; 0: all at once)" in words
    assert "--policy {constant,exponential,lan} how the attempt delay is chosen" in words
    assert "(default: constant)" in words
    assert "(default: 10); in the demo" in words
    assert run_cli(["--version"]) == (0, f"happydial {happydial.__version__}\n")


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ([sys.executable, "-m", "happydial"], "usage: python -m happydial [options] HOST PORT"),
        (
            [str(Path(sys.executable).with_name("happydial"))],
            "usage: happydial [options] HOST PORT",
        ),
    ],
    ids=["python -m happydial", "happydial"],
)
def test_entry_points(command: list[str], usage: str) -> None:
    result = subprocess.run(  # noqa: S603 - our own entry points, fixed arguments
        [*command, "--help"], capture_output=True, text=True, check=False, timeout=30
    )
    assert (result.returncode, result.stdout.splitlines()[0]) == (0, usage)
    result = subprocess.run(  # noqa: S603 - our own entry points, fixed arguments
        [*command, "localhost", "99999"], capture_output=True, text=True, check=False, timeout=30
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "happydial: error: PORT must be a number from 1 to 65535, got '99999'\n"


def test_history_events_are_rendered() -> None:
    a6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 80, 0, 0))
    a4 = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 80))
    timeline = Timeline(10.0)
    timeline(HistoryReordered((a6, a4), (a4, a6), ("192.0.2.1 connected in 5.0 ms",), 10.0))
    timeline(DelayAdjusted(0, a4, 0.1, 0.005, 10.001))
    timeline(AttemptFailed(1, a6, TimeoutError(), 10.002))
    timeline(DelayAdjusted(2, a4, 0.2, None, 10.003, "exponential"))
    assert [timeline.line(event) for event in timeline.events] == [
        "      0.0 ms  history reordered: 192.0.2.1 connected in 5.0 ms\n",
        "      1.0 ms  next attempt in 100 ms (measured connect time)\n",
        "      2.0 ms  attempt 1 [2001:db8::1]:80 failed: TimeoutError\n",
        "      3.0 ms  next attempt in 200 ms (exponential policy)\n",
    ]
    records = timeline.records()
    assert records[0]["order"] == ["192.0.2.1:80", "[2001:db8::1]:80"]
    assert (records[1]["delay_ms"], records[1]["reason"]) == (100.0, "history")
    assert (records[3]["delay_ms"], records[3]["reason"]) == (200.0, "exponential")


def test_max_in_flight_none_keeps_every_attempt() -> None:
    status, output = run_cli(
        ["example.net", "443", "--json", "--deadline", "1", "--max-in-flight", "none"]
    )
    assert status == 1
    timeline = [(e["event"], e["ms"]) for e in json.loads(output)["timeline"]]
    # Nothing is dropped: every attempt fails at the deadline, none before.
    assert [ms for event, ms in timeline if event == "AttemptFailed"] == [1000.0, 1000.0]
