"""Run in the client namespace: connect to a link-local server in every zone spelling.

Usage: ``link_local_client.py LOOP IFNAME PORT``. Prints one JSON object: for each
spelling, the peer address happydial's socket connected to, or the error; and the
status of an aiohttp request made with happydial in aiohappyeyeballs' place, the way
aiohttp's resolvers hand over a scoped answer (``fe80::1%eth0`` as the host text).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import types
from typing import Any

import aiohttp
import aiohttp.connector
from aiohttp.abc import AbstractResolver, ResolveResult

import happydial

SERVER = "fe80::1"


class ScopedResolver(AbstractResolver):
    """Answers every name with the server's link-local address, zone as text."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        del port, family
        result: ResolveResult = {
            "hostname": host,
            "host": self.host,
            "port": self.port,
            "family": socket.AF_INET6,
            "proto": socket.IPPROTO_TCP,
            "flags": socket.AI_NUMERICHOST,
        }
        return [result]

    async def close(self) -> None:
        pass


async def _peer(make: Any) -> str:
    try:
        sock = await make()
    except OSError as exc:
        return f"error: {exc}"
    try:
        return str(sock.getpeername()[0])
    finally:
        sock.close()


async def main(ifname: str, port: int) -> dict[str, Any]:
    index = socket.if_nametoindex(ifname)

    def entry(sockaddr: tuple[Any, ...]) -> list[happydial.AddrInfoType]:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]

    results: dict[str, Any] = {
        "zone name": await _peer(
            lambda: happydial.start_connection(entry((f"{SERVER}%{ifname}", port, 0, 0)))
        ),
        "zone number": await _peer(
            lambda: happydial.start_connection(entry((f"{SERVER}%{index}", port, 0, 0)))
        ),
        "scope id": await _peer(
            lambda: happydial.start_connection(entry((SERVER, port, 0, index)))
        ),
        "connect() literal": await _peer(lambda: happydial.connect(f"{SERVER}%{ifname}", port)),
    }
    aiohttp.connector.aiohappyeyeballs = types.SimpleNamespace(  # type: ignore[attr-defined,assignment]
        start_connection=happydial.start_connection,
        pop_addr_infos_interleave=happydial.pop_addr_infos_interleave,
        remove_addr_infos=happydial.remove_addr_infos,
        addr_to_addr_infos=happydial.addr_to_addr_infos,
    )
    connector = aiohttp.TCPConnector(resolver=ScopedResolver(f"{SERVER}%{ifname}", port))
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        try:
            async with session.get(f"http://device.local:{port}/") as response:
                results["aiohttp"] = response.status
        except aiohttp.ClientError as exc:
            results["aiohttp"] = f"error: {exc}"
    return results


if __name__ == "__main__":
    loop_name, name, port_text = sys.argv[1:4]
    if loop_name == "uvloop":
        import uvloop

        runner: Any = uvloop.run
    else:
        runner = asyncio.run
    print(json.dumps(runner(main(name, int(port_text)))))
