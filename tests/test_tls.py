"""TLS inside the race (Happy Eyeballs v3, ``tls_in_race=True``), on real TLS over loopback.

Each scenario has listeners on 127.0.0.1, 127.0.0.2, ... (one port), each a
``good`` TLS server (a certificate for the name asked), a ``wrong`` one (a valid
certificate for another name) or a ``silent`` one (accepts TCP, never answers the
ClientHello); see ``tls_helpers``. The resolver answers them in that order. Every
test runs on asyncio, uvloop and eager tasks (the ``run`` fixture, which fails on
anything left on the loop), and most count descriptors too.

Timings are on real sockets, so their bounds are generous: a wrong certificate is
found in milliseconds, far below the attempt delays used here.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import happydial
from happydial import (
    AddressHistory,
    AttemptCancelled,
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    TLSFailed,
    TLSStarted,
    TLSSucceeded,
    TraceEvent,
    _tls,
    failed_addr_infos,
)
from happydial._cli import Environment, main
from happydial._history import failure_kind
from happydial._schedule import Schedule
from happydial.testing import FakeNetwork

from .conftest import Runner
from .tls_helpers import NAME, Certificates, Kind, Listener, addr_info, listeners, make_certificates


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def resolver_of(
    opened: list[Listener],
) -> Callable[[str, int, int], Awaitable[list[happydial.AddrInfoType]]]:
    """No IPv6 answer; the listeners' addresses, in order, for IPv4."""

    async def resolve(host: str, port: int, family: int) -> list[happydial.AddrInfoType]:
        assert host == NAME
        if family == socket.AF_INET6:
            raise socket.gaierror(socket.EAI_NODATA, "no AAAA")
        return [addr_info(listener.host, port) for listener in opened]

    return resolve


class Recorder:
    """A trace callable that keeps the events, with times from the call's start."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []
        self.start = asyncio.get_running_loop().time()

    def __call__(self, event: TraceEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def at(self, event: Any) -> float:
        return float(event.time - self.start)


async def open_tls(
    certs: Certificates, opened: list[Listener], **options: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await happydial.open_connection(
        NAME,
        opened[0].port,
        ssl=certs.client_context(),
        tls_in_race=True,
        resolver=resolver_of(opened),
        **options,
    )


async def close(writer: asyncio.StreamWriter) -> None:
    """Close at once: a graceful TLS close would race the server's greeting."""
    writer.transport.abort()
    await writer.wait_closed()


@pytest.fixture
def scenario(certs: Certificates) -> Callable[..., Any]:
    def make(*kinds: Kind) -> Any:
        return listeners(certs, *kinds)

    return make


# -- the scenarios ------------------------------------------------------------


def test_a_wrong_certificate_first_wins_on_the_good_one_at_once(
    run: Runner[Any], certs: Certificates, no_fd_leak: None
) -> None:
    async def main() -> None:
        with listeners(certs, "wrong", "good") as opened:
            trace = Recorder()
            reader, writer = await open_tls(certs, opened, happy_eyeballs_delay=1.0, trace=trace)
            elapsed = asyncio.get_running_loop().time() - trace.start
            try:
                assert writer.get_extra_info("peername")[0] == "127.0.0.2"
                # The server spoke first; nothing it said before the hand-over was lost.
                assert await reader.readline() == b"hello from 127.0.0.2\n"
            finally:
                await close(writer)
        # Well within one attempt delay: the TLS failure started the next one at once.
        assert elapsed < 1.0
        failed = trace.of(TLSFailed)
        assert [(e.attempt, e.addr_info[4][0]) for e in failed] == [(0, "127.0.0.1")]
        assert isinstance(failed[0].error, ssl.SSLCertVerificationError)
        assert trace.of(AttemptFailed)[0].error is failed[0].error
        second = trace.of(AttemptStarted)[1]
        assert second.addr_info[4][0] == "127.0.0.2"
        assert trace.at(second) - trace.at(failed[0]) < 0.1
        kinds = [type(e) for e in trace.events if hasattr(e, "attempt")]
        assert kinds == [
            AttemptStarted,
            TLSStarted,
            TLSFailed,
            AttemptFailed,
            AttemptStarted,
            TLSStarted,
            TLSSucceeded,
            AttemptSucceeded,
        ]
        assert (opened[0].handshakes, opened[1].handshakes) == (0, 1)

    run(main)


