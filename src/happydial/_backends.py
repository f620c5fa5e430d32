"""Optional resolvers without a thread per lookup: c-ares (aiodns) and dnspython.

Neither dependency is imported until a resolver is built, so ``import happydial`` stays
free of them (the core has no runtime dependency); ``pip install 'happydial[aiodns]'``
or ``'happydial[dnspython]'`` brings them in.

Both answer like :func:`happydial.getaddrinfo_resolver` does: ``localhost`` names
locally (RFC 6761 section 6.3), addresses in ``/etc/hosts`` first, and failures as
:class:`socket.gaierror` carrying the code the C library's ``getaddrinfo`` would have
used (``EAI_NONAME`` for a name that does not exist, ``EAI_NODATA`` for a name with no
address of the family, ``EAI_AGAIN`` for a server failure or a timeout, ``EAI_FAIL``
for the rest), so code that handles one handles them all.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ._addresses import AddrInfoType, ip_addresses_to_addr_infos
from ._resolver import localhost_addr_infos
from ._svcb import ServiceBinding

if TYPE_CHECKING:
    import aiodns
    import dns.asyncresolver

__all__ = ["AiodnsResolver", "DnspythonResolver"]

EAI_NODATA: int = getattr(socket, "EAI_NODATA", socket.EAI_NONAME)  # absent on some BSDs

# What glibc's getaddrinfo(3) says for each code (gai_strerror), so messages read alike.
_GAI_TEXT = {
    socket.EAI_NONAME: "Name or service not known",
    EAI_NODATA: "No address associated with hostname",
    socket.EAI_AGAIN: "Temporary failure in name resolution",
    socket.EAI_FAIL: "Non-recoverable failure in name resolution",
    socket.EAI_MEMORY: "Memory allocation failure",
}

_FAMILY_NAMES: dict[int, str] = {socket.AF_INET6: "AAAA", socket.AF_INET: "A"}


def _gaierror(code: int, host: str, backend: str, detail: str) -> socket.gaierror:
    return socket.gaierror(code, f"{_GAI_TEXT[code]}: {host!r} ({backend}: {detail})")


def _check_family(family: int) -> str:
    """The DNS record type for *family*; a ValueError for any other family."""
    try:
        return _FAMILY_NAMES[family]
    except KeyError:
        raise ValueError(f"family must be AF_INET6 or AF_INET, got {family!r}") from None


def _missing(name: str, extra: str, exc: ImportError) -> ImportError:
    error = ImportError(f"{name} needs the {extra!r} package: pip install 'happydial[{extra}]'")
    error.__cause__ = exc
    return error


# ---------------------------------------------------------------------------
# c-ares, through aiodns
# ---------------------------------------------------------------------------


def ares_error_code(errno: int) -> int:
    """The ``getaddrinfo`` error code for a c-ares status (``ARES_E*``)."""
    import pycares.errno as ares  # noqa: PLC0415 - optional dependency, only when in use

    if errno in {ares.ARES_ENOTFOUND, ares.ARES_EBADNAME}:
        return socket.EAI_NONAME
    if errno == ares.ARES_ENODATA:
        return EAI_NODATA
    if errno in {
        ares.ARES_ETIMEOUT,
        ares.ARES_ESERVFAIL,
        ares.ARES_EREFUSED,
        ares.ARES_ECONNREFUSED,
        ares.ARES_ECANCELLED,
        ares.ARES_EDESTRUCTION,
    }:
        return socket.EAI_AGAIN
    if errno == ares.ARES_ENOMEM:
        return socket.EAI_MEMORY
    return socket.EAI_FAIL


class AiodnsResolver:
    """A :class:`happydial.Resolver` on c-ares (aiodns), the library aiohttp's AsyncResolver uses.

    c-ares sends the queries itself and reads ``/etc/hosts`` itself (its ``getaddrinfo``
    looks in the hosts file, then asks DNS, as ``hosts: files dns`` in
    ``nsswitch.conf`` would), so no thread waits on a lookup; pycares 5 does run one
    event thread of its own per channel. One channel is made per event loop, on first
    use, because aiodns binds a channel to a loop; the channel of a closed loop is
    closed when the next loop's is made. Close the resolver (``await
    resolver.close()``, or ``async with``) to release the channels.

    Args:
        nameservers: DNS servers to ask instead of ``/etc/resolv.conf``'s.
        timeout: Seconds c-ares waits for one server's answer before it tries again.
        tries: How many times c-ares asks each server.
        **options: Further keyword arguments for ``aiodns.DNSResolver``
            (``pycares.Channel`` options such as ``rotate`` or ``udp_port``).

    Raises:
        ImportError: aiodns is not installed.
    """

    def __init__(
        self,
        *,
        nameservers: Sequence[str] | None = None,
        timeout: float | None = None,
        tries: int | None = None,
        **options: Any,
    ) -> None:
        try:
            import aiodns  # noqa: PLC0415 - optional dependency, only when in use
        except ImportError as exc:
            raise _missing("AiodnsResolver", "aiodns", exc) from None
        self._aiodns = aiodns
        self._options = dict(options)
        if nameservers is not None:
            self._options["nameservers"] = list(nameservers)
        if timeout is not None:
            self._options["timeout"] = timeout
        if tries is not None:
            self._options["tries"] = tries
        # aiodns binds a channel to a loop (and holds it): one per loop, those of closed
        # loops closed when the next loop comes (or by close()).
        self._channels: dict[asyncio.AbstractEventLoop, aiodns.DNSResolver] = {}
        self._closed = False

    async def _channel(self) -> aiodns.DNSResolver:
        if self._closed:
            raise RuntimeError("this AiodnsResolver is closed")
        loop = asyncio.get_running_loop()
        channel = self._channels.get(loop)
        if channel is None:
            for old in [old for old in self._channels if old.is_closed()]:
                await self._channels.pop(old).close()
            channel = self._aiodns.DNSResolver(loop=loop, **self._options)
            self._channels[loop] = channel
        return channel

    async def __call__(self, host: str, port: int, family: int) -> list[AddrInfoType]:
        """Look *host* up for *family* (``AF_INET6`` or ``AF_INET``)."""
        _check_family(family)
        local = localhost_addr_infos(host, port, family)
        if local is not None:
            return local
        channel = await self._channel()
        try:
            result = await channel.getaddrinfo(
                host, family=socket.AddressFamily(family), port=port, type=socket.SOCK_STREAM
            )
        except self._aiodns.error.DNSError as exc:
            errno = exc.args[0] if exc.args else -1
            detail = exc.args[1] if len(exc.args) > 1 else repr(exc)
            raise _gaierror(ares_error_code(errno), host, "c-ares", str(detail)) from exc
        addresses = [node.addr[0].decode("ascii") for node in result.nodes]
        return ip_addresses_to_addr_infos(addresses, port)

    async def close(self) -> None:
        """Close every channel; the resolver cannot be used afterwards."""
        self._closed = True
        channels = list(self._channels.values())
        self._channels.clear()
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> Self:
        """``async with AiodnsResolver() as resolver:`` closes it at the end."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the resolver."""
        await self.close()


