"""TLS inside the race (Happy Eyeballs v3): an attempt wins when its TLS handshake does.

RFC 8305 ends an attempt when TCP connects. The Happy Eyeballs v3 draft
(draft-ietf-happy-happyeyeballs-v3, "Determining successful connection
establishment") says that a client using TLS over TCP SHOULD wait for the TLS
handshake before cancelling the other attempts: a TCP-terminating middlebox, or one
of several addresses serving the wrong certificate, makes TCP succeed where the
connection will not. :class:`TLSRace` is that race:

1. Each attempt connects TCP as in :class:`~happydial._racer.ConnectRace`.
2. When TCP connects, the attempt is not reported to the schedule: its TLS handshake
   starts (``loop.create_connection(sock=..., ssl=...)`` in a task, with the
   attempt's own ``ssl_handshake_timeout``), and the attempt stays pending.
3. The handshake completing is the attempt's success; its failing (a certificate
   error, a reset, the handshake timeout) is the attempt's failure, tagged with its
   address and recorded in the history as ``"tls"``. The schedule's rules are
   unchanged: the failure of the most recent attempt starts the next one at once.
4. The delay while a connected attempt handshakes (the draft: the timer "ought to be
   adjusted" once the transport handshake completes, to leave the TLS handshake its
   time): when the most recent attempt's TCP connects, the next start moves to no
   sooner than one more TCP-handshake time from now (TLS 1.3 needs one round trip,
   and the TCP handshake just measured one), and never later than RFC 8305's maximum
   attempt delay (2 s) after the attempt started. With the usual delay (250 ms) and
   a round trip well below half of it, this changes nothing: a server that accepts
   TCP but never answers the ClientHello costs one attempt delay.

Ownership: from the TLS stage on, the socket belongs to an asyncio transport. The
application protocol is not made per attempt: each handshake runs with a
:class:`_Holding` protocol (which keeps what arrives before the hand-over), and the
caller's ``protocol_factory`` is called once, for the winner, which is handed the
transport as ``loop.create_connection`` would. Every other transport is aborted (no
TLS close_notify exchange: a loser has nothing to say) and waited for until its
connection is lost, so nothing is left on the loop when the call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _trace
from ._addresses import AddrInfoType
from ._connect import RACE_CLASS, connect
from ._errors import mark_tls_stage
from ._racer import ConnectRace

if TYPE_CHECKING:  # only for annotations: importing ssl costs milliseconds
    import ssl

__all__ = ["TLSRace", "TLSStage", "connect_tls"]

# RFC 8305 section 5's recommended Maximum Connection Attempt Delay: the TLS stage
# never pushes the next start later than this after its attempt started.
MAX_ATTEMPT_DELAY = 2.0


class _Holding(asyncio.Protocol):
    """The protocol of one attempt's handshake, until the winner is handed over.

    It keeps the transport (given at the end of the handshake) so that a loser can be
    aborted, and what arrives between the handshake and the hand-over (a server that
    speaks first) so that the caller's protocol sees all of it.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received: list[bytes] = []
        self.target: asyncio.BaseProtocol | None = None
        self.lost: list[Exception | None] = []  # [exc] once connection_lost came
        self.closed = False  # connection_lost came

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The TLS handshake completed."""
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Keep it for the caller's protocol (or pass it on, once handed over)."""
        if self.target is None:
            self.received.append(data)
        else:
            _feed(self.target, data)

    def eof_received(self) -> None:
        """TLS closes on EOF whatever is returned; the hand-over sees the loss."""

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: tell the caller's protocol, if it was handed over."""
        if self.target is None:
            self.lost.append(exc)
        else:
            self.target.connection_lost(exc)
        self.closed = True

    def take_back(self) -> None:
        """Undo the hand-over (the call is failing after all): the caller's protocol is lost.

        The caller's protocol saw ``connection_made``, so it sees ``connection_lost`` now
        (unless it already did); the holder hears the end of the connection itself.
        """
        target, self.target = self.target, None
        if target is not None:
            self.transport.set_protocol(self)  # type: ignore[union-attr]
            if not self.closed:
                target.connection_lost(None)

    def abort(self) -> None:
        """Close the connection now, if the handshake had completed."""
        if self.transport is not None:
            self.transport.abort()

    def hand_over(self, protocol: asyncio.BaseProtocol) -> None:
        """Make *protocol* the transport's, as ``loop.create_connection`` would have."""
        transport: asyncio.Transport = self.transport  # type: ignore[assignment]
        transport.set_protocol(protocol)
        self.target = protocol  # a connection_lost still to come goes to it
        protocol.connection_made(transport)
        received, self.received = self.received, []
        for data in received:
            _feed(protocol, data)
        if self.lost:
            protocol.connection_lost(self.lost[0])


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Deliver *data* as the transport would: through the buffer of a BufferedProtocol."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view)))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            protocol.buffer_updated(size)
            view = view[size:]
    else:
        protocol.data_received(data)  # type: ignore[attr-defined]


