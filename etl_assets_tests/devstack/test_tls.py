import socket
import ssl
import struct
from pathlib import Path

from cryptography import x509

from etl_assets.devstack.postgres import ServerAddress
from etl_assets.devstack.tls import SSL_REQUEST_CODE, TlsTerminator, make_certificates


def test_the_server_certificate_names_the_host_and_is_signed_by_the_ca(tmp_path: Path) -> None:
    files = make_certificates(tmp_path, ("localhost", "127.0.0.2"))
    server = x509.load_pem_x509_certificate(files.server_certificate.read_bytes())
    ca = x509.load_pem_x509_certificate(files.ca_certificate.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.2"]
    server.verify_directly_issued_by(ca)
    assert files.server_key.stat().st_mode & 0o077 == 0


def test_only_clients_that_ask_for_tls_are_served(pg_server: ServerAddress, tmp_path: Path) -> None:
    files = make_certificates(tmp_path)
    with TlsTerminator(pg_server.host, pg_server.port, files) as terminator:
        # A plain startup message (protocol 3.0) is refused: the connection just closes.
        with socket.create_connection(("127.0.0.1", terminator.port), timeout=5) as plain:
            plain.sendall(struct.pack("!ii", 8, 196608))
            assert plain.recv(1) == b""
        # An SSLRequest is answered 'S', then the handshake verifies against the CA.
        context = ssl.create_default_context(cafile=str(files.ca_certificate))
        with socket.create_connection(("127.0.0.1", terminator.port), timeout=5) as raw:
            raw.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE))
            assert raw.recv(1) == b"S"
            with context.wrap_socket(raw, server_hostname="localhost") as secure:
                assert secure.version() in ("TLSv1.2", "TLSv1.3")
