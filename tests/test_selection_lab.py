"""RFC 6724 ordering against its oracle: glibc's ``getaddrinfo(AF_UNSPEC)`` on the same host.

Each case builds a host (network namespace: addresses and routes) and a private
``/etc/hosts`` (mount namespace) naming the destinations, in fresh namespaces that
die with the child process (``tests/lab/selection_oracle.py``), then compares glibc's
order with :func:`happydial.sort_addr_infos` fed by real source probes. Where glibc
departs from RFC 6724 (its RFC 3484-era tables and its rule 9), happydial follows the
RFC and the case asserts both orders; ``docs/guides/address-selection.md`` lists these
differences. Needs root; skipped otherwise, except that with ``CI=true`` an unavailable
lab is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab

ORACLE = Path(__file__).parent / "lab" / "selection_oracle.py"
V4_DEFAULT = "route add default"
V6_DEFAULT = "-6 route add default"
DUAL = ["192.0.2.2/24", "2001:db8:1::2/64"]
BOTH_DEFAULTS = [V4_DEFAULT, V6_DEFAULT]


@dataclass(frozen=True)
class Case:
    """A host, the destinations in input order, our order, and glibc's if it differs."""

    addresses: list[str]
    routes: list[str]
    hosts: list[str]
    expected: list[str]
    glibc: list[str] | None = None  # None: glibc agrees
    sources: dict[str, str | None] = field(default_factory=dict)  # probes to check


CASES: dict[str, Case] = {
    # Rule 1: no IPv6 route, so no IPv6 source: IPv6 last despite its precedence.
    "rule1-no-ipv6-route": Case(
        ["192.0.2.2/24"],
        [V4_DEFAULT],
        ["2001:db8::10", "192.0.2.10"],
        ["192.0.2.10", "2001:db8::10"],
        sources={"2001:db8::10": None, "192.0.2.10": "192.0.2.2"},
    ),
    # Rule 1: a link-local destination without a scope id cannot be connected to.
    "rule1-link-local-without-scope": Case(
        DUAL,
        BOTH_DEFAULTS,
        ["fe80::10", "2001:db8::10"],
        ["2001:db8::10", "fe80::10"],
        sources={"fe80::10": None},
    ),
    # Rule 2: the only IPv6 source is link-local, for a global destination.
    "rule2-link-local-ipv6-source": Case(
        ["198.51.100.117/24", "fe80::2/64"],
        BOTH_DEFAULTS,
        ["2001:db8:1::1", "198.51.100.121"],
        ["198.51.100.121", "2001:db8:1::1"],
        sources={"2001:db8:1::1": "fe80::2"},
    ),
    # Rule 5: the only IPv6 source is a ULA (the host): IPv4 first.
    "rule5-ula-source": Case(
        ["192.0.2.2/24", "fd00::2/64"],
        BOTH_DEFAULTS,
        ["2001:db8::10", "192.0.2.10"],
        ["192.0.2.10", "2001:db8::10"],
        sources={"2001:db8::10": "fd00::2"},
    ),
    # Rule 6: global IPv6 before IPv4.
    "rule6-ipv6-first": Case(
        DUAL,
        BOTH_DEFAULTS,
        ["192.0.2.10", "2001:db8::10"],
        ["2001:db8::10", "192.0.2.10"],
    ),
    # Rule 6: ::1 before 127.0.0.1 (the dual.test of the benchmarks).
    "rule6-loopback": Case(
        DUAL,
        BOTH_DEFAULTS,
        ["127.0.0.1", "::1"],
        ["::1", "127.0.0.1"],
        sources={"::1": "::1", "127.0.0.1": "127.0.0.1"},
    ),
    # Rule 6, a difference: RFC 6724 gives ULAs precedence 3, below IPv4's 35; glibc's
    # RFC 3484 table gives them the default 40 (and IPv4 10).
    "rule6-ula-destination-differs": Case(
        ["192.0.2.2/24", "fd00::2/64"],
        BOTH_DEFAULTS,
        ["fd00::10", "192.0.2.10"],
        ["192.0.2.10", "fd00::10"],
        glibc=["fd00::10", "192.0.2.10"],
    ),
    # Rule 6, a difference: 6to4 has precedence 30, below IPv4's 35 (glibc: 30 over 10).
    "rule6-6to4-differs": Case(
        ["192.0.2.2/24", "2002:c633:6401::2/64"],
        BOTH_DEFAULTS,
        ["2002:c633:6401::1", "192.0.2.10"],
        ["192.0.2.10", "2002:c633:6401::1"],
        glibc=["2002:c633:6401::1", "192.0.2.10"],
    ),
    # Rule 6, differences: Teredo (2001::/32, precedence 5), the returned 6bone
    # (3ffe::/16, 1) and deprecated site-local (fec0::/10, 1) prefixes, each with a
    # source of its own kind, come after IPv4 (35); glibc gives them 40 (IPv4 10).
    **{
        f"rule6-{kind}-differs": Case(
            ["192.0.2.2/24", f"{prefix}::2/64"],
            BOTH_DEFAULTS,
            [f"{prefix}::10", "192.0.2.10"],
            ["192.0.2.10", f"{prefix}::10"],
            glibc=[f"{prefix}::10", "192.0.2.10"],
            sources={f"{prefix}::10": f"{prefix}::2"},
        )
        for kind, prefix in [("teredo", "2001:0:1"), ("6bone", "3ffe:1"), ("site-local", "fec0:1")]
    },
    # Rule 8: IPv4 link-local (169.254/16) before global (private space is global).
    "rule8-ipv4-link-local": Case(
        ["10.0.0.2/24", "169.254.0.2/16"],
        [V4_DEFAULT],
        ["10.0.0.10", "169.254.0.10"],
        ["169.254.0.10", "10.0.0.10"],
        sources={"10.0.0.10": "10.0.0.2", "169.254.0.10": "169.254.0.2"},
    ),
    # Rule 9: 2001:db8:1::10 shares 64 bits with its source, 2001:db8:3::10 47.
    "rule9-longest-prefix": Case(
        ["2001:db8:1::2/64", "2001:db8:2::2/64"],
        [V6_DEFAULT],
        ["2001:db8:3::10", "2001:db8:1::10"],
        ["2001:db8:1::10", "2001:db8:3::10"],
        sources={"2001:db8:3::10": "2001:db8:2::2", "2001:db8:1::10": "2001:db8:1::2"},
    ),
    # Rule 9, a difference: CommonPrefixLen stops at the source's 64-bit prefix, so
    # both tie and rule 10 keeps the order; glibc compares all 128 bits.
    "rule9-beyond-the-prefix-differs": Case(
        DUAL,
        BOTH_DEFAULTS,
        ["2001:db8:1:0:8000::10", "2001:db8:1::3"],
        ["2001:db8:1:0:8000::10", "2001:db8:1::3"],
        glibc=["2001:db8:1::3", "2001:db8:1:0:8000::10"],
    ),
    # Rule 9, a difference: not applied to IPv4; glibc prefers a destination on the
    # source's own subnet.
    "rule9-ipv4-differs": Case(
        DUAL,
        BOTH_DEFAULTS,
        ["198.51.100.10", "192.0.2.10"],
        ["198.51.100.10", "192.0.2.10"],
        glibc=["192.0.2.10", "198.51.100.10"],
    ),
    # Rule 10: equal on every rule, in both families: the order stays.
    "rule10-ipv6": Case(
        DUAL,
        BOTH_DEFAULTS,
        ["2001:db8:5::20", "2001:db8:5::10"],
        ["2001:db8:5::20", "2001:db8:5::10"],
    ),
    "rule10-ipv4": Case(
        DUAL,
        BOTH_DEFAULTS,
        ["198.51.100.20", "198.51.100.10"],
        ["198.51.100.20", "198.51.100.10"],
    ),
    # Everything at once, families mixed in the input.
    "mixed": Case(
        ["192.0.2.2/24", "2001:db8:1::2/64", "2001:db8:2::2/64"],
        BOTH_DEFAULTS,
        ["198.51.100.10", "2001:db8:3::10", "2001:db8:1::10", "198.51.100.11", "fe80::9"],
        ["2001:db8:1::10", "2001:db8:3::10", "198.51.100.10", "198.51.100.11", "fe80::9"],
    ),
}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the address selection oracle must run in CI, but: {reason}")
    pytest.skip(f"address selection oracle unavailable: {reason}")


