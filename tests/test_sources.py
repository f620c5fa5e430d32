"""Source address discovery: the UDP probe and the per-network cache."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

import happydial
from happydial import AddrInfoType, SourceAddressCache, probe_source, sort_addr_infos
from happydial._sources import bound_sources

V4 = socket.AF_INET
V6 = socket.AF_INET6
STREAM = socket.SOCK_STREAM
TCP = socket.IPPROTO_TCP


def v4(host: str, port: int = 443) -> AddrInfoType:
    return (V4, STREAM, TCP, "", (host, port))


def v6(host: str, port: int = 443, scope_id: int = 0) -> AddrInfoType:
    return (V6, STREAM, TCP, "", (host, port, 0, scope_id))


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(V6, socket.SOCK_DGRAM) as sock:
            sock.connect(("::1", 9))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")


# ---------------------------------------------------------------------------
# probe_source
# ---------------------------------------------------------------------------


def test_probe_ipv4_loopback() -> None:
    assert probe_source(v4("127.0.0.1")) == "127.0.0.1"
    assert probe_source(v4("127.0.0.9", 0)) == "127.0.0.1"  # port 0 is fine: nothing is sent


@needs_ipv6
def test_probe_ipv6_loopback() -> None:
    assert probe_source(v6("::1")) == "::1"


@needs_ipv6
def test_probe_link_local_without_scope_has_no_source() -> None:
    # connect() refuses a link-local destination without an interface (EINVAL).
    assert probe_source(v6("fe80::1")) is None


@needs_ipv6
def test_probe_link_local_with_scope_drops_the_zone() -> None:
    lo = socket.if_nametoindex("lo")
    # On lo there is no fe80:: address and no route: no source (ENETUNREACH).
    assert probe_source(v6("fe80::1", scope_id=lo)) is None


def test_probe_unsupported_family_has_no_source(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ipv6(*args: Any) -> socket.socket:
        raise OSError(97, "Address family not supported by protocol")

    monkeypatch.setattr(socket, "socket", no_ipv6)
    assert probe_source(v6("2001:db8::1")) is None


def test_probe_sends_nothing_and_closes_its_socket() -> None:
    # A UDP listener sees no datagram from a probe, and no socket is left open
    # (the suite turns ResourceWarning into an error).
    with socket.socket(V4, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.setblocking(False)
        port = listener.getsockname()[1]
        assert probe_source(v4("127.0.0.1", port)) == "127.0.0.1"
        with pytest.raises(BlockingIOError):
            listener.recv(1)


def test_probe_source_strips_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    class Scoped:
        def __init__(self, *args: Any) -> None:
            pass

        def connect(self, address: Any) -> None:
            pass

        def getsockname(self) -> tuple[str, int, int, int]:
            return ("fe80::2%eth0", 5555, 0, 2)

        def close(self) -> None:
            pass

    monkeypatch.setattr(socket, "socket", Scoped)
    assert probe_source(v6("fe80::1", scope_id=2)) == "fe80::2"


@pytest.mark.parametrize(
    ("addr_info", "error", "match"),
    [
        (v4("localhost"), ValueError, "'localhost' is not an IP address"),
        ((V4, STREAM, TCP, "", ("::1", 80)), ValueError, "not an IP address of the entry's family"),
        ("127.0.0.1", TypeError, r"addr_info\[0\] must be a 5-tuple"),
        ((V4, STREAM, TCP, "", ("127.0.0.1", 70000)), ValueError, "port must be in 0-65535"),
        (v4("127.0.0.1\x00"), ValueError, "is not an IP address"),
        ((V6, STREAM, TCP, "", ("::1", 80, 2**21, 0)), ValueError, "addr_info: .*flowinfo must"),
    ],
)
def test_probe_bad_input(addr_info: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        probe_source(addr_info)


# ---------------------------------------------------------------------------
# SourceAddressCache
# ---------------------------------------------------------------------------


class FakeProbe:
    """Answers from a table and counts the probes."""

    def __init__(self, answers: dict[str, str | None]) -> None:
        self.answers = answers
        self.probed: list[AddrInfoType] = []

    def __call__(self, addr_info: AddrInfoType) -> str | None:
        self.probed.append(addr_info)
        return self.answers[addr_info[4][0]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cache_probes_once_per_destination_within_ttl() -> None:
    probe = FakeProbe({"192.0.2.10": "192.0.2.2", "2001:db8::10": None})
    clock = FakeClock()
    cache = SourceAddressCache(ttl=10.0, probe=probe, clock=clock)
    assert cache(v4("192.0.2.10")) == "192.0.2.2"
    assert cache(v6("2001:db8::10")) is None  # "no source" is remembered too
    clock.now += 9.999
    assert cache(v4("192.0.2.10", port=80)) == "192.0.2.2"  # the port does not matter
    assert cache(v6("2001:db8::10")) is None
    assert [ai[4][0] for ai in probe.probed] == ["192.0.2.10", "2001:db8::10"]
    assert len(cache) == 2


def test_cache_entry_expires_after_ttl() -> None:
    probe = FakeProbe({"2001:db8::10": None})
    clock = FakeClock()
    cache = SourceAddressCache(ttl=10.0, probe=probe, clock=clock)
    cache(v6("2001:db8::10"))
    clock.now += 10.0
    probe.answers["2001:db8::10"] = "2001:db8::2"  # IPv6 came up meanwhile
    assert cache(v6("2001:db8::10")) == "2001:db8::2"
    assert len(probe.probed) == 2
    assert len(cache) == 1


def test_cache_invalidate_forgets_everything() -> None:
    probe = FakeProbe({"192.0.2.10": "192.0.2.2"})
    cache = SourceAddressCache(probe=probe, clock=FakeClock())
    cache(v4("192.0.2.10"))
    cache.invalidate()
    assert len(cache) == 0
    cache(v4("192.0.2.10"))
    assert len(probe.probed) == 2


def test_cache_keys_on_family_host_and_scope() -> None:
    probe = FakeProbe({"fe80::1": "fe80::2"})
    cache = SourceAddressCache(probe=probe, clock=FakeClock())
    cache(v6("fe80::1", scope_id=2))
    cache(v6("fe80::1", scope_id=3))  # another interface: another answer
    cache(v6("fe80::1", scope_id=2))
    cache((V6, STREAM, TCP, "", ("fe80::1", 443)))  # a 2-tuple sockaddr is scope 0
    assert [ai[4][3] if len(ai[4]) == 4 else 0 for ai in probe.probed] == [2, 3, 0]


def test_cache_drops_the_oldest_answer_when_full() -> None:
    probe = FakeProbe({f"192.0.2.{i}": "192.0.2.2" for i in range(1, 5)})
    clock = FakeClock()
    cache = SourceAddressCache(max_entries=2, probe=probe, clock=clock)
    cache(v4("192.0.2.1"))
    cache(v4("192.0.2.2"))
    clock.now += 20  # both expired: a re-probe of .1 makes it the newest
    cache(v4("192.0.2.1"))
    cache(v4("192.0.2.3"))  # full: .2, the oldest answer, goes
    assert len(cache) == 2
    cache(v4("192.0.2.1"))  # still remembered
    cache(v4("192.0.2.2"))  # forgotten: probed again
    assert [ai[4][0][-1] for ai in probe.probed] == ["1", "2", "1", "3", "2"]


def test_cache_is_a_sources_callable() -> None:
    cache = SourceAddressCache()
    infos = [v4("127.0.0.1"), v4("127.0.0.2")]
    assert sort_addr_infos(infos, sources=cache) == infos
    assert len(cache) == 2


@needs_ipv6
def test_cache_sorts_loopback_like_getaddrinfo() -> None:
    infos = [v4("127.0.0.1"), v6("::1")]
    assert sort_addr_infos(infos, sources=SourceAddressCache()) == [infos[1], infos[0]]


def test_cache_shared_between_threads() -> None:
    hosts = [f"192.0.2.{i}" for i in range(50)]
    probe = FakeProbe(dict.fromkeys(hosts, "192.0.2.200"))
    cache = SourceAddressCache(max_entries=10, probe=probe)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                for host in hosts:
                    assert cache(v4(host)) == "192.0.2.200"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 10


def test_cache_repr() -> None:
    cache = SourceAddressCache(ttl=5, max_entries=3, probe=lambda _: None)
    cache(v4("192.0.2.1"))
    assert repr(cache) == "<SourceAddressCache ttl=5.0 max_entries=3 entries=1>"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ttl": "10"}, TypeError, "ttl must be a number of seconds, got '10'"),
        ({"ttl": True}, TypeError, "ttl must be a number"),
        ({"ttl": 0}, ValueError, "ttl must be positive and finite, got 0"),
        ({"ttl": float("inf")}, ValueError, "ttl must be positive and finite, got inf"),
        ({"ttl": float("nan")}, ValueError, "ttl must be positive and finite"),
        ({"max_entries": 0}, ValueError, "max_entries must be at least 1, got 0"),
        ({"max_entries": 1.5}, TypeError, "max_entries must be an int"),
        ({"probe": None}, TypeError, "probe must be callable, got None"),
        ({"clock": 3}, TypeError, "clock must be callable, got 3"),
    ],
)
def test_cache_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SourceAddressCache(**kwargs)


def test_default_source_cache_is_process_wide() -> None:
    cache = happydial.default_source_cache()
    assert isinstance(cache, SourceAddressCache)
    assert happydial.default_source_cache() is cache


# ---------------------------------------------------------------------------
# bound_sources, for connect() with a local address
# ---------------------------------------------------------------------------


def test_bound_sources_use_the_bound_address() -> None:
    fallback = FakeProbe({"2001:db8::10": "2001:db8::2", "2001:db8::11": "2001:db8::2"})
    local = [v4("192.0.2.7", 0), v4("192.0.2.8", 0), v6("::", 0)]
    sources = bound_sources(local, fallback)
    assert sources(v4("198.51.100.1")) == "192.0.2.7"  # the first of its family
    assert sources(v6("2001:db8::10")) == "2001:db8::2"  # wildcard: the kernel chooses
    assert [ai[4][0] for ai in fallback.probed] == ["2001:db8::10"]


def test_bound_sources_other_family_has_no_source() -> None:
    sources = bound_sources([v6("fe80::7%lo", 0), v6("2001:db8::7", 0)], FakeProbe({}))
    assert sources(v4("192.0.2.10")) is None
    assert sources(v6("fe80::1", scope_id=1)) == "fe80::7"
    infos = [v4("192.0.2.10"), v6("2001:db8::10")]
    assert sort_addr_infos(infos, sources=sources) == [infos[1], infos[0]]
    wildcard = bound_sources([v4("0.0.0.0", 0)], FakeProbe({"192.0.2.10": "192.0.2.2"}))
    assert wildcard(v4("192.0.2.10")) == "192.0.2.2"
