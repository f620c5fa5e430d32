"""The lab's far end: an authoritative DNS server and accept-and-hold TCP listeners.

Run as a script inside the server namespace (``ip netns exec <server> python
tests/lab/server.py --dns 192.0.2.53 ...``). It is not named ``dns.py`` on purpose: a script's
own directory comes first on ``sys.path``, and that name would shadow dnspython.

DNS: every query is answered on its own schedule (``loop.call_later``), so the A and AAAA
queries that glibc sends in parallel over one socket get independent delays. Per name and
record type the zone holds the addresses, a delay and an rcode; a known name without an
entry for the asked type gets an empty answer at once, an unknown name NXDOMAIN at once.

TCP: a listener per live address; each accepted connection is held open until the client
closes it. An address of the server namespace without a listener refuses (the kernel
answers the SYN with a RST).

Control: one JSON object per line on stdin, one JSON reply per line on stdout.

* ``{"op": "zone", "names": {"a.lab.test": {"AAAA": {"addresses": [...], "delay": 2}}}}``
  adds (or replaces) names; a type entry may also say ``"rcode": "NXDOMAIN"``; an
  ``HTTPS`` (or ``SVCB``) entry holds ``"records"`` in presentation format (RFC 9460:
  ``"1 . alpn=h2 port=8443 ipv4hint=192.0.2.1"``, ``"0 cdn.lab.test."``) and a delay;
* ``{"op": "listen", "addresses": ["2001:db8:5::1"], "port": 8080}`` adds listeners; with
  ``"tls": {"cert": "/path/cert.pem", "key": "/path/key.pem"}`` they serve TLS with that
  certificate (the tests make a throwaway CA's at run time: ``tests/tls_helpers.py``) and
  hold the connection once the handshake is done. A plain listener never says a word: to
  a TLS client it is a server that accepts TCP and never answers the ClientHello;
* ``{"op": "stats"}`` answers with the queries received and connections accepted;
* ``{"op": "dns64", "prefix": "64:ff9b:1::/96"}`` makes the server a DNS64 (RFC 6147): an
  AAAA query for a name with A records and no AAAA records is answered with the A
  addresses synthesised into the /96 prefix (after the A entry's delay); ``null`` stops it;
* ``{"op": "nat64", "prefix": "64:ff9b:1::/96", "addresses": ["203.0.113.1"], "port": 8080}``
  is the NAT64 on the path: a listener on each address's synthesised IPv6 address (the
  lab adds those to ``lo``) connects to the IPv4 address and holds both connections, so
  the IPv4 listener sees the connection as a client through a NAT64 would make it. The
  client cannot tell: it sees its SYN to the synthesised address answered.

End of input stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import ipaddress
import json
import socket
import ssl
import sys
import time
from typing import Any, cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 1
RECEIVE_BUFFER = 4 << 20  # bytes


class DnsProtocol(asyncio.DatagramProtocol):
    """Answers each query after the delay its name and type ask for."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's datagram transport does not subclass DatagramTransport on every version.
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        delay, response = self.server.answer(query)
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self.send, response.to_wire(), addr)

    def send(self, wire: bytes, addr: tuple[Any, ...]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)