def run_oracle(case: Case) -> dict[str, Any]:
    """Build the case's host in fresh namespaces and return both orders."""
    spec = {"addresses": case.addresses, "routes": case.routes, "hosts": case.hosts}
    result = subprocess.run(  # noqa: S603 - fixed programs, arguments built here
        [  # noqa: S607 - unshare is found on PATH like any admin tool
            "unshare",
            "--net",
            "--mount",
            "--propagation",
            "private",
            "--",
            sys.executable,
            str(ORACLE),
            json.dumps(spec),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "src")},
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


@pytest.fixture(scope="module")
def oracle_available() -> None:
    if os.geteuid() != 0:
        _unavailable("needs root (network and mount namespaces)")
    for program in ("unshare", "ip", "mount"):
        if shutil.which(program) is None:
            _unavailable(f"{program} is not installed")
    probe = subprocess.run(
        # S607: unshare is found on PATH like any admin tool.
        ["unshare", "--net", "--mount", "--", "ip", "link", "add", "hd0", "type", "veth"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if probe.returncode != 0:
        _unavailable(f"cannot build namespaces here: {probe.stderr.strip()}")


@pytest.mark.usefixtures("oracle_available")
@pytest.mark.parametrize("case", CASES.values(), ids=CASES)
def test_order_matches_glibc(case: Case) -> None:
    answer = run_oracle(case)
    for host, source in case.sources.items():
        assert answer["sources"][host] == source, host
    assert answer["ours"] == case.expected
    assert answer["glibc"] == (case.expected if case.glibc is None else case.glibc)


def test_every_rule_has_a_case() -> None:
    rules = {name.split("-")[0] for name in CASES}
    assert rules >= {f"rule{n}" for n in (1, 2, 5, 6, 8, 9, 10)}
