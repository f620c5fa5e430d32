"""asyncio-shaped wrappers: ``open_connection`` and ``create_connection`` by host name.

They call :func:`happydial.connect` and hand the socket to asyncio with
``loop.create_connection(sock=...)``. Two things asyncio's own handoff gets wrong
for a caller, fixed here:

* With ``ssl`` and no ``server_hostname``, the host name is used, as
  ``asyncio.open_connection(host, port, ssl=...)`` does (async_stagger raises
  ``ValueError`` here because the name is lost once only a socket is passed on).
* If the handoff fails (a TLS handshake error, a cancellation), the socket is
  closed before the error propagates. uvloop closes and detaches it itself, and
  closing a detached socket is a no-op, so this is safe on every loop.

With ``tls_in_race=True`` there is no handoff after the race: each attempt does its
TLS handshake inside the race (``_tls``), and the first to complete it wins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # only for annotations: importing ssl costs milliseconds
    import ssl

from ._connect import connect
from ._validate import check_delay

__all__ = ["create_connection", "open_connection"]

P = TypeVar("P", bound=asyncio.BaseProtocol)

_STREAM_LIMIT = 2**16  # asyncio.streams' default buffer limit


def _check_ssl(ssl: object, server_hostname: object) -> None:
    """Refuse what asyncio would only reject after the connection is made."""
    if ssl is not None and not isinstance(ssl, bool):
        import ssl as ssl_module  # noqa: PLC0415 - only when a context is passed: slow import

        if not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext, a bool or None, got {ssl!r}")
    if server_hostname is not None:
        if not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if not isinstance(server_hostname, str):
            raise TypeError(f"server_hostname must be a str or None, got {server_hostname!r}")


async def create_connection(
    protocol_factory: Callable[[], P],
    host: str,
    port: int,
    *,
    ssl: ssl.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    tls_in_race: bool = False,
    **options: Any,
) -> tuple[asyncio.Transport, P]:
    """Like ``loop.create_connection(protocol_factory, host, port)``, with RFC 8305.

    Args:
        protocol_factory: Makes the protocol, as for asyncio.
        host: The host name or IP literal.
        port: The TCP port.
        ssl: An :class:`ssl.SSLContext`, or ``True`` for a default one.
        server_hostname: The TLS server name; defaults to *host* when *ssl* is set.
        ssl_handshake_timeout: As for asyncio; with *tls_in_race*, for each attempt's
            handshake.
        ssl_shutdown_timeout: As for asyncio.
        tls_in_race: Do each attempt's TLS handshake inside the race (Happy Eyeballs
            v3): an attempt whose handshake fails (a wrong certificate, say) fails,
            and the race goes on; the first handshake to complete wins. Needs *ssl*.
            *protocol_factory* is then called once, for the winner. See
            :doc:`guides/happy-eyeballs-v3`.
        **options: Passed to :func:`happydial.connect` (``happy_eyeballs_delay``,
            ``resolver``, ``trace``, ...).

    Returns:
        ``(transport, protocol)``.

    Raises:
        OSError: No connection (with *tls_in_race*, the TLS errors are among the
            attempts' errors, each naming its address).
        ssl.SSLError: Without *tls_in_race*, the handshake with the winner failed.
        TypeError: An argument has the wrong type.
        ValueError: An argument has a bad value (*tls_in_race* without *ssl*, ...).
    """
    loop = asyncio.get_running_loop()
    _check_ssl(ssl, server_hostname)
    if not isinstance(tls_in_race, bool):
        raise TypeError(f"tls_in_race must be a bool, got {tls_in_race!r}")
    if ssl and server_hostname is None:
        server_hostname = host
    if tls_in_race:
        if not ssl:
            raise ValueError(
                f"tls_in_race=True needs ssl (an ssl.SSLContext, or True), got ssl={ssl!r}"
            )
        return await _connect_tls(  # type: ignore[return-value]
            protocol_factory,
            host,
            port,
            ssl,
            server_hostname,  # type: ignore[arg-type]
            check_delay(ssl_handshake_timeout, "ssl_handshake_timeout", allow_zero=False),
            check_delay(ssl_shutdown_timeout, "ssl_shutdown_timeout", allow_zero=False),
            options,
        )
    extra: dict[str, Any] = {}
    if ssl:
        extra["server_hostname"] = server_hostname
        extra["ssl_handshake_timeout"] = ssl_handshake_timeout
        extra["ssl_shutdown_timeout"] = ssl_shutdown_timeout
    sock = await connect(host, port, **options)
    try:
        transport, protocol = await loop.create_connection(
            protocol_factory, sock=sock, ssl=ssl, **extra
        )
    except BaseException:
        sock.close()
        raise
    return transport, protocol


async def _connect_tls(
    protocol_factory: Callable[[], P],
    host: str,
    port: int,
    ssl: ssl.SSLContext | bool,
    server_hostname: str,
    handshake_timeout: float | None,
    shutdown_timeout: float | None,
    options: dict[str, Any],
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    import ssl as ssl_module  # noqa: PLC0415 - only with TLS: a slow import

    from ._tls import connect_tls  # noqa: PLC0415 - only with TLS in the race (0.7 MB)

    # One context for every attempt (True would make, and load the CAs of, one each).
    context = ssl if isinstance(ssl, ssl_module.SSLContext) else ssl_module.create_default_context()
    return await connect_tls(
        protocol_factory,
        host,
        port,
        context=context,
        server_hostname=server_hostname,
        handshake_timeout=handshake_timeout,
        shutdown_timeout=shutdown_timeout,
        options=options,
    )


async def open_connection(
    host: str,
    port: int,
    *,
    limit: int = _STREAM_LIMIT,
    ssl: ssl.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    **options: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Like ``asyncio.open_connection(host, port)``, with RFC 8305.

    Args:
        host: The host name or IP literal.
        port: The TCP port.
        limit: The reader's buffer limit, as for asyncio.
        ssl: An :class:`ssl.SSLContext`, or ``True`` for a default one.
        server_hostname: The TLS server name; defaults to *host* when *ssl* is set.
        **options: Passed to :func:`create_connection` (``tls_in_race``,
            ``ssl_handshake_timeout``) and :func:`happydial.connect`.

    Returns:
        ``(reader, writer)``.
    """
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, got {limit!r}")
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit!r}")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(
        lambda: protocol, host, port, ssl=ssl, server_hostname=server_hostname, **options
    )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer
