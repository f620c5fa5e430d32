"""TLS inside the race (Happy Eyeballs v3, ``tls_in_race=True``) end to end in the network lab.

The lab's server serves TLS on :data:`TLS_PORT` with certificates of a throwaway CA made
at test time (``tests/tls_helpers.py``): a ``good`` address presents a certificate for
the name the client verifies, a ``wrong`` one a valid certificate for another name (one
misconfigured machine of a pool), and a ``silent`` one accepts TCP and never answers the
ClientHello. The client (``tests/lab/client.py``, call ``open_connection``) trusts the CA
and verifies :data:`~tests.tls_helpers.NAME`. Needs root, as ``tests/test_lab.py``.

The ideals count round trips through the relay: TCP's handshake is one, TLS 1.3's one
more (the server's whole first flight, certificate included, answers the ClientHello),
so a wrong certificate is known two RTTs after its attempt started.
"""

from __future__ import annotations

from typing import Any, Literal

import pytest

from .lab.netns import Lab
from .test_lab import (
    DELAY,
    FAST,
    RESOLUTION_DELAY,
    RTT,
    assert_no_leak,
    assert_timely,
    dual_stack_zone,
    show,
)
from .test_lab_https import RESOLVER, SLOW, chosen, https_zone
from .tls_helpers import NAME, Certificates, make_certificates

pytestmark = pytest.mark.lab

TLS_PORT = 443
Kind = Literal["good", "wrong", "silent"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("lab-certs"))


def listen(lab: Lab, certs: Certificates, kind: Kind, addresses: list[str]) -> None:
    """Listeners of *kind* on *addresses*, port :data:`TLS_PORT`."""
    assert lab.server is not None
    tls: dict[str, str] | None = None
    if kind != "silent":  # a plain listener: it never answers the ClientHello
        cert, key = certs.good if kind == "good" else certs.wrong
        tls = {"cert": str(cert), "key": str(key)}
    lab.server.request("listen", addresses=addresses, port=TLS_PORT, tls=tls)


def open_tls(
    lab: Lab, loop_name: str, certs: Certificates, host: str, **spec: Any
) -> dict[str, Any]:
    """Run ``happydial.open_connection(host, TLS_PORT, ssl=..., tls_in_race=True)``."""
    kwargs = {
        "happy_eyeballs_delay": DELAY,
        "resolution_delay": RESOLUTION_DELAY,
        "tls_in_race": True,
        "server_hostname": NAME,
        **spec.pop("kwargs", {}),
    }
    return lab.run_client(
        {
            "loop": loop_name,
            "call": "open_connection",
            "host": host,
            "port": TLS_PORT,
            "cafile": str(certs.ca),
            "kwargs": kwargs,
            **spec,
        }
    )