class _TLSAttempt:
    """An attempt in its TLS stage, and how to stop it without cancelling its handshake.

    Cancelling ``loop.create_connection`` is not clean everywhere: cancelled just after
    its handshake completed, it starts a graceful TLS close (close_notify, up to
    ``ssl_shutdown_timeout``); asyncio 3.11, cancelled before its transport's first
    callbacks ran, leaves that transport reading a socket that is then closed; uvloop,
    cancelled mid-handshake, leaves the handshake's timer behind. So a completed
    handshake's transport is aborted, and a handshake in progress sees its socket shut
    down: it fails at once, and the loop closes its transport as for any failed
    handshake. The driver awaits the task, as any aborted task's.
    """

    __slots__ = ("holder", "sock", "task", "wait_for_transport")

    def __init__(
        self,
        sock: socket.socket,
        holder: _Holding,
        task: asyncio.Task[None],
        *,
        wait_for_transport: bool,
    ) -> None:
        self.sock = sock
        self.holder = holder
        self.task = task
        self.wait_for_transport = wait_for_transport  # uvloop: see _shut_down()

    def abort(self) -> asyncio.Task[None]:
        """End the connection now; the task ends once the loop has seen it."""
        if self.holder.transport is not None:
            self.holder.abort()
        else:
            self._shut_down()
        return self.task

    def _shut_down(self) -> None:
        if self.task.done():
            return
        if self.wait_for_transport and getattr(self.sock, "_io_refs", 0) == 0:
            # uvloop, before its transport took the socket (it counts a reference on
            # it once its TCP stage is up): shut down now, the transport would be
            # closed before it takes the socket, and take it anyway. Next iteration.
            self.task.get_loop().call_soon(self._shut_down)
            return
        with contextlib.suppress(OSError):  # already reset or closed: it fails anyway
            self.sock.shutdown(socket.SHUT_RDWR)


class TLSStage:
    """The TLS parameters of one call and, once it is won, its transport and protocol.

    Attributes:
        protocol_factory: Makes the caller's protocol, once, for the winner.
        context: The TLS context of every attempt.
        server_hostname: The name to verify (and send as SNI).
        handshake_timeout: Seconds for each attempt's handshake (``None``: asyncio's 60).
        shutdown_timeout: As for ``loop.create_connection`` (the winner's, later).
        won: ``(transport, protocol)`` of the winner, set when the race is won.
    """

    __slots__ = (
        "context",
        "handshake_timeout",
        "protocol_factory",
        "server_hostname",
        "shutdown_timeout",
        "won",
    )

    def __init__(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        context: ssl.SSLContext,
        server_hostname: str,
        handshake_timeout: float | None,
        shutdown_timeout: float | None,
    ) -> None:
        self.protocol_factory = protocol_factory
        self.context = context
        self.server_hostname = server_hostname
        self.handshake_timeout = handshake_timeout
        self.shutdown_timeout = shutdown_timeout
        self.won: tuple[asyncio.Transport, asyncio.BaseProtocol] | None = None