def test_a_server_that_never_answers_the_client_hello_costs_one_attempt_delay(
    run: Runner[Any], certs: Certificates, no_fd_leak: None
) -> None:
    delay = 0.3

    async def main() -> None:
        with listeners(certs, "silent", "good") as opened:
            trace = Recorder()
            reader, writer = await open_tls(certs, opened, happy_eyeballs_delay=delay, trace=trace)
            try:
                assert await reader.readline() == b"hello from 127.0.0.2\n"
            finally:
                await close(writer)
        first, second = trace.of(AttemptStarted)
        # TCP connected at once on loopback: the TLS stage did not move the next start.
        assert trace.at(trace.of(TLSStarted)[0]) - trace.at(first) < 0.05
        # Not before the delay (uvloop's timers tick in whole milliseconds: 5 ms of slack).
        assert delay - 0.005 <= trace.at(second) - trace.at(first) < delay + 0.15
        assert [e.attempt for e in trace.of(AttemptCancelled)] == [0]  # mid-handshake

    run(main)


def test_every_attempt_failing_names_each_address_and_the_history_says_tls(
    run: Runner[Any], certs: Certificates, no_fd_leak: None
) -> None:
    async def main() -> None:
        with listeners(certs, "wrong", "wrong") as opened:
            history = AddressHistory()
            with pytest.raises(ssl.SSLCertVerificationError) as caught:
                await open_tls(certs, opened, history=history)
            assert [a[4][0] for a in failed_addr_infos(caught.value)] == [
                "127.0.0.1",
                "127.0.0.2",
            ]
            assert "in the TLS handshake (TCP had connected)" in caught.value.__notes__
            assert {e["address"]: e["failure"] for e in history.to_json()["entries"]} == {
                "127.0.0.1": "tls",
                "127.0.0.2": "tls",
            }
            with pytest.raises(ExceptionGroup) as group:
                await open_tls(certs, opened, all_errors=True)
            assert [type(e) for e in group.value.exceptions] == [ssl.SSLCertVerificationError] * 2

    run(main)


def test_a_tcp_failure_in_a_tls_race_is_no_tls_failure(
    run: Runner[Any], certs: Certificates, no_fd_leak: None
) -> None:
    async def main() -> None:
        with listeners(certs, "good") as opened:
            port = opened[0].port

            async def resolve(host: str, port: int, family: int) -> list[happydial.AddrInfoType]:
                if family == socket.AF_INET6:
                    raise socket.gaierror(socket.EAI_NODATA, "no AAAA")
                # Nothing listens on 127.0.0.9: refused, in the TCP stage.
                return [addr_info("127.0.0.9", port), addr_info("127.0.0.1", port)]

            trace, history = Recorder(), AddressHistory()
            _, writer = await happydial.open_connection(
                NAME,
                port,
                ssl=certs.client_context(),
                tls_in_race=True,
                resolver=resolve,
                trace=trace,
                history=history,
            )
            await close(writer)
        (failed,) = trace.of(AttemptFailed)
        assert isinstance(failed.error, ConnectionRefusedError)
        assert trace.of(TLSFailed) == []
        assert [e.attempt for e in trace.of(TLSStarted)] == [1]
        assert failure_kind(failed.error) == "refused"

    run(main)


