"""An HTTP proxy in front of the local S3 endpoint that fails requests on cue.

Every request is relayed to the real endpoint (moto's server) unless a fault says otherwise:
answer some part uploads with `500 InternalError` (as S3 does under load), or stop answering
altogether (an endpoint gone mid-upload). The writer under test talks HTTP to this proxy exactly
as it would to S3.
"""

from __future__ import annotations

import http.client
import http.server
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlparse

INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


@dataclass
class Faults:
    """What the proxy does wrong. Counters are shared by the proxy's threads."""

    failing_part_uploads: int = 0
    """Answer this many part uploads (PUT ?partNumber=) with 500, then relay them again."""
    vanish_after_part_uploads: int | None = None
    """After this many part uploads have been relayed, drop every request without an answer."""
    part_uploads_seen: int = 0
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    """(method, path with query, headers with lower-case names) of every request received."""
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultyS3Proxy:
    """Listens on 127.0.0.1 and relays to `target_url`, applying `faults`."""

    def __init__(self, target_url: str, faults: Faults | None = None) -> None:
        self.target = urlparse(target_url)
        self.faults = faults or Faults()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy.handle(self)

            def do_HEAD(self) -> None:
                proxy.handle(self)

            def do_PUT(self) -> None:
                proxy.handle(self)

            def do_POST(self) -> None:
                proxy.handle(self)

            def do_DELETE(self) -> None:
                proxy.handle(self)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's endpoint URL, for `endpoint_url`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        """Relay one request, or fail it as the faults say."""
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        faults = self.faults
        query = parse_qs(urlparse(request.path).query)
        is_part_upload = request.command == "PUT" and "partNumber" in query
        with faults.lock:
            headers = {name.lower(): value for name, value in request.headers.items()}
            faults.requests.append((request.command, request.path, headers))
            vanished = (
                faults.vanish_after_part_uploads is not None
                and faults.part_uploads_seen >= faults.vanish_after_part_uploads
            )
            fail = False
            if is_part_upload and not vanished:
                if faults.failing_part_uploads > 0:
                    faults.failing_part_uploads -= 1
                    fail = True
                else:
                    faults.part_uploads_seen += 1
        if vanished:
            # Gone: the connection closes without a response.
            request.close_connection = True
            request.connection.close()
            return
        if fail:
            self._respond(request, 500, {"Content-Type": "application/xml"}, INTERNAL_ERROR)
            return
        connection = http.client.HTTPConnection(
            self.target.hostname or "127.0.0.1", self.target.port, timeout=60
        )
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            relayed = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            self._respond(request, response.status, relayed, payload)
        finally:
            connection.close()

    def _respond(
        self,
        request: http.server.BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        payload: bytes,
    ) -> None:
        request.send_response(status)
        for name, value in headers.items():
            if name.lower() != "content-length":
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(payload)
