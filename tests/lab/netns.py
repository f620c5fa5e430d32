"""Build, drive and tear down the lab: two namespaces, the relay, the server, client runs.

:class:`Lab` owns everything it creates. :meth:`Lab.start` either returns a working lab or
leaves nothing behind; :meth:`Lab.close` is idempotent and removes the processes, the
namespaces and ``/etc/netns/<name>``. The relay and the server also stop by themselves when
their stdin reaches its end, and a client run is killed by the kernel when the test run dies
(``PR_SET_PDEATHSIG``), so even a killed test run leaves no process behind; a later run
deletes the namespaces a dead run left (their names carry its pid).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

HERE = Path(__file__).resolve().parent
ETC_NETNS = Path("/etc/netns")

# Only documentation prefixes (RFC 3849, RFC 5737); nothing routes anywhere else.
CLIENT_V4 = "198.51.100.2"
CLIENT_V6 = "2001:db8:c::2"
CLIENT_NETS = ("198.51.100.0/24", "2001:db8:c::/64")
DNS_V4 = "192.0.2.53"
DNS_V6 = "2001:db8:53::53"
POOL_V4 = ipaddress.ip_network("203.0.113.0/24")
POOL_V6 = ipaddress.ip_network("2001:db8:5::/64")
POOL_SIZE = 250
# The NAT64's network-specific prefix (RFC 8215's local-use 64:ff9b:1::/48): the
# Well-Known Prefix must not carry the documentation addresses above (RFC 6052 s. 3.1).
NAT64_PREFIX = "64:ff9b:1::/96"
SERVER_NETS = ("192.0.2.0/24", str(POOL_V4), "2001:db8:53::/64", str(POOL_V6), NAT64_PREFIX)
PORT = 8080

RESOLV_CONF = f"""\
# happydial lab: the lab's authoritative server only; one try, no retry before 5 s.
nameserver {DNS_V4}
options timeout:5 attempts:1
"""
RESOLV_CONF_V6 = RESOLV_CONF.replace(DNS_V4, DNS_V6)  # an IPv6-only client's
# RFC 7050 section 2.2: the A records a DNS64 synthesises ipv4only.arpa's AAAA from.
IPV4ONLY_ARPA = {"ipv4only.arpa": {"A": {"addresses": ["192.0.0.170", "192.0.0.171"]}}}
NSSWITCH_CONF = "hosts: files dns\n"
HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
# Every lab namespace: hd- (test_lab), hdlan- (test_lab_delays), hdll- (test_lab_link_local).
NAME_PATTERN = re.compile(r"^hd(?:lan|ll)?-(\d+)-[cs]$")


class LabUnavailableError(Exception):
    """This machine cannot host the lab (not root, no namespaces, no TUN, no dnspython)."""


@dataclass(frozen=True)
class Rule:
    """What the relay does to one server address: drop its packets, or delay them."""

    drop: bool = False
    rtt: float = 0.0


DEAD = Rule(drop=True)


def run_ip(*args: str, stdin: str | None = None) -> str:
    """Run ``ip`` with *args*; its stdout. Raises RuntimeError with ip's complaint."""
    result = subprocess.run(  # noqa: S603 - fixed program, arguments built here
        ["ip", *args],  # noqa: S607 - ip is found on PATH like any admin tool
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)[:200]} failed: {result.stderr.strip()}")
    return result.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_namespaces() -> list[str]:
    """Delete lab namespaces (and their /etc/netns) whose creating process is gone."""
    removed = []
    for line in run_ip("netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        match = NAME_PATTERN.match(name)
        if match and not _pid_alive(int(match.group(1))):
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)  # noqa: S603, S607
            shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
            removed.append(name)
    return removed


