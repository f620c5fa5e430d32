"""The lab's wire: a userspace relay between two TUN devices, with per-address delays and drops.

Run as a script by the lab (``python tests/lab/relay.py --client-tun ... --server-tun ...``),
in the root network namespace. It creates both TUN devices itself (non-persistent, so they
vanish when this process exits), prints ``ready``, and the lab then moves one device into
each namespace. From then on it forwards every IP packet read from one device to the other:

* from the client device, only packets from a client prefix to a server prefix;
* from the server device, only packets from a server prefix to a client prefix;
* anything else (router solicitations, MLD reports, ...) is dropped and counted.

A rule names a *server* address: packets to it (client side) and from it (server side) are
held for half the rule's round-trip time each way, or dropped (a dead address). Addresses
without a rule are forwarded at once.

Control: one JSON object per line on stdin, one JSON reply per line on stdout.

* ``{"op": "rules", "rules": {"2001:db8:5::1": {"rtt": 0.7}, "203.0.113.9": {"drop": true}}}``
  replaces the rule set;
* ``{"op": "stats"}`` answers with packets forwarded and dropped per server address.

End of input (the lab closed the pipe, or died) stops the relay.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import ipaddress
import json
import os
import select
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65_536

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def open_tun(name: str) -> int:
    """Create the non-persistent TUN device *name* (no packet-info header) and return its fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def addresses(packet: bytes) -> tuple[bytes, bytes] | None:
    """The packed (source, destination) of an IPv4 or IPv6 packet; None if it is neither."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        return packet[12:16], packet[16:20]
    if version == 6 and len(packet) >= 40:
        return packet[8:24], packet[24:40]
    return None


def packed(address: str) -> bytes:
    """An IP address in any spelling, as the bytes found in a packet header."""
    return ipaddress.ip_address(address).packed


def inside(address: bytes, networks: list[IPNetwork]) -> bool:
    """Whether the packed *address* falls in one of *networks*."""
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in networks)


@dataclass
class Rule:
    """What happens to the packets of one server address."""

    drop: bool = False
    rtt: float = 0.0


@dataclass
class Relay:
    """Two TUN fds, the rules, and the packets waiting for their release time."""

    client_fd: int
    server_fd: int
    client_nets: list[IPNetwork]
    server_nets: list[IPNetwork]
    rules: dict[bytes, Rule] = field(default_factory=dict)
    queue: list[tuple[float, int, int, bytes]] = field(default_factory=list)
    sequence: int = 0
    forwarded: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)

    def receive(self, fd: int) -> None:
        """Read every packet waiting on *fd* and queue or drop each."""
        from_client = fd == self.client_fd
        while True:
            try:
                packet = os.read(fd, MAX_PACKET)
            except BlockingIOError:
                return
            pair = addresses(packet)
            if pair is None:
                self.dropped["other"] += 1
                continue
            source, destination = pair
            ours, theirs = (destination, source) if from_client else (source, destination)
            if not (inside(ours, self.server_nets) and inside(theirs, self.client_nets)):
                self.dropped["other"] += 1  # never forward anything outside the lab
                continue
            key = str(ipaddress.ip_address(ours))
            rule = self.rules.get(ours, Rule())
            if rule.drop:
                self.dropped[key] += 1
                continue
            self.forwarded[key] += 1
            out = self.server_fd if from_client else self.client_fd
            self.sequence += 1
            release = time.monotonic() + rule.rtt / 2
            heapq.heappush(self.queue, (release, self.sequence, out, packet))

    def release_due(self) -> float | None:
        """Write every packet whose time has come; seconds until the next one, or None."""
        while self.queue:
            release, _, out, packet = self.queue[0]
            wait = release - time.monotonic()
            if wait > 0:
                return wait
            heapq.heappop(self.queue)
            try:
                os.write(out, packet)
            except OSError:
                self.dropped["write-error"] += 1  # the device is down (not configured yet)
        return None

    def command(self, line: str) -> dict[str, object]:
        """Apply one control request; the reply."""
        request = json.loads(line)
        if request["op"] == "rules":
            self.rules = {
                packed(address): Rule(
                    drop=bool(spec.get("drop", False)), rtt=float(spec.get("rtt", 0))
                )
                for address, spec in request["rules"].items()
            }
            return {"ok": True}
        if request["op"] == "stats":
            return {"ok": True, "forwarded": self.forwarded, "dropped": self.dropped}
        return {"ok": False, "error": f"unknown op {request['op']!r}"}

    def run(self) -> None:
        """Relay until stdin reaches its end."""
        poller = select.poll()
        stdin = sys.stdin.fileno()
        for fd in (self.client_fd, self.server_fd, stdin):
            poller.register(fd, select.POLLIN)
        pending = b""
        while True:
            wait = self.release_due()
            timeout = None if wait is None else max(1, int(wait * 1000 + 0.999))
            for fd, _ in poller.poll(timeout):
                if fd != stdin:
                    self.receive(fd)
                    continue
                chunk = os.read(stdin, 65_536)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    reply = self.command(line.decode())
                    sys.stdout.write(json.dumps(reply) + "\n")
                    sys.stdout.flush()


def main() -> None:
    """Parse the arguments, create the devices, say ``ready`` and relay."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client-tun", required=True)
    parser.add_argument("--server-tun", required=True)
    parser.add_argument("--client-net", action="append", required=True, type=ipaddress.ip_network)
    parser.add_argument("--server-net", action="append", required=True, type=ipaddress.ip_network)
    args = parser.parse_args()
    client_fd = open_tun(args.client_tun)
    server_fd = open_tun(args.server_tun)
    relay = Relay(client_fd, server_fd, args.client_net, args.server_net)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        relay.run()
    finally:
        os.close(client_fd)
        os.close(server_fd)


if __name__ == "__main__":
    main()
