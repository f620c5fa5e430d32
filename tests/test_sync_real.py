"""happydial.sync on real loopback sockets: live, refused, black holes, threads, recipes.

A black hole without a lab: a listener with a backlog of 0 whose one queue slot is
taken holds every further SYN unanswered on Linux, as a dead path does. The recipes
for urllib3/requests and http.client are run from the guide's own text, so the page
and the tests cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.server
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import happydial
from happydial import sync

from .conftest import open_fds

GUIDE = Path(__file__).parent.parent / "docs" / "guides" / "blocking.md"
LINUX = pytest.mark.skipif(sys.platform != "linux", reason="the full-backlog black hole is Linux's")


def recipe(word: str) -> str:
    """The guide's code block whose caption mentions *word*."""
    blocks = re.findall(
        r"^```\{code-block\} python\n:caption: ([^\n]*)\n\n(.*?)^```",
        GUIDE.read_text(encoding="utf-8"),
        re.MULTILINE | re.DOTALL,
    )
    (source,) = [code for caption, code in blocks if word in caption]
    return str(source)


@contextlib.contextmanager
def black_hole(host: str, port: int = 0) -> Iterator[int]:
    """A port on *host* whose SYNs go unanswered; its number."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as listener:
        listener.bind((host, port))
        listener.listen(0)
        bound = listener.getsockname()[1]
        with socket.socket(family) as filler:
            filler.connect((host, bound))  # takes the one queue slot
            yield bound


@contextlib.contextmanager
def server(host: str = "127.0.0.1") -> Iterator[int]:
    """A listener that accepts and closes every connection, on a thread; its port."""
    listener = socket.socket()
    listener.bind((host, 0))
    listener.listen(1024)
    listener.settimeout(0.05)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def free_port_pair(ipv6_host: str = "::1") -> tuple[socket.socket, int]:
    """A listening 127.0.0.1 socket whose port is also free on *ipv6_host*."""
    for _ in range(50):
        live = socket.socket()
        live.bind(("127.0.0.1", 0))
        port = live.getsockname()[1]
        probe = socket.socket(socket.AF_INET6)
        try:
            probe.bind((ipv6_host, port))
        except OSError:
            live.close()
            continue
        finally:
            probe.close()
        live.listen(16)
        return live, port
    pytest.fail("no port free on both loopbacks")  # pragma: no cover - 50 tries


def test_live_and_refused(no_fd_leak: None) -> None:
    with server() as port, sync.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert sock.getpeername() == ("127.0.0.1", port)
        assert sock.gettimeout() == 5
    with pytest.raises(ConnectionRefusedError) as ours:
        sync.create_connection(("127.0.0.1", port))
    with pytest.raises(ConnectionRefusedError) as theirs:
        socket.create_connection(("127.0.0.1", port))
    # The OS's words, as the stdlib's error has them, and the address besides.
    assert ours.value.strerror == theirs.value.strerror == "Connection refused"
    assert ours.value.filename == f"127.0.0.1:{port}"


def test_a_lone_attempts_error_without_errno_is_kept(
    monkeypatch: pytest.MonkeyPatch, no_fd_leak: None
) -> None:
    # A lone attempt connects blocking; an OSError with no errno there (a signal
    # handler's, say) is raised as it is, not remade from an errno it lacks.
    def connect(self: socket.socket, address: Any) -> None:
        raise OSError("interrupted, with no errno")

    with server() as port:
        monkeypatch.setattr(socket.socket, "connect", connect)
        with pytest.raises(OSError, match=r"^interrupted, with no errno") as caught:
            sync.create_connection(("127.0.0.1", port))
    assert caught.value.errno is None


@LINUX
def test_timeout_zero_raises_what_the_stdlib_raises(no_fd_leak: None) -> None:
    # A non-blocking TCP connect on Linux says EINPROGRESS even on loopback, so the
    # stdlib's create_connection(addr, 0) always fails, and a drop-in does the same.
    with server() as port:
        with pytest.raises(BlockingIOError) as ours:
            sync.create_connection(("127.0.0.1", port), 0)
        with pytest.raises(BlockingIOError) as theirs:
            socket.create_connection(("127.0.0.1", port), 0)
    assert ours.value.errno == theirs.value.errno == errno.EINPROGRESS
    assert ours.value.strerror == theirs.value.strerror


@LINUX
def test_dead_ipv6_first_costs_one_delay(ipv6_loopback: None, no_fd_leak: None) -> None:
    live, port = free_port_pair()
    try:
        with black_hole("::1", port):
            started = time.monotonic()
            with sync.create_connection(("localhost", port)) as sock:
                elapsed = time.monotonic() - started
                assert sock.getpeername() == ("127.0.0.1", port)
    finally:
        live.close()
    assert 0.24 <= elapsed < 2.0  # one 250 ms delay, not a connect timeout


@LINUX
def test_a_black_hole_times_out_like_the_stdlib(no_fd_leak: None) -> None:
    with black_hole("127.0.0.1") as port:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            sync.create_connection(("127.0.0.1", port), timeout=0.2)
        assert 0.19 <= time.monotonic() - started < 2.0
        with pytest.raises(TimeoutError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2)


@LINUX
def test_keyboard_interrupt_from_a_signal_handler_leaks_nothing() -> None:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    with black_hole("127.0.0.1") as hole, black_hole("127.0.0.2") as hole2:
        entries: list[Any] = [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", hole)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", hole2)),
        ]
        before = open_fds()
        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.4)  # mid-race: both attempts in flight
            with pytest.raises(KeyboardInterrupt):
                sync.start_connection(entries)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert open_fds() == before


def test_many_threads_leak_nothing(no_fd_leak: None) -> None:
    threads_before = set(threading.enumerate())
    errors: list[BaseException] = []
    count = 0
    lock = threading.Lock()

    def client(port: int) -> None:
        nonlocal count
        try:
            for _ in range(50):
                sync.create_connection(("127.0.0.1", port), timeout=30).close()
                with lock:
                    count += 1
        except BaseException as exc:  # pragma: no cover - the assertion below says what
            errors.append(exc)

    with server() as port:
        threads = [threading.Thread(target=client, args=(port,)) for _ in range(200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert count == 200 * 50
    assert set(threading.enumerate()) - threads_before == set()


def test_from_a_thread_whose_event_loop_runs(no_fd_leak: None) -> None:
    async def main() -> tuple[str, int]:
        with sync.create_connection(("127.0.0.1", port)) as sock:
            return sock.getpeername()  # type: ignore[no-any-return]

    with server() as port:
        assert asyncio.run(main()) == ("127.0.0.1", port)


def test_real_lookups_on_the_pool(monkeypatch: pytest.MonkeyPatch, no_fd_leak: None) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, family: int = 0, *args: Any) -> Any:
        if host != "dual.test":
            return real(host, port, family, *args)
        if family == socket.AF_INET6:
            time.sleep(1.0)  # a slow AAAA: costs only the resolution delay
            return [(family, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))]
        return [(family, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with server() as port:
        started = time.monotonic()
        with sync.create_connection(("dual.test", port)) as sock:
            assert sock.getpeername() == ("127.0.0.1", port)
        assert time.monotonic() - started < 0.9


def test_a_real_name_that_does_not_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(host: str, port: int, family: int = 0, *args: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known ({family})")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(socket.gaierror, match=r"\(2\)"):  # the A lookup's, as documented
        sync.create_connection(("nowhere.test", 80))


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


@contextlib.contextmanager
def http_server(live: socket.socket) -> Iterator[None]:
    port = live.getsockname()[1]
    live.close()  # its port is free on 127.0.0.1 again: the HTTP server takes it
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Hello)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


@LINUX
def test_requests_with_a_dead_first_address(
    ipv6_loopback: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests
    import urllib3.util.connection

    # Restored after the test: the recipe replaces it for the whole process.
    monkeypatch.setattr(
        urllib3.util.connection, "create_connection", urllib3.util.connection.create_connection
    )
    exec(recipe("urllib3"), {})  # noqa: S102 - the guide's recipe, as a reader runs it
    live, port = free_port_pair()
    with black_hole("::1", port), http_server(live):
        started = time.monotonic()
        response = requests.get(f"http://localhost:{port}/", timeout=5)
        elapsed = time.monotonic() - started
        assert response.text == "hello"
        response.close()
    assert 0.24 <= elapsed < 2.0  # the dead ::1 cost one delay, not the 5 s timeout


@LINUX
def test_http_client_with_a_dead_first_address(ipv6_loopback: None) -> None:
    source = recipe("needs a server")
    namespace: dict[str, Any] = {}
    exec(source.split("\nconnection = ")[0], namespace)  # noqa: S102 - the guide's class
    live, port = free_port_pair()
    with black_hole("::1", port), http_server(live):
        connection = namespace["HappyHTTPConnection"]("localhost", port, timeout=5)
        try:
            started = time.monotonic()
            connection.request("GET", "/")
            assert connection.sock.gettimeout() == 5  # as http.client sets it
            response = connection.getresponse()
            assert response.status == 200
            assert response.read() == b"hello"
            assert 0.24 <= time.monotonic() - started < 2.0
        finally:
            connection.close()


def test_the_nat64_recipe_races_the_synthesised_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    discovery = happydial.Nat64Discovery(network_key=None)
    monkeypatch.setattr(happydial, "default_nat64_discovery", lambda: discovery)
    namespace: dict[str, Any] = {}
    exec(recipe("NAT64"), namespace)  # noqa: S102 - the guide's recipe, as a reader runs it
    connect = namespace["connect_through_nat64"]
    v6 = socket.AF_INET6
    answers = [(v6, socket.SOCK_STREAM, 6, "", ("64:ff9b::c000:aa", 0, 0, 0))]
    asked: list[tuple[str, int]] = []

    def getaddrinfo(host: str, port: int, family: int, type_: int) -> list[Any]:
        asked.append((host, family))
        return answers

    raced: list[tuple[list[Any], dict[str, Any]]] = []

    def start_connection(addr_infos: list[Any], **kwargs: Any) -> str:
        raced.append((list(addr_infos), kwargs))
        return "the socket"

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(sync, "start_connection", start_connection)
    # The DNS64's answer gives the prefix: 93.184.216.34 is 5db8:d822 in it.
    assert connect("93.184.216.34", 443, 5) == "the socket"
    assert asked == [("ipv4only.arpa", v6)]
    assert raced == [
        (
            [(v6, socket.SOCK_STREAM, 6, "", ("64:ff9b::5db8:d822", 443, 0, 0))],
            {"attempt_timeout": 5},
        )
    ]
    # A configured prefix (a PREF64) wins, and nothing is asked.
    discovery.configure("2001:db8:64::/96")
    assert connect("93.184.216.34", 80) == "the socket"
    assert raced[-1][0][0][4] == ("2001:db8:64::5db8:d822", 80, 0, 0)
    assert len(asked) == 1
    # No DNS64 (an answer without the well-known address): a clear error.
    discovery.configure(None)
    answers[:] = [(v6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 0, 0, 0))]
    with pytest.raises(OSError, match=re.escape("no NAT64 prefix to reach 93.184.216.34")):
        connect("93.184.216.34", 80)
