"""Real TLS on loopback for the tests: a throwaway CA, certificates, and listeners.

The certificates are made at test time with ``cryptography`` (a test dependency):
a CA, a certificate for ``tls.test`` (the good one) and one for ``other.test`` (a
valid certificate for another name: what a misconfigured address of a pool serves).
Each :class:`Listener` runs in its own thread with blocking sockets, so the servers
put nothing on the loop under test (whose leftovers the fixtures check).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NAME = "tls.test"  # the name the client asks for
OTHER = "other.test"  # the name on the wrong certificate

Kind = Literal["good", "wrong", "silent"]


@dataclass(frozen=True)
class Certificates:
    """Where the PEM files are."""

    ca: Path
    good: tuple[Path, Path]  # (certificate, key) for NAME
    wrong: tuple[Path, Path]  # (certificate, key) for OTHER

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the throwaway CA (and verifies names)."""
        return ssl.create_default_context(cafile=str(self.ca))

    def server_context(self, kind: Kind) -> ssl.SSLContext:
        """The server context of a *kind* listener."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = self.good if kind == "good" else self.wrong
        context.load_cert_chain(str(cert), str(key))
        return context


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_certificates(directory: Path) -> Certificates:
    """A CA and two server certificates signed by it, written under *directory*."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "happydial test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths = {}
    for name in (NAME, OTHER):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        paths[name] = (cert_path, key_path)
    return Certificates(directory / "ca.pem", paths[NAME], paths[OTHER])


class Listener:
    """One loopback listener in a thread: a TLS server, or a TCP one that never speaks.

    ``good`` and ``wrong`` serve TLS (with the good or the wrong certificate) and,
    once the handshake is done, send ``hello from HOST`` (a server that speaks first)
    and wait for the client to close. ``silent`` accepts TCP (the kernel does) and
    never answers the ClientHello.
    """

    def __init__(self, certificates: Certificates, kind: Kind, host: str, port: int) -> None:
        self.kind = kind
        self.host = host
        self.context = None if kind == "silent" else certificates.server_context(kind)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.handshakes = 0  # completed on the server side
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        if self.context is not None:
            self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        with contextlib.closing(conn):
            try:
                tls = self.context.wrap_socket(conn, server_side=True)  # type: ignore[union-attr]
            except OSError:
                return  # the client refused the certificate, or aborted
            with contextlib.closing(tls):
                self.handshakes += 1
                with contextlib.suppress(OSError):
                    tls.sendall(f"hello from {self.host}\n".encode())
                    while tls.recv(4096):
                        pass

    def close(self) -> None:
        """Stop accepting, and wait for the connections' threads to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sock.close()
        for thread in self._threads:
            thread.join(5)


@contextlib.contextmanager
def listeners(certificates: Certificates, *kinds: Kind) -> Iterator[list[Listener]]:
    """One listener per kind, on 127.0.0.1, 127.0.0.2, ... and all on the same port."""
    for _ in range(20):  # a port free on the first address may be taken on another
        opened: list[Listener] = []
        try:
            port = 0
            for i, kind in enumerate(kinds):
                opened.append(Listener(certificates, kind, f"127.0.0.{i + 1}", port))
                port = opened[0].port
        except OSError:
            for listener in opened:
                listener.close()
            continue
        try:
            yield opened
        finally:
            for listener in opened:
                listener.close()
        return
    raise RuntimeError("no port free on every loopback address")  # pragma: no cover


def addr_info(host: str, port: int) -> tuple[int, int, int, str, tuple[str, int]]:
    """The addr_info of an IPv4 *host*."""
    ipaddress.IPv4Address(host)
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))
