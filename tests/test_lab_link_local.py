"""Link-local IPv6 across a real link, in every zone spelling (issue 12 item 8).

Two network namespaces joined by a veth pair, with only link-local addresses on it:
the server listens on ``fe80::1``, the client has ``fe80::2``. In the client, each
spelling of the zone (an interface name in the host text, its number, the tuple's
scope id), ``connect()`` with a zoned literal, and a real aiohttp ``ClientSession``
with happydial in aiohappyeyeballs' place (aiohttp's resolvers hand over scoped
answers as ``fe80::1%eth0``), on asyncio and on uvloop. Needs root; skipped
otherwise, except that with ``CI=true`` it fails, as the rest of the lab does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .lab.netns import run_ip

pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent
PORT = 8080
SERVER = """
import asyncio, socket, sys
async def handle(reader, writer):
    try:  # a bare connect (the spellings' checks) sends nothing: just close it
        await reader.readuntil(b"\\r\\n\\r\\n")
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "::", int(sys.argv[1]), family=socket.AF_INET6)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


@pytest.fixture(scope="module")
def link() -> Iterator[tuple[str, str]]:
    """The client namespace and its interface, linked to a server on fe80::1."""
    tag = f"hdll-{os.getpid()}"
    client, server = f"{tag}-c", f"{tag}-s"
    # Interface names are at most 15 characters.
    client_if, server_if = f"ll{os.getpid() % 100000}c", f"ll{os.getpid() % 100000}s"
    try:
        run_ip("netns", "add", client)
        run_ip("netns", "add", server)
    except (OSError, RuntimeError) as exc:
        for name in (client, server):
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)  # noqa: S603, S607
        if os.environ.get("CI") == "true":
            pytest.fail(f"the link-local lab must run in CI, but: {exc}")
        pytest.skip(f"network namespaces unavailable: {exc}")
    process = None
    try:
        peer = ("peer", "name", server_if, "netns", server)
        run_ip("link", "add", client_if, "netns", client, "type", "veth", *peer)
        for ns, ifname, address in ((client, client_if, "fe80::2"), (server, server_if, "fe80::1")):
            # No automatic link-local address and no DAD: exactly the one address, at once.
            run_ip("-n", ns, "link", "set", ifname, "addrgenmode", "none")
            run_ip("-n", ns, "link", "set", "lo", "up")
            run_ip("-n", ns, "link", "set", ifname, "up")
            run_ip("-n", ns, "address", "add", f"{address}/64", "dev", ifname, "nodad")
        process = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
            ["ip", "netns", "exec", server, sys.executable, "-c", SERVER, str(PORT)],  # noqa: S607
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield client, client_if
    finally:
        if process is not None:
            process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()
        for name in (client, server):
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)  # noqa: S603, S607


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_every_zone_spelling_connects(link: tuple[str, str], loop_name: str) -> None:
    client, client_if = link
    script = str(HERE / "lab" / "link_local_client.py")
    command = ["ip", "netns", "exec", client, sys.executable, script, loop_name, client_if]
    result = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [*command, str(PORT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "zone name": "fe80::1",
        "zone number": "fe80::1",
        "scope id": "fe80::1",
        "connect() literal": "fe80::1",
        "aiohttp": 200,
    }
