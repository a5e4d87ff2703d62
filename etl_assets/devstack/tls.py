"""TLS in front of the embedded Postgres, with a certificate authority made on the spot.

The Postgres server shipped in the `pgserver` wheel is built without SSL. To exercise the
client side of `sslmode=verify-full` (the CA check and the host-name check libpq performs)
against real TLS, `TlsTerminator` listens on loopback, answers Postgres' `SSLRequest`, completes
the TLS handshake with a certificate signed by a local CA, and relays the decrypted protocol to
the plain server behind it, the way a TLS-terminating proxy in front of a database does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
_VALIDITY = dt.timedelta(days=2)


@dataclass(frozen=True)
class CertificateFiles:
    """A CA certificate, and a server certificate and key signed by it (PEM files)."""

    ca_certificate: Path
    server_certificate: Path
    server_key: Path


def make_certificates(
    directory: Path, host_names: tuple[str, ...] = ("localhost",)
) -> CertificateFiles:
    """A new CA and a server certificate for `host_names` (DNS names or IP addresses)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"etl_assets test CA {directory.name}")]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for name in host_names:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_names[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = CertificateFiles(
        ca_certificate=directory / "ca.pem",
        server_certificate=directory / "server.pem",
        server_key=directory / "server.key",
    )
    files.ca_certificate.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.server_certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.server_key.chmod(0o600)
    return files


class TlsTerminator:
    """Accepts Postgres connections over TLS on 127.0.0.1 and relays them to a plain server.

    Clients that do not ask for TLS are refused: everything through this port is encrypted.
    """

    def __init__(
        self, backend_host: str, backend_port: int, certificates: CertificateFiles
    ) -> None:
        self._backend = (backend_host, backend_port)
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(certificates.server_certificate, certificates.server_key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tls-terminator", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    def __enter__(self) -> Self:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = started.result(timeout=10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Connections still open are cut, and every socket closed before the loop goes away.
        for connection in list(self._connections):
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        backend_writer: asyncio.StreamWriter | None = None
        try:
            if not await self._negotiate(reader, writer):
                return
            await writer.start_tls(self._context)
            backend_reader, backend_writer = await asyncio.open_connection(*self._backend)
            await asyncio.gather(_relay(reader, backend_writer), _relay(backend_reader, writer))
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            # A client that rejects our certificate hangs up mid-handshake; either side may
            # hang up at any time after that: the other side is closed below.
            pass
        finally:
            self._connections.discard(task)
            for stream in (writer, backend_writer):
                if stream is not None:
                    stream.close()
                    with contextlib.suppress(Exception):
                        await stream.wait_closed()

    async def _negotiate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer the requests before TLS: GSSAPI encryption is declined, SSL accepted."""
        while True:
            length, code = struct.unpack("!ii", await reader.readexactly(8))
            if length == 8 and code == GSSENC_REQUEST_CODE:
                writer.write(b"N")
                await writer.drain()
                continue
            if length == 8 and code == SSL_REQUEST_CODE:
                writer.write(b"S")
                await writer.drain()
                return True
            writer.close()
            return False


async def _relay(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    """Copy one direction until it ends, then close the other side's writer."""
    try:
        while chunk := await source.read(65536):
            target.write(chunk)
            await target.drain()
    finally:
        target.close()
