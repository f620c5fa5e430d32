"""HTTPS records (RFC 9460) as pure values: which endpoints to race, in which order.

No I/O here. A resolver turns one name's HTTPS RRset into :class:`ServiceBinding`
values; :func:`service_bindings` follows AliasMode (with a depth and loop limit) by
asking that resolver again, then keeps the ServiceMode records a TCP client can use,
in priority order; :func:`hint_addr_infos` turns a record's address hints into
addr_infos with the record's port. :func:`happydial.connect` does the racing.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ._addresses import AddrInfoType, ip_addresses_to_addr_infos

__all__ = [
    "MAX_ALIAS_DEPTH",
    "TCP_ALPNS",
    "ServiceBinding",
    "hint_addr_infos",
    "service_bindings",
    "usable_over_tcp",
]

#: The ALPN protocol ids that run over TLS on TCP (HTTP/1.1 and HTTP/2, RFC 9113);
#: ``h3`` runs over QUIC, which happydial does not speak.
TCP_ALPNS = frozenset({"http/1.1", "h2"})

#: How many AliasMode records are followed before giving up on a chain (RFC 9460
#: section 2.4.2 asks clients to bound the chain; 8 is what curl and browsers allow).
MAX_ALIAS_DEPTH = 8

_DEFAULT_ALPN = "http/1.1"  # RFC 9460 section 9.1: the HTTPS RR's implicit default


@dataclass(frozen=True, slots=True)
class ServiceBinding:
    """One HTTPS (or SVCB) record: where and how a service may be reached.

    Attributes:
        priority: ``0`` for AliasMode; otherwise ServiceMode, lower first.
        target: The TargetName, absolute, without the trailing dot; ``""`` for
            ``"."`` (the owner name in ServiceMode; "no service" in AliasMode).
        port: The ``port`` SvcParam, or ``None`` (the caller's port).
        alpn: The ``alpn`` SvcParam's protocol ids, in record order.
        no_default_alpn: Whether the record says ``no-default-alpn`` (then
            ``http/1.1`` is not implied, RFC 9460 section 7.1.2).
        ipv4hint: The ``ipv4hint`` addresses, as text.
        ipv6hint: The ``ipv6hint`` addresses, as text.
        ech: The ``ech`` SvcParam (an ECHConfigList, RFC 9460 section 9 and the ECH
            draft) as bytes, or ``None``. Exposed only: Python's :mod:`ssl` cannot use it.
    """

    priority: int
    target: str = ""
    port: int | None = None
    alpn: tuple[str, ...] = ()
    no_default_alpn: bool = False
    ipv4hint: tuple[str, ...] = ()
    ipv6hint: tuple[str, ...] = ()
    ech: bytes | None = None

    @property
    def mode(self) -> Literal["alias", "service"]:
        """``"alias"`` (priority 0, RFC 9460 section 2.4.2) or ``"service"``."""
        return "alias" if self.priority == 0 else "service"

    @property
    def tcp_alpn(self) -> tuple[str, ...]:
        """The protocols a TLS-over-TCP client may offer this endpoint, in record order.

        The record's TCP ids, then ``http/1.1`` unless ``no-default-alpn`` (RFC 9460
        section 7.1.2: the default is part of the set, after the listed ones).
        """
        ids = [a for a in self.alpn if a in TCP_ALPNS]
        if not self.no_default_alpn and _DEFAULT_ALPN not in ids:
            ids.append(_DEFAULT_ALPN)
        return tuple(ids)

    def target_of(self, owner: str) -> str:
        """The name whose A/AAAA records hold this endpoint's addresses."""
        return self.target or owner.rstrip(".")


def usable_over_tcp(binding: ServiceBinding) -> bool:
    """Whether a TCP client can use a ServiceMode *binding* (not h3 only)."""
    return bool(binding.tcp_alpn)


Query = Callable[[str], Awaitable[Sequence[ServiceBinding]]]


async def service_bindings(
    query: Query, host: str, *, max_depth: int = MAX_ALIAS_DEPTH
) -> tuple[str, list[ServiceBinding]]:
    """The ServiceMode records to try for *host*, in order, after following aliases.

    Args:
        query: Returns one name's HTTPS RRset (empty when it has none).
        host: The origin's name.
        max_depth: How many AliasMode hops to follow.

    Returns:
        The name the chain ended at (the owner of the returned records) and its
        ServiceMode records usable over TCP, by priority (stable among equals: the
        RRset's order stands in for RFC 9460's random pick). An empty list when the
        name has none, the chain loops or is too long, or ends at ``"."``: the caller
        then connects as if there were no HTTPS record (RFC 9460 section 3).
    """
    name = host.rstrip(".").lower()
    seen = {name}
    hops = 0
    while True:
        records = list(await query(name))
        aliases = [r for r in records if r.mode == "alias"]
        if not aliases:
            services = sorted((r for r in records if usable_over_tcp(r)), key=_priority)
            return name, services
        # Section 2.4.2: with an AliasMode record present, ServiceMode ones are ignored.
        target = aliases[0].target.lower()
        if not target or target in seen or hops == max_depth:
            # "." says no service here; a loop, or a chain too long, says nothing.
            return name, []
        seen.add(target)
        name = target
        hops += 1


def _priority(binding: ServiceBinding) -> int:
    return binding.priority


def hint_addr_infos(binding: ServiceBinding, port: int, family: int) -> list[AddrInfoType]:
    """The *binding*'s address hints of *family* as addr_infos, on its port (else *port*)."""
    hints = binding.ipv6hint if family == socket.AF_INET6 else binding.ipv4hint
    return ip_addresses_to_addr_infos(list(hints), binding.port or port)