def test_ssl_handshake_timeout_is_per_attempt(
    run: Runner[Any], certs: Certificates, no_fd_leak: None
) -> None:
    async def main() -> None:
        with listeners(certs, "silent", "good") as opened:
            trace, history = Recorder(), AddressHistory()
            reader, writer = await open_tls(
                certs,
                opened,
                happy_eyeballs_delay=None,  # one at a time: only the handshake timeout moves on
                ssl_handshake_timeout=0.2,
                trace=trace,
                history=history,
            )
            assert await reader.readline() == b"hello from 127.0.0.2\n"
            await close(writer)
        (failed,) = trace.of(TLSFailed)
        assert isinstance(failed.error, ConnectionAbortedError)
        assert 0.2 <= trace.at(failed) - trace.at(trace.of(TLSStarted)[0]) < 0.35
        assert failure_kind(failed.error) == "tls"
        assert not history.is_cooling(("127.0.0.2", opened[0].port))
        assert history.is_cooling(("127.0.0.1", opened[0].port))

    run(main)


def test_handshakes_that_race_leave_one_transport_and_one_protocol(
    run: Runner[Any], certs: Certificates, no_fd_leak: None
) -> None:
    async def main() -> None:
        made: list[asyncio.Protocol] = []

        def factory() -> asyncio.Protocol:
            made.append(asyncio.Protocol())
            return made[-1]

        with listeners(certs, "good", "good", "good") as opened:
            for _ in range(5):
                transport, protocol = await happydial.create_connection(
                    factory,
                    NAME,
                    opened[0].port,
                    ssl=certs.client_context(),
                    tls_in_race=True,
                    happy_eyeballs_delay=0,  # every handshake at once
                    resolver=resolver_of(opened),
                )
                assert protocol is made[-1]
                assert transport.get_protocol() is protocol
                transport.abort()
                await asyncio.sleep(0.01)  # the aborted transport's connection_lost
        assert len(made) == 5  # once per call, for the winner

    run(main)


def test_a_cancellation_at_any_iteration_leaks_nothing(
    run: Runner[Any], certs: Certificates, no_fd_leak: None
) -> None:
    async def main() -> None:
        with listeners(certs, "wrong", "good") as opened:
            outcomes: list[str] = []
            # Every iteration early on (lookups, TCP, the first handshake); then
            # coarser, until the call has returned a few times (handshakes take
            # milliseconds, hundreds of iterations).
            for k in [*range(60), *range(60, 5000, 7)]:
                if outcomes.count("returned") >= 3:
                    break
                task = asyncio.ensure_future(open_tls(certs, opened, happy_eyeballs_delay=0.05))
                for _ in range(k):
                    await asyncio.sleep(0)
                task.cancel()
                try:
                    _, writer = await task
                except asyncio.CancelledError:
                    outcomes.append("cancelled")
                else:
                    outcomes.append("returned")
                    await close(writer)
            assert set(outcomes) == {"cancelled", "returned"}

    run(main)


# -- arguments ---------------------------------------------------------------------------


def test_tls_in_race_needs_ssl_and_checks_its_arguments(run: Runner[Any]) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match=r"tls_in_race=True needs ssl .* got ssl=None"):
            await happydial.open_connection("h.test", 443, tls_in_race=True)
        with pytest.raises(ValueError, match=r"got ssl=False"):
            await happydial.open_connection("h.test", 443, ssl=False, tls_in_race=True)
        with pytest.raises(TypeError, match=r"tls_in_race must be a bool, got 1"):
            await happydial.open_connection("h.test", 443, ssl=True, tls_in_race=1)
        with pytest.raises(ValueError, match=r"ssl_handshake_timeout must be .* got -1"):
            await happydial.open_connection(
                "h.test", 443, ssl=True, tls_in_race=True, ssl_handshake_timeout=-1
            )

    run(main)


# -- bugs in the caller's code end the race, and nothing is left ------------------------


@pytest.mark.parametrize("raising", [TLSStarted, TLSSucceeded])
def test_a_trace_that_raises_in_the_tls_stage(
    run: Runner[Any], certs: Certificates, no_fd_leak: None, raising: type[Any]
) -> None:
    class TraceBugError(Exception):
        pass

    def trace(event: TraceEvent) -> None:
        if isinstance(event, raising):
            raise TraceBugError(type(event).__name__)

    async def main() -> None:
        with (
            listeners(certs, "good") as opened,
            pytest.raises(TraceBugError, match=raising.__name__),
        ):
            await open_tls(certs, opened, trace=trace)

    run(main)


