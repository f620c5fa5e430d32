"""Ask glibc and happydial to order the same destinations on the same (private) host.

Run as root inside fresh network and mount namespaces, which die with this process
(nothing to clean up, even if it is killed)::

    unshare --net --mount --propagation private -- python selection_oracle.py SPEC

*SPEC* is JSON: ``{"addresses": [...], "routes": [...], "hosts": [...]}``, for example
``{"addresses": ["192.0.2.2/24"], "routes": ["route add default"], "hosts": [...]}``. The script

1. builds the host's network: a veth pair ``hd0``/``hd1`` (up, no automatic link-local
   addresses, no duplicate address detection) with *addresses* (``"192.0.2.2/24"``,
   ``"fd00::2/64"``) on ``hd0``, and *routes* (``ip`` arguments such as
   ``"-6 route add default"``) through it;
2. bind-mounts a private ``/etc/hosts`` naming every address of *hosts* ``oracle.test``,
   one line each in that order, and an empty ``/etc/gai.conf`` (glibc's built-in
   tables, whatever the machine's file says);
3. prints JSON: ``glibc``, the hosts in ``getaddrinfo(AF_UNSPEC)`` order; ``ours``, the
   hosts in :func:`happydial.sort_addr_infos` order with sources from a
   :class:`happydial.SourceAddressCache` (real UDP probes); ``sources``, what the
   probes found.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import happydial

NAME = "oracle.test"
PORT = 443


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)  # noqa: S603 - fixed programs


def _sysctl(path: str, value: str) -> None:
    Path("/proc/sys/net", path).write_text(value, encoding="ascii")


def build_network(addresses: list[str], routes: list[str]) -> None:
    """The veth pair, its addresses and its routes, in this (new) network namespace."""
    # Addresses on hd0 only, all usable at once: no fe80:: of its own, no DAD.
    _sysctl("ipv6/conf/default/addr_gen_mode", "1")
    _sysctl("ipv6/conf/default/accept_dad", "0")
    _run("ip", "link", "set", "lo", "up")
    _run("ip", "link", "add", "hd0", "type", "veth", "peer", "name", "hd1")
    _run("ip", "link", "set", "hd0", "up")
    _run("ip", "link", "set", "hd1", "up")
    for address in addresses:
        extra = ["nodad"] if ":" in address else []
        _run("ip", "address", "add", address, "dev", "hd0", *extra)
    for route in routes:
        _run("ip", *route.split(), "dev", "hd0")


def private_files(hosts: list[str], directory: Path) -> None:
    """Bind-mount our /etc/hosts and an empty /etc/gai.conf (this mount namespace only)."""
    hosts_file = directory / "hosts"
    hosts_file.write_text("".join(f"{host} {NAME}\n" for host in hosts), encoding="ascii")
    gai_conf = directory / "gai.conf"
    gai_conf.write_text("", encoding="ascii")
    _run("mount", "--bind", str(hosts_file), "/etc/hosts")
    _run("mount", "--bind", str(gai_conf), "/etc/gai.conf")


def main() -> None:
    """Build, ask both, print."""
    spec = json.loads(sys.argv[1])
    build_network(spec["addresses"], spec["routes"])
    with tempfile.TemporaryDirectory() as directory:
        private_files(spec["hosts"], Path(directory))
        answer = socket.getaddrinfo(NAME, PORT, socket.AF_UNSPEC, socket.SOCK_STREAM)
    addr_infos = happydial.ip_addresses_to_addr_infos(spec["hosts"], PORT)
    ours = happydial.sort_addr_infos(addr_infos, sources=happydial.SourceAddressCache())
    result = {
        "glibc": [ai[4][0] for ai in answer],
        "ours": [ai[4][0] for ai in ours],
        "sources": {ai[4][0]: happydial.probe_source(ai) for ai in addr_infos},
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