class TLSRace(ConnectRace):
    """A :class:`~happydial._racer.ConnectRace` whose attempts end with a TLS handshake."""

    __slots__ = ("holders", "launched_at", "on_uvloop", "stage", "tls_stage")

    def __init__(self, stage: TLSStage, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stage = stage
        self.launched_at: list[float] = []  # attempt index -> when its TCP connect started
        self.tls_stage: set[int] = set()  # attempts whose TCP connected: handshaking or done
        self.holders: dict[int, _Holding] = {}  # attempts whose handshake completed
        self.on_uvloop = type(self.loop).__module__.startswith("uvloop")  # see _TLSAttempt

    def launch(self, item: AddrInfoType, index: int) -> Any:
        """Start the TCP stage of attempt *index*, remembering when."""
        self.launched_at.append(self.loop.time())
        return super().launch(item, index)

    def report(self, index: int, error: BaseException | None) -> None:
        """An outcome; a TCP connect of an attempt that is still pending starts its TLS stage."""
        if (
            error is None
            and index not in self.tls_stage
            and not self._launching
            and index in self.schedule.pending
        ):
            self._start_tls(index)
            return
        super().report(index, error)

    def _start_tls(self, index: int) -> None:
        self.tls_stage.add(index)
        now = self.loop.time()
        if self.trace is not None:
            self.emit(_trace.TLSStarted(index, self.started[index], now))
            if self._finished:
                return  # the trace raised: the race is over, and close_losers closes the socket
        started_at = self.launched_at[index]
        # The draft's adjustment of the Next Connection Attempt Timer (see the module).
        until = min(now + (now - started_at), started_at + MAX_ATTEMPT_DELAY)
        self.schedule.progressed(index, until)
        sock = self.sockets[index]
        holder = _Holding()
        task = self.loop.create_task(self._handshake(index, sock, holder))
        self._attempts[index] = _TLSAttempt(sock, holder, task, wait_for_transport=self.on_uvloop)
        self._pump()  # the next start may have moved: move the timer with it

    async def _handshake(self, index: int, sock: Any, holder: _Holding) -> None:
        stage = self.stage
        try:
            transport, _ = await self.loop.create_connection(
                lambda: holder,
                sock=sock,
                ssl=stage.context,
                server_hostname=stage.server_hostname,
                ssl_handshake_timeout=stage.handshake_timeout,
                ssl_shutdown_timeout=stage.shutdown_timeout,
            )
        except BaseException as exc:  # noqa: BLE001 - the schedule classifies it
            # Never this race's abort (see _TLSAttempt): a failed handshake, or a bug.
            self.report(index, exc)
            return
        self.holders[index] = holder
        if self.trace is not None:
            self.emit(_trace.TLSSucceeded(index, self.started[index], self.loop.time()))
        if self._finished:
            holder.abort()  # the trace raised: the race is over
            return
        try:
            protocol = stage.protocol_factory()
            holder.hand_over(protocol)
        except BaseException as exc:  # noqa: BLE001 - the caller's bug: raised by the race
            self.report_bug(exc)
            return
        stage.won = (transport, protocol)
        self.report(index, None)

    def on_failure(self, index: int, error: BaseException) -> None:
        """Mark and trace a failure in the TLS stage, then as any attempt's failure."""
        if index in self.tls_stage:
            mark_tls_stage(error)
            if self.trace is not None:
                self.emit(_trace.TLSFailed(index, self.started[index], error, self.loop.time()))
        super().on_failure(index, error)

    def close_losers(self) -> Any:
        """Abort every transport but the winner's; close every socket but the winner's."""
        winner = self.schedule.winner
        for index, holder in self.holders.items():
            if index != winner:
                holder.take_back()
                holder.abort()
        if winner is None:
            self.stage.won = None
        return super().close_losers()

    async def connect(self, *, all_errors: bool) -> tuple[Any, AddrInfoType]:
        """Run the race; wait until every aborted transport has lost its connection."""
        try:
            return await super().connect(all_errors=all_errors)
        finally:
            winner = self.schedule.winner
            closing = [h for i, h in self.holders.items() if i != winner]
            self.holders.clear()
            if closing:
                await _wait_closed(closing)


# How many loop iterations an aborted transport gets to close. An abort is immediate,
# its end takes one or two iterations; the bound only guards against a loop that
# reports neither sign of it (see _Holding.gone).
_CLOSE_ITERATIONS = 100


async def _wait_closed(holders: list[_Holding]) -> None:
    """Wait until every aborted transport is gone, even if cancelled meanwhile (then re-raise)."""
    cancelled: asyncio.CancelledError | None = None
    for _ in range(_CLOSE_ITERATIONS):
        if all(holder.closed for holder in holders):
            break
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        raise cancelled


async def connect_tls(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    *,
    context: ssl.SSLContext,
    server_hostname: str,
    handshake_timeout: float | None,
    shutdown_timeout: float | None,
    options: dict[str, Any],
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    """:func:`happydial.connect` with TLS inside the race; ``(transport, protocol)``."""
    stage = TLSStage(
        protocol_factory, context, server_hostname, handshake_timeout, shutdown_timeout
    )
    token = RACE_CLASS.set(functools.partial(_tls_race, stage))
    try:
        await connect(host, port, **options)
    finally:
        RACE_CLASS.reset(token)
    return stage.won  # type: ignore[return-value]


def _tls_race(stage: TLSStage, *args: Any, **kwargs: Any) -> TLSRace:
    # Once: a connect() nested in this call (a resolver that connects) races plain TCP.
    RACE_CLASS.set(ConnectRace)
    return TLSRace(stage, *args, **kwargs)