# ---------------------------------------------------------------------------
# /etc/hosts, for dnspython (which reads only DNS)
# ---------------------------------------------------------------------------


class HostsFile:
    """The addresses a hosts file gives each name, reread whenever the file changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # os, not pathlib: importing pathlib (and with it urllib.parse, fnmatch) costs
        # every happydial user some 100 KB of memory for one file name.
        self.path = os.fspath(path)
        self._stamp: tuple[int, int, int] | None = None
        self._names: dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}

    def lookup(self, host: str, family: int) -> list[str] | None:
        """The addresses of *host* of *family* in order, or ``None`` if the file has none.

        Like glibc's ``files`` source, a name the file knows only for the other family
        is not found here (DNS is asked), and every line naming it counts.
        """
        self._refresh()
        version = 6 if family == socket.AF_INET6 else 4
        known = self._names.get(host.removesuffix(".").lower(), ())
        return [str(a) for a in known if a.version == version] or None

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)  # noqa: PTH116 - no pathlib: see __init__
        except OSError:
            self._stamp, self._names = None, {}
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:  # PTH123 (use Path.open) does not apply: no pathlib, see __init__
            with open(self.path, encoding="utf-8", errors="replace") as file:  # noqa: PTH123
                text = file.read()
        except OSError:  # replaced or removed between the stat and the read
            text = ""
        self._stamp, self._names = stamp, parse_hosts(text)


def parse_hosts(text: str) -> dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """Names (lower case) to their addresses in file order, from hosts(5) text."""
    names: dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
    for line in text.splitlines():
        fields = line.partition("#")[0].split()
        if len(fields) < 2:
            continue
        try:
            address = ipaddress.ip_address(fields[0])
        except ValueError:
            continue  # not an address: hosts(5) says to ignore the line
        for name in fields[1:]:
            known = names.setdefault(name.removesuffix(".").lower(), [])
            if address not in known:
                known.append(address)
    return names


# ---------------------------------------------------------------------------
# dnspython
# ---------------------------------------------------------------------------


def dnspython_error_code(exc: Exception) -> int:
    """The ``getaddrinfo`` error code for a dnspython resolution error."""
    import dns.name  # noqa: PLC0415 - optional dependency, only when in use
    import dns.resolver  # noqa: PLC0415

    if isinstance(exc, (dns.resolver.NXDOMAIN, dns.name.NameTooLong, dns.name.LabelTooLong)):
        return socket.EAI_NONAME
    if isinstance(exc, dns.name.EmptyLabel):
        return socket.EAI_NONAME
    if isinstance(exc, dns.resolver.NoAnswer):
        return EAI_NODATA
    if isinstance(exc, (dns.resolver.LifetimeTimeout, dns.resolver.NoNameservers)):
        return socket.EAI_AGAIN  # a timeout, or every server failed (SERVFAIL, REFUSED)
    return socket.EAI_FAIL


class DnspythonResolver:
    """A :class:`happydial.Resolver` on dnspython's asynchronous stub resolver.

    Queries go out on the event loop itself: no thread at all. dnspython reads only
    DNS, never ``/etc/hosts``; this resolver reads the hosts file itself first
    (rereading it when it changes), as glibc's ``hosts: files dns`` does, unless
    *hosts_file* is ``None``. Other ``nsswitch.conf`` sources (mDNS, LDAP,
    systemd-resolved's ``resolve``) are not consulted.

    Args:
        resolver: A configured ``dns.asyncresolver.Resolver`` (name servers,
            timeouts, cache); default: one made from ``/etc/resolv.conf``.
        hosts_file: The hosts file to look in first, or ``None`` for DNS only.
        search: Whether to apply ``resolv.conf``'s search list (dnspython's default
            when ``None``: no, unless the resolver says otherwise).
        https: Whether :func:`happydial.connect` also asks for the name's HTTPS
            records (RFC 9460), in parallel with AAAA and A, and races their
            endpoints (see :doc:`/guides/https-records`). :meth:`resolve_https` works
            either way.

    Raises:
        ImportError: dnspython is not installed.
    """

    def __init__(
        self,
        *,
        resolver: dns.asyncresolver.Resolver | None = None,
        hosts_file: str | os.PathLike[str] | None = "/etc/hosts",
        search: bool | None = None,
        https: bool = False,
    ) -> None:
        if not isinstance(https, bool):
            raise TypeError(f"https must be a bool, got {https!r}")
        try:
            import dns.asyncresolver  # noqa: PLC0415 - optional dependency, only when in use
            import dns.exception  # noqa: PLC0415
        except ImportError as exc:
            raise _missing("DnspythonResolver", "dnspython", exc) from None
        self._dns_exception = dns.exception.DNSException
        self.resolver = resolver if resolver is not None else dns.asyncresolver.Resolver()
        self.hosts = HostsFile(hosts_file) if hosts_file is not None else None
        self.search = search
        self.https = https

    async def __call__(self, host: str, port: int, family: int) -> list[AddrInfoType]:
        """Look *host* up for *family* (``AF_INET6`` or ``AF_INET``)."""
        rdtype = _check_family(family)
        local = localhost_addr_infos(host, port, family)
        if local is not None:
            return local
        addresses = self.hosts.lookup(host, family) if self.hosts is not None else None
        if addresses is None:
            try:
                answer = await self.resolver.resolve(host, rdtype, search=self.search)
            except self._dns_exception as exc:
                code = dnspython_error_code(exc)
                raise _gaierror(code, host, "dnspython", str(exc)) from exc
            addresses = [rdata.address for rdata in answer]
        return ip_addresses_to_addr_infos(addresses, port)

    async def resolve_https(self, host: str) -> list[ServiceBinding]:
        """The HTTPS records of *host* (one name; AliasMode records are not followed).

        Returns:
            The records as :class:`~happydial.ServiceBinding` values, in answer order;
            empty when the name has none (no such name, or no HTTPS record).

        Raises:
            socket.gaierror: The lookup failed (``EAI_AGAIN``: timeout or server failure).
        """
        import dns.resolver  # noqa: PLC0415 - optional dependency, only when in use

        try:
            answer = await self.resolver.resolve(host, "HTTPS", search=self.search)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except self._dns_exception as exc:
            code = dnspython_error_code(exc)
            raise _gaierror(code, host, "dnspython", str(exc)) from exc
        return [service_binding(rdata) for rdata in answer]


def service_binding(rdata: Any) -> ServiceBinding:
    """A dnspython SVCB/HTTPS rdata as a :class:`~happydial.ServiceBinding`."""
    import dns.rdtypes.svcbbase as svcb  # noqa: PLC0415 - optional dependency

    params = rdata.params
    alpn = params.get(svcb.ParamKey.ALPN)
    port = params.get(svcb.ParamKey.PORT)
    v4 = params.get(svcb.ParamKey.IPV4HINT)
    v6 = params.get(svcb.ParamKey.IPV6HINT)
    ech = params.get(svcb.ParamKey.ECH)
    return ServiceBinding(
        priority=rdata.priority,
        target=rdata.target.to_text(omit_final_dot=True).lower().removesuffix("."),
        port=port.port if port is not None else None,
        alpn=tuple(i.decode("ascii", "replace") for i in alpn.ids) if alpn is not None else (),
        no_default_alpn=svcb.ParamKey.NO_DEFAULT_ALPN in params,
        ipv4hint=tuple(str(a) for a in v4.addresses) if v4 is not None else (),
        ipv6hint=tuple(str(a) for a in v6.addresses) if v6 is not None else (),
        ech=bytes(ech.ech) if ech is not None else None,
    )