def stages(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The TLS stage's events and attempts' ends, in order: ``(type, address)``."""
    kinds = {"TLSStarted", "TLSFailed", "TLSSucceeded", "AttemptCancelled", "AttemptSucceeded"}
    return [(e["type"], e["address"]) for e in report["events"] if e["type"] in kinds]


def wrong_then_good(wrong: str, good: str) -> list[tuple[str, str]]:
    """The stages when *wrong*'s certificate is refused and *good* wins."""
    return [
        ("TLSStarted", wrong),
        ("TLSFailed", wrong),
        ("TLSStarted", good),
        ("TLSSucceeded", good),
        ("AttemptSucceeded", good),
    ]


def assert_tls_won(report: dict[str, Any], address: str, ideal: float) -> None:
    """Connected to *address* with a verified TLS 1.3 connection, in time, leaving nothing."""
    assert report["error"] is None, show(report)
    assert not report["cancelled"], show(report)
    assert report["peer"] == [address, TLS_PORT], show(report)
    assert report["tls"] == {"version": "TLSv1.3", "names": [NAME]}, show(report)
    assert_timely(report, ideal)
    assert_no_leak(report)


def dual_stack(
    lab: Lab, certs: Certificates, host: str, kinds: tuple[Kind, Kind], *, hints: bool = False
) -> tuple[str, str]:
    """*host*'s IPv6 and IPv4 address, serving *kinds*; A and AAAA late with HTTPS *hints*."""
    (v6,), (v4,) = lab.allocate(v6=1, v4=1)
    if hints:  # the A and AAAA answers come a second late, the HTTPS record's hints at once
        zone = dual_stack_zone(host, v6, v4, aaaa={"delay": SLOW}, a={"delay": SLOW})
        zone[host].update(https_zone(f"1 . alpn=h2 ipv6hint={v6} ipv4hint={v4}"))
    else:
        zone = dual_stack_zone(host, v6, v4)
    lab.configure(rules={v6: FAST, v4: FAST}, zone=zone)
    listen(lab, certs, kinds[0], [v6])
    listen(lab, certs, kinds[1], [v4])
    return v6, v4


def test_wrong_certificate_first_the_next_address_wins_at_once(
    lab: Lab, loop_name: str, certs: Certificates
) -> None:
    host = f"tls-wrong-{loop_name}.lab.test"
    v6, v4 = dual_stack(lab, certs, host, ("wrong", "good"))
    report = open_tls(lab, loop_name, certs, host)
    # TCP and TLS to v6 (two RTTs, its certificate refused), then the same to v4,
    # started at once by that failure: four RTTs, well within one attempt delay.
    assert_tls_won(report, v4, 4 * RTT)
    assert report["elapsed"] < DELAY, show(report)
    assert stages(report) == wrong_then_good(v6, v4), show(report)
    [failed] = [e for e in report["events"] if e["type"] == "TLSFailed"]
    assert failed["error"] == "SSLCertVerificationError", show(report)


def test_silent_server_costs_one_attempt_delay(
    lab: Lab, loop_name: str, certs: Certificates
) -> None:
    host = f"tls-silent-{loop_name}.lab.test"
    v6, v4 = dual_stack(lab, certs, host, ("silent", "good"))
    report = open_tls(lab, loop_name, certs, host)
    # v6's TCP connects and its ClientHello goes unanswered; v4 starts when the attempt
    # delay runs out (the draft's adjustment changes nothing: one RTT is far below it)
    # and wins two RTTs later; v6, still handshaking, is closed.
    assert_tls_won(report, v4, DELAY + 2 * RTT)
    assert stages(report) == [
        ("TLSStarted", v6),
        ("TLSStarted", v4),
        ("TLSSucceeded", v4),
        ("AttemptSucceeded", v4),
        ("AttemptCancelled", v6),
    ], show(report)


def test_cancelled_mid_handshake_leaves_nothing_open(
    lab: Lab, loop_name: str, certs: Certificates
) -> None:
    host = f"tls-cancel-{loop_name}.lab.test"
    v6, v4 = dual_stack(lab, certs, host, ("silent", "silent"))
    cancel_at = DELAY + 0.1  # both attempts handshaking with servers that never answer
    report = open_tls(lab, loop_name, certs, host, cancel_after=cancel_at)
    assert report["cancelled"], show(report)
    assert report["peer"] is None, show(report)
    assert_timely(report, cancel_at)
    assert_no_leak(report)
    assert stages(report) == [
        ("TLSStarted", v6),
        ("TLSStarted", v4),
        ("AttemptCancelled", v6),
        ("AttemptCancelled", v4),
    ], show(report)


def test_https_record_hints_raced_with_tls(lab: Lab, loop_name: str, certs: Certificates) -> None:
    # HTTPS record and TLS in the race together: the IPv6 hint serves the wrong certificate.
    host = f"tls-hints-{loop_name}.lab.test"
    v6, v4 = dual_stack(lab, certs, host, ("wrong", "good"), hints=True)
    report = open_tls(lab, loop_name, certs, host, resolver=RESOLVER)
    assert_tls_won(report, v4, 4 * RTT)  # as without the record, a second before A/AAAA
    assert len(chosen(report)) == 1, show(report)
    assert stages(report) == wrong_then_good(v6, v4), show(report)