class Server:
    """The zone, the listeners and what they saw."""

    def __init__(self) -> None:
        self.zone: dict[str, dict[str, dict[str, Any]]] = {}
        self.listeners: dict[tuple[str, int], asyncio.Server] = {}
        self.queries: list[dict[str, Any]] = []
        self.accepted: list[str] = []
        self.held: set[asyncio.StreamWriter] = set()
        self.dns64: ipaddress.IPv6Network | None = None
        self.translated: list[str] = []

    def answer(self, query: dns.message.Message) -> tuple[float, dns.message.Message]:
        """The response to *query* and the delay before sending it."""
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return 0.0, response
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append({"name": name, "type": rdtype, "time": time.monotonic()})
        records = self.zone.get(name)
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return 0.0, response
        entry = records.get(rdtype, {})
        if rdtype == "AAAA" and self.dns64 is not None and "addresses" not in entry:
            entry = self.synthesised(records.get("A", {}))
        response.set_rcode(dns.rcode.from_text(entry.get("rcode", "NOERROR")))
        addresses = entry.get("addresses", [])
        if addresses and rdtype in {"A", "AAAA"}:
            response.answer.append(
                dns.rrset.from_text_list(name, TTL, dns.rdataclass.IN, rdtype, addresses)
            )
        texts = entry.get("records", [])
        if texts and rdtype in {"HTTPS", "SVCB"}:
            response.answer.append(
                dns.rrset.from_text_list(name, TTL, dns.rdataclass.IN, rdtype, texts)
            )
        return float(entry.get("delay", 0.0)), response

    def synthesised(self, a_entry: dict[str, Any]) -> dict[str, Any]:
        """The AAAA entry a DNS64 makes of an A entry (RFC 6147 section 5.1.7)."""
        assert self.dns64 is not None
        base = int(self.dns64.network_address)
        addresses = [
            str(ipaddress.IPv6Address(base | int(ipaddress.IPv4Address(a))))
            for a in a_entry.get("addresses", [])
        ]
        return {"addresses": addresses, "delay": a_entry.get("delay", 0.0)}

    async def translate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ipv4: str, port: int
    ) -> None:
        """The NAT64: carry one accepted IPv6 connection over to *ipv4* and hold both."""
        self.translated.append(str(writer.get_extra_info("sockname")[0]))
        try:
            _, upstream = await asyncio.open_connection(ipv4, port)
        except OSError:
            writer.close()
            return
        await self.hold(reader, writer)
        upstream.close()

    async def hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Keep an accepted connection open until the client closes it."""
        peer = writer.get_extra_info("sockname")
        self.accepted.append(str(peer[0]))
        self.held.add(writer)
        try:
            while await reader.read(4096):
                pass
        except OSError:
            pass
        finally:
            self.held.discard(writer)
            writer.close()

    async def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply one control request; the reply."""
        op = request["op"]
        if op == "zone":
            for name, records in request["names"].items():
                key = name.lower() if name.endswith(".") else name.lower() + "."
                self.zone[key] = records
            return {"ok": True}
        if op == "listen":
            port = int(request["port"])
            context = tls_context(request["tls"]) if request.get("tls") else None
            for address in request["addresses"]:
                if (address, port) not in self.listeners:
                    # A failed handshake (the client refused the certificate) is only
                    # logged in asyncio's debug mode: it puts nothing on stderr.
                    self.listeners[address, port] = await asyncio.start_server(
                        self.hold, host=address, port=port, reuse_address=True, ssl=context
                    )
            return {"ok": True}
        if op == "stats":
            return {
                "ok": True,
                "queries": self.queries,
                "accepted": self.accepted,
                "translated": self.translated,
            }
        if op == "dns64":
            return self.set_dns64(request["prefix"])
        if op == "nat64":
            return await self.add_nat64(request)
        return {"ok": False, "error": f"unknown op {op!r}"}

    def set_dns64(self, prefix: str | None) -> dict[str, Any]:
        """Answer as a DNS64 with *prefix*, or (``None``) as a plain server."""
        self.dns64 = None if prefix is None else ipaddress.IPv6Network(prefix)
        return {"ok": True}

    async def add_nat64(self, request: dict[str, Any]) -> dict[str, Any]:
        """Listen on the synthesised address of each IPv4 address, translating to it."""
        base = int(ipaddress.IPv6Network(request["prefix"]).network_address)
        port = int(request["port"])
        for ipv4 in request["addresses"]:
            ipv6 = str(ipaddress.IPv6Address(base | int(ipaddress.IPv4Address(ipv4))))
            if (ipv6, port) not in self.listeners:
                self.listeners[ipv6, port] = await asyncio.start_server(
                    functools.partial(self.translate, ipv4=ipv4, port=port),
                    host=ipv6,
                    port=port,
                    reuse_address=True,
                )
        return {"ok": True}

    async def close(self) -> None:
        """Stop listening and drop held connections."""
        for listener in self.listeners.values():
            listener.close()
        for writer in list(self.held):
            writer.close()
        for listener in self.listeners.values():
            await listener.wait_closed()


def tls_context(files: dict[str, str]) -> ssl.SSLContext:
    """A server context presenting the certificate in *files* (``cert`` and ``key``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files["cert"], files["key"])
    return context


async def serve(dns_addresses: list[str]) -> None:
    """Bind the DNS sockets, say ``ready``, and obey stdin until it ends."""
    loop = asyncio.get_running_loop()
    server = Server()
    transports = []
    for address in dns_addresses:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: DnsProtocol(server), local_addr=(address, 53)
        )
        # Asynchronous resolvers send hundreds of queries in one burst: room for them all.
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        transports.append(transport)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        while line := await reader.readline():
            try:
                reply = await server.command(json.loads(line))
            except Exception as exc:
                reply = {"ok": False, "error": repr(exc)}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        await server.close()
        for transport in transports:
            transport.close()


def main() -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dns", action="append", required=True, help="address to answer on")
    args = parser.parse_args()
    asyncio.run(serve(args.dns))


if __name__ == "__main__":
    main()