def test_a_protocol_factory_that_raises(
    run: Runner[Any], certs: Certificates, no_fd_leak: None
) -> None:
    def factory() -> asyncio.Protocol:
        raise ZeroDivisionError

    async def main() -> None:
        with listeners(certs, "good") as opened, pytest.raises(ZeroDivisionError):
            await happydial.create_connection(
                factory,
                NAME,
                opened[0].port,
                ssl=certs.client_context(),
                tls_in_race=True,
                resolver=resolver_of(opened),
            )

    run(main)


def test_a_handshake_done_as_the_race_ends_is_aborted(
    run: Runner[Any], certs: Certificates, no_fd_leak: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race ends after an attempt's handshake completed but before its task saw it
    # (two handshakes done in one loop iteration): asyncio starts a graceful TLS close
    # on the cancelled one, and the race must abort it and wait for it instead.
    races: list[_tls.TLSRace] = []
    original_init = _tls.TLSRace.__init__
    original_made = _tls._Holding.connection_made

    def init(self: _tls.TLSRace, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        races.append(self)

    def made(self: _tls._Holding, transport: asyncio.BaseTransport) -> None:
        original_made(self, transport)
        # Runs before the handshake's task resumes: ends the race under it.
        asyncio.get_running_loop().call_soon(races[-1].report_bug, KeyError("ended"))

    monkeypatch.setattr(_tls.TLSRace, "__init__", init)
    monkeypatch.setattr(_tls._Holding, "connection_made", made)

    async def main() -> None:
        with listeners(certs, "good") as opened:
            with pytest.raises(KeyError, match="ended"):
                await open_tls(certs, opened)
            assert races[-1].holders == {}

    run(main)


# -- the next start while a connected attempt handshakes (virtual clock) -----------------


class HangingTLS(_tls.TLSRace):
    """TLS stages that last until the race ends: what moves is only the schedule's timer."""

    __slots__ = ("ended",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ended = asyncio.Event()
        self.when_finished = self.ended.set

    async def _handshake(self, index: int, sock: Any, holder: Any) -> None:  # noqa: ARG002 - the hook's signature
        await self.ended.wait()


@pytest.mark.parametrize(
    ("delay", "tcp_time", "second_at"),
    [
        (0.25, 0.01, 0.25),  # TCP well within the delay: the delay decides
        (0.25, 0.2, 0.4),  # TCP took 0.2 s: TLS gets one more such round trip
        (1.9, 1.5, 2.0),  # but the next start is never pushed past RFC 8305's 2 s maximum
        (3.0, 2.5, 3.0),  # nor is a longer delay shortened
    ],
)
def test_a_connected_attempt_handshaking_moves_the_next_start(
    vrun: Runner[Any], delay: float, tcp_time: float, second_at: float
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        net = FakeNetwork(loop)
        net.script("192.0.2.1", delay=tcp_time)
        net.script("192.0.2.2", outcome="hang")
        trace = Recorder()
        stage = _tls.TLSStage(asyncio.Protocol, ssl.create_default_context(), NAME, None, None)
        race = HangingTLS(stage, loop, delay, socket_factory=net.socket_factory, trace=trace)
        race.add([addr_info("192.0.2.1", 443), addr_info("192.0.2.2", 443)])
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(4):
                await race.connect(all_errors=False)
        assert [round(trace.at(e), 6) for e in trace.of(AttemptStarted)] == [0.0, second_at]
        assert [round(trace.at(e), 6) for e in trace.of(TLSStarted)] == [tcp_time]
        assert net.open_sockets == []

    vrun(main)


def test_the_schedule_moves_only_a_pending_start_after_the_latest_attempt() -> None:
    schedule: Schedule[str] = Schedule(0.25, lambda e: isinstance(e, OSError))
    schedule.add(["a", "b", "c"])
    schedule.start()
    assert schedule.step() == 0
    schedule.launched(0, 0.0)
    schedule.progressed(0, 0.1)  # sooner than the delay: no change
    assert schedule.next_at == 0.25
    schedule.progressed(0, 0.4)
    assert schedule.next_at == 0.4
    schedule.delay_elapsed()
    assert schedule.step() == 1
    schedule.launched(1, 0.4)
    schedule.progressed(0, 5.0)  # an older attempt: the newer one's delay stands
    assert schedule.next_at == 0.65
    schedule.failed(1, OSError())  # the latest failed: the next start is due now
    schedule.progressed(1, 5.0)
    assert schedule.next_at is None


# -- the hand-over protocol, in isolation -----------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None
        self.aborted = False

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def abort(self) -> None:
        self.aborted = True


class Collecting(asyncio.BufferedProtocol):
    """A buffered protocol with a tiny buffer: data arrives in 3-byte pieces."""

    def __init__(self) -> None:
        self.buffer = bytearray(3)
        self.pieces: list[bytes] = []
        self.calls: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: ARG002 - the protocol's signature
        self.calls.append("made")

    def get_buffer(self, sizehint: int) -> bytearray:  # noqa: ARG002 - the protocol's signature
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.pieces.append(bytes(self.buffer[:nbytes]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(f"lost {exc!r}")


def test_what_arrives_before_the_hand_over_reaches_the_callers_protocol(
    run: Runner[Any],
) -> None:
    async def main() -> None:
        holder = _tls._Holding()
        holder.abort()  # before the handshake completed: nothing to abort
        transport = FakeTransport()
        holder.connection_made(transport)
        holder.data_received(b"hello")
        holder.eof_received()
        holder.connection_lost(None)
        protocol = Collecting()
        holder.hand_over(protocol)
        assert transport.protocol is protocol
        assert protocol.pieces == [b"hel", b"lo"]
        assert protocol.calls == ["made", "lost None"]
        holder.abort()
        assert transport.aborted
        assert holder.closed

        later = _tls._Holding()
        later.connection_made(FakeTransport())
        reader = asyncio.StreamReader()
        later.hand_over(asyncio.StreamReaderProtocol(reader))
        later.data_received(b"after")  # after the hand-over: passed on at once
        assert await reader.read(5) == b"after"
        error = ConnectionResetError()
        later.connection_lost(error)
        assert reader.exception() is error

    run(main)


def test_a_handed_over_protocol_is_taken_back_when_the_call_fails(run: Runner[Any]) -> None:
    async def main() -> None:
        holder = _tls._Holding()
        holder.take_back()  # nothing handed over: nothing to do
        transport = FakeTransport()
        holder.connection_made(transport)
        protocol = Collecting()
        holder.hand_over(protocol)
        holder.take_back()
        assert transport.protocol is holder
        assert protocol.calls == ["made", "lost None"]
        holder.connection_lost(None)  # the aborted connection's end: the holder hears it
        assert holder.closed
        assert protocol.calls == ["made", "lost None"]

        lost = _tls._Holding()
        lost.connection_made(FakeTransport())
        lost.connection_lost(None)  # gone before the hand-over
        late = Collecting()
        lost.hand_over(late)
        lost.take_back()
        assert late.calls == ["made", "lost None"]  # once

    run(main)


class FakeSocket:
    """What a TLS-stage abort looks at: uvloop's reference count, and shutdown."""

    def __init__(self, error: OSError | None = None) -> None:
        self._io_refs = 0
        self.shutdowns: list[int] = []
        self.error = error

    def shutdown(self, how: int) -> None:
        if self.error is not None:
            raise self.error
        self.shutdowns.append(how)


def test_an_abort_on_uvloop_waits_for_the_transport_to_hold_the_socket(run: Runner[Any]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        task = asyncio.ensure_future(ended)
        sock = FakeSocket()
        attempt = _tls._TLSAttempt(sock, _tls._Holding(), task, wait_for_transport=True)  # type: ignore[arg-type]
        assert attempt.abort() is task
        assert sock.shutdowns == []  # not yet: the transport does not hold it
        await asyncio.sleep(0)
        assert sock.shutdowns == []
        sock._io_refs = 1  # now it does
        await asyncio.sleep(0)
        assert sock.shutdowns == [socket.SHUT_RDWR]
        ended.set_result(None)
        await task
        attempt.abort()  # the task is over: nothing more
        await asyncio.sleep(0)
        assert sock.shutdowns == [socket.SHUT_RDWR]

        failing = FakeSocket(OSError(107, "not connected"))
        task = asyncio.ensure_future(loop.create_future())
        attempt = _tls._TLSAttempt(failing, _tls._Holding(), task, wait_for_transport=False)  # type: ignore[arg-type]
        attempt.abort()  # already reset: the handshake fails anyway
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)


def test_waiting_for_closes_outlasts_a_cancellation(run: Runner[Any]) -> None:
    async def main() -> None:
        first, second = _tls._Holding(), _tls._Holding()
        waiter = asyncio.ensure_future(_tls._wait_closed([first, second]))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.sleep(0)
        assert not waiter.done()  # still waiting for both to close
        first.connection_lost(None)
        await asyncio.sleep(0)
        assert not waiter.done()
        second.connection_lost(None)
        with pytest.raises(asyncio.CancelledError):
            await waiter

    run(main)


def test_waiting_for_closes_gives_up_on_a_transport_that_never_says(
    run: Runner[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tls, "_CLOSE_ITERATIONS", 3)

    async def main() -> None:
        holder = _tls._Holding()
        await _tls._wait_closed([holder])  # returns: a loop that never says cannot hang us
        assert not holder.closed

    run(main)


# -- the command line ---------------------------------------------------------------------


@pytest.fixture
def trusting(certs: Certificates, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default context (``ssl=True``, ``--tls``) trusts the test CA."""
    context = certs.client_context()
    monkeypatch.setattr(ssl, "create_default_context", lambda *_, **__: context)


def run_cli(argv: list[str], opened: list[Listener]) -> tuple[int, str]:
    out = io.StringIO()
    env = Environment(
        stdout=out, stderr=out, connect_options=lambda: {"resolver": resolver_of(opened)}
    )
    status = main([*argv, NAME, str(opened[0].port)], env=env)
    return status, out.getvalue()


def test_the_command_line_shows_the_tls_stage(certs: Certificates, trusting: None) -> None:
    with listeners(certs, "wrong", "good") as opened:
        status, out = run_cli(["--tls"], opened)
    port = opened[0].port
    lines = [line.split(" ms  ", 1)[1] for line in out.splitlines() if " ms  " in line]
    # The OpenSSL message ends with a source line number that varies between builds.
    attempts = [line.split(" (_ssl.c")[0] for line in lines if line.startswith("attempt")]
    mismatch = (
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch,"
        " certificate is not valid for 'tls.test'."
    )
    assert status == 0, out
    assert attempts == [
        f"attempt 0 127.0.0.1:{port} started",
        f"attempt 0 127.0.0.1:{port} TCP connected, TLS handshake started",
        f"attempt 0 127.0.0.1:{port} TLS handshake failed: {mismatch}",
        f"attempt 0 127.0.0.1:{port} failed: {mismatch}",
        f"attempt 1 127.0.0.2:{port} started",
        f"attempt 1 127.0.0.2:{port} TCP connected, TLS handshake started",
        f"attempt 1 127.0.0.2:{port} TLS handshake done",
        f"attempt 1 127.0.0.2:{port} connected",
    ]
    assert out.splitlines()[-1].startswith(f"connected to 127.0.0.2:{port} in ")


def test_the_command_line_without_a_trusted_certificate_fails(certs: Certificates) -> None:
    # The real default context does not trust the test CA: every handshake fails.
    with listeners(certs, "good") as opened:
        status, out = run_cli(["--tls", "--json"], opened)
    result = json.loads(out)
    assert status == 1
    assert result["ok"] is False
    tls = [e for e in result["timeline"] if e["event"] == "TLSFailed"]
    assert [e["attempt"] for e in tls] == [0]
    assert "certificate verify failed" in tls[0]["error"]