class Child:
    """A lab process driven by JSON lines on its stdin, answering one line per request."""

    def __init__(self, what: str, args: list[str], timeout: float = 10.0) -> None:
        self.what = what
        self.stderr: str | None = None  # set when the process has ended
        self.process = subprocess.Popen(  # noqa: S603 - our own scripts, fixed arguments
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = self._readline(timeout)
        except RuntimeError:
            self.close()
            raise
        if line.strip() != "ready":
            error = self.close()
            raise RuntimeError(f"{what} did not start: {line!r} {error}")

    def _readline(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"{self.what} did not answer within {timeout} s")
        line = self.process.stdout.readline()
        if not line:
            error = self.close()
            raise RuntimeError(f"{self.what} exited: {error}")
        return line

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request; its reply. Raises RuntimeError if the child refuses or fails."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        reply: dict[str, Any] = json.loads(self._readline(10.0))
        if not reply.get("ok"):
            raise RuntimeError(f"{self.what} refused {op}: {reply.get('error')}")
        return reply

    def close(self) -> str:
        """End the process (EOF first, then kill); what it wrote on stderr. Idempotent."""
        if self.stderr is not None:
            return self.stderr
        process = self.process
        if process.stdin is not None and not process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        error = process.stderr.read() if process.stderr is not None else ""
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        self.stderr = error.strip()
        return self.stderr


class Lab:
    """The client and server namespaces, the relay between them and the server processes."""

    def __init__(self) -> None:
        pid = os.getpid()
        self.client_ns = f"hd-{pid}-c"
        self.server_ns = f"hd-{pid}-s"
        self.client_tun = f"hdc{pid}"[:15]
        self.server_tun = f"hds{pid}"[:15]
        self.namespaces: list[str] = []
        self.relay: Child | None = None
        self.server: Child | None = None
        self.hosts: dict[str, list[str]] = {}
        self._made_etc_netns = False
        self._next_v4 = 1
        self._next_v6 = 1

    # -- life cycle ------------------------------------------------------------------------

    @classmethod
    def start(cls) -> Self:
        """Build a lab. Raises LabUnavailableError if this machine cannot host one."""
        check_environment()
        lab = cls()
        try:
            lab._build()
        except BaseException as exc:
            try:
                lab.close()
            except RuntimeError as cleanup:
                exc.add_note(f"and the cleanup failed too: {cleanup}")
            raise
        return lab

    def _build(self) -> None:
        with contextlib.suppress(RuntimeError):  # best effort; `netns add` says what is wrong
            reap_stale_namespaces()
        for name in (self.client_ns, self.server_ns):
            try:
                run_ip("netns", "add", name)
            except RuntimeError as exc:
                raise LabUnavailableError(f"cannot create network namespaces: {exc}") from None
            self.namespaces.append(name)
        self._made_etc_netns = not ETC_NETNS.exists()
        etc = ETC_NETNS / self.client_ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(RESOLV_CONF)
        (etc / "nsswitch.conf").write_text(NSSWITCH_CONF)
        self.write_hosts()
        try:
            self.relay = Child("relay", self._relay_command())
        except RuntimeError as exc:
            raise LabUnavailableError(f"cannot create TUN devices: {exc}") from None
        run_ip("link", "set", self.client_tun, "netns", self.client_ns)
        run_ip("link", "set", self.server_tun, "netns", self.server_ns)
        run_ip("-n", self.client_ns, "-batch", "-", stdin=self._client_config())
        run_ip("-n", self.server_ns, "-batch", "-", stdin=self._server_config())
        self.server = Child(
            "server",
            [
                *self.exec_prefix(self.server_ns),
                str(HERE / "server.py"),
                "--dns",
                DNS_V4,
                "--dns",
                DNS_V6,
            ],
        )

    def _relay_command(self) -> list[str]:
        command = [
            sys.executable,
            str(HERE / "relay.py"),
            "--client-tun",
            self.client_tun,
            "--server-tun",
            self.server_tun,
        ]
        for net in CLIENT_NETS:
            command += ["--client-net", net]
        for net in SERVER_NETS:
            command += ["--server-net", net]
        return command

    def _client_config(self) -> str:
        tun = self.client_tun
        lines = [
            "link set lo up",
            f"link set {tun} up",
            f"addr add {CLIENT_V4}/32 dev {tun}",
            f"addr add {CLIENT_V6}/128 dev {tun} nodad",
        ]
        for net in SERVER_NETS:
            src = CLIENT_V6 if ":" in net else CLIENT_V4
            lines.append(f"route add {net} dev {tun} src {src}")
        return "\n".join(lines) + "\n"

    def _server_config(self) -> str:
        tun = self.server_tun
        lines = [
            "link set lo up",
            f"link set {tun} up",
            f"addr add {DNS_V4}/32 dev lo",
            f"addr add {DNS_V6}/128 dev lo",
        ]
        for i in range(1, POOL_SIZE + 1):
            lines.append(f"addr add {POOL_V4[i]}/32 dev lo")
            lines.append(f"addr add {POOL_V6[i]}/128 dev lo")
        lines += [f"route add {net} dev {tun}" for net in CLIENT_NETS]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        """Stop the processes, delete the namespaces and their /etc/netns; idempotent.

        Raises:
            RuntimeError: After everything is cleaned up, if a namespace could not be
                deleted or a child process wrote on stderr.
        """
        errors = []
        for attribute in ("server", "relay"):
            child: Child | None = getattr(self, attribute)
            setattr(self, attribute, None)
            if child is not None and (complaint := child.close()):
                # A traceback in a child (say, the DNS server's) must not pass unseen.
                errors.append(f"{child.what} wrote on stderr:\n{complaint}")
        while self.namespaces:
            name = self.namespaces.pop()
            try:
                run_ip("netns", "delete", name)
            except RuntimeError as exc:
                errors.append(str(exc))
        for name in (self.client_ns, self.server_ns):
            shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
        if self._made_etc_netns:
            with contextlib.suppress(OSError):  # not empty: another run's files are there
                ETC_NETNS.rmdir()
        if errors:
            raise RuntimeError("lab teardown: " + "; ".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- per-scenario configuration ---------------------------------------------------------

    def allocate(self, v6: int = 0, v4: int = 0) -> tuple[list[str], list[str]]:
        """Fresh server addresses, never handed out before in this lab (no cross-talk)."""
        if self._next_v6 + v6 > POOL_SIZE + 1 or self._next_v4 + v4 > POOL_SIZE + 1:
            raise RuntimeError("the lab's address pool is exhausted")
        six = [str(POOL_V6[i]) for i in range(self._next_v6, self._next_v6 + v6)]
        four = [str(POOL_V4[i]) for i in range(self._next_v4, self._next_v4 + v4)]
        self._next_v6 += v6
        self._next_v4 += v4
        return six, four

    def configure(
        self,
        *,
        rules: dict[str, Rule] | None = None,
        live: list[str] | tuple[str, ...] = (),
        zone: dict[str, dict[str, dict[str, Any]]] | None = None,
    ) -> None:
        """Replace the relay's rules, add listeners on *live* and add names to the zone.

        Args:
            rules: Server address -> what the relay does to its packets (the whole set).
            live: Addresses that accept on :data:`PORT`; the others of the pool refuse.
            zone: Name -> record type -> ``{"addresses": [...], "delay": s, "rcode": ...}``.
        """
        assert self.relay is not None
        assert self.server is not None
        wire_rules = {
            address: {"drop": rule.drop, "rtt": rule.rtt} for address, rule in (rules or {}).items()
        }
        self.relay.request("rules", rules=wire_rules)
        if live:
            self.server.request("listen", addresses=list(live), port=PORT)
        if zone:
            self.server.request("zone", names=zone)

    @contextlib.contextmanager
    def ipv6_only(self) -> Iterator[None]:
        """Make the client IPv6-only, behind a DNS64 and a NAT64, for the ``with`` body.

        The client loses its IPv4 address and routes, and asks the DNS server over
        IPv6; the server answers as a DNS64 with :data:`NAT64_PREFIX`. Everything is
        put back afterwards, whatever the body did.
        """
        assert self.server is not None
        tun, etc = self.client_tun, ETC_NETNS / self.client_ns
        v4_routes = [net for net in SERVER_NETS if ":" not in net]
        self.server.request("zone", names=IPV4ONLY_ARPA)
        self.server.request("dns64", prefix=NAT64_PREFIX)
        lines = [f"route del {net} dev {tun}" for net in v4_routes]
        run_ip("-n", self.client_ns, "-batch", "-", stdin="\n".join(lines) + "\n")
        run_ip("-n", self.client_ns, "addr", "del", f"{CLIENT_V4}/32", "dev", tun)
        (etc / "resolv.conf").write_text(RESOLV_CONF_V6)
        try:
            yield
        finally:
            (etc / "resolv.conf").write_text(RESOLV_CONF)
            run_ip("-n", self.client_ns, "addr", "add", f"{CLIENT_V4}/32", "dev", tun)
            lines = [f"route add {net} dev {tun} src {CLIENT_V4}" for net in v4_routes]
            run_ip("-n", self.client_ns, "-batch", "-", stdin="\n".join(lines) + "\n")
            self.server.request("dns64", prefix=None)

    def nat64(self, ipv4_addresses: list[str]) -> list[str]:
        """Put *ipv4_addresses* behind the NAT64; their synthesised IPv6 addresses."""
        assert self.server is not None
        base = int(ipaddress.IPv6Network(NAT64_PREFIX).network_address)
        synthesised = [
            str(ipaddress.IPv6Address(base | int(ipaddress.IPv4Address(a)))) for a in ipv4_addresses
        ]
        lines = [f"addr add {address}/128 dev lo nodad" for address in synthesised]
        run_ip("-n", self.server_ns, "-batch", "-", stdin="\n".join(lines) + "\n")
        self.server.request("nat64", prefix=NAT64_PREFIX, addresses=ipv4_addresses, port=PORT)
        return synthesised

    def write_hosts(self, entries: dict[str, list[str]] | None = None) -> None:
        """Add *entries* (name -> addresses) to the client namespace's /etc/hosts."""
        self.hosts.update(entries or {})
        lines = [HOSTS] + [
            f"{address} {name}\n" for name, addresses in self.hosts.items() for address in addresses
        ]
        (ETC_NETNS / self.client_ns / "hosts").write_text("".join(lines))

    def stats(self) -> dict[str, Any]:
        """What the relay forwarded and dropped, and what the server saw."""
        assert self.relay is not None
        assert self.server is not None
        return {"relay": self.relay.request("stats"), "server": self.server.request("stats")}

    # -- client runs ------------------------------------------------------------------------

    def exec_prefix(self, namespace: str) -> list[str]:
        """The command prefix that runs this interpreter inside *namespace*."""
        return ["ip", "netns", "exec", namespace, sys.executable, "-W", "error"]

    def _client_args(self, spec: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of a ``client.py`` run with *spec*."""
        import happydial  # the copy under test, wherever it was imported from

        env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE", "COVERAGE"))}
        env["PYTHONPATH"] = str(Path(happydial.__file__).resolve().parent.parent)
        command = [
            *self.exec_prefix(self.client_ns),
            str(HERE / "client.py"),
            json.dumps({"parent": os.getpid(), **spec}),
        ]
        return command, env

    def run_client(self, spec: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Run ``client.py`` with *spec* in the client namespace; its JSON report."""
        command, env = self._client_args(spec)
        result = subprocess.run(  # noqa: S603 - our own script, fixed arguments
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0 or result.stderr.strip():
            raise AssertionError(
                f"client failed (exit {result.returncode}):\n{result.stderr}\n{result.stdout}"
            )
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def run_client_sequence(
        self,
        spec: dict[str, Any],
        on_pause: Callable[[str], None],
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Run a ``sequence`` spec; ``on_pause(label)`` runs at each of its pauses.

        The client stops at every ``{"pause": label}`` step until *on_pause* (which
        reconfigures the lab, say) has returned. Its JSON report.
        """
        command, env = self._client_args({"call": "sequence", **spec})
        process = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        last = ""
        try:
            while True:
                wait = deadline - time.monotonic()
                ready, _, _ = select.select([process.stdout], [], [], max(wait, 0))
                if not ready:
                    raise AssertionError(f"client sequence did not finish within {timeout} s")
                last = process.stdout.readline()
                message = json.loads(last) if last.startswith("{") else None
                if not isinstance(message, dict) or set(message) != {"pause"}:
                    break
                on_pause(message["pause"])
                process.stdin.write("go\n")
                process.stdin.flush()
            _, error = process.communicate(timeout=max(deadline - time.monotonic(), 1))
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        if process.returncode != 0 or error.strip() or not last:
            raise AssertionError(f"client failed (exit {process.returncode}):\n{error}\n{last}")
        report: dict[str, Any] = json.loads(last)
        return report


def check_environment() -> None:
    """Raise LabUnavailableError unless this process can build a lab."""
    if sys.platform != "linux":
        raise LabUnavailableError("network namespaces need Linux")
    if os.geteuid() != 0:
        raise LabUnavailableError("needs root (network namespaces and TUN devices)")
    if shutil.which("ip") is None:
        raise LabUnavailableError("the ip command (iproute2) is not installed")
    if not Path("/dev/net/tun").exists():
        raise LabUnavailableError("/dev/net/tun does not exist")
    try:
        import dns.message  # noqa: F401 - only checking that the server can import it
    except ImportError:
        raise LabUnavailableError("dnspython is not installed (pip install dnspython)") from None
