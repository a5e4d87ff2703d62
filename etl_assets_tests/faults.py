"""An HTTP proxy in front of the local S3 endpoint that fails requests on cue.

Every request is relayed to the real endpoint (moto's server) unless a fault says otherwise:
answer some part uploads with `500 InternalError` (as S3 does under load), stop answering
altogether (an endpoint gone mid-upload), or follow a list of `Rule`s: answer 500, drop the
request unanswered, or relay it and then drop the reply (S3 did the work, the client never
heard). The writer under test talks HTTP to this proxy exactly as it would to S3.
"""

from __future__ import annotations

import http.client
import http.server
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self
from urllib.parse import parse_qs, urlparse

INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


Request = Literal["any", "bucket_check", "part_upload", "complete", "object_put"]
Action = Literal["error_500", "drop", "drop_reply"]


@dataclass
class Rule:
    """Do `action` to the next `times` requests of one kind."""

    request: Request
    action: Action
    times: int

    def matches(self, method: str, path: str) -> bool:
        """Whether a request is of this rule's kind."""
        query = parse_qs(urlparse(path).query, keep_blank_values=True)
        key = urlparse(path).path.strip("/").partition("/")[2]
        kinds = {
            "any": True,
            "bucket_check": method == "HEAD" and not key,
            "part_upload": method == "PUT" and "partNumber" in query,
            "complete": method == "POST" and "uploadId" in query,
            "object_put": method == "PUT" and bool(key) and "partNumber" not in query,
        }
        return kinds[self.request]


@dataclass
class Faults:
    """What the proxy does wrong. Counters are shared by the proxy's threads.

    `rules` apply one after the other: only the first rule with turns left is armed, and a
    request it does not match is relayed as usual.
    """

    rules: list[Rule] = field(default_factory=list[Rule])
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

    def _armed_action(self, method: str, path: str) -> Action | None:
        """The action of the armed rule, if it matches this request (call under the lock)."""
        armed = next((rule for rule in self.faults.rules if rule.times > 0), None)
        if armed is None or not armed.matches(method, path):
            return None
        armed.times -= 1
        return armed.action

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
            action = self._armed_action(request.command, request.path)
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
        if vanished or action == "drop":
            # Gone: the connection closes without a response.
            _hang_up(request)
            return
        if fail or action == "error_500":
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
            if action == "drop_reply":
                # S3 did it; the client never hears.
                _hang_up(request)
                return
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


def _hang_up(request: http.server.BaseHTTPRequestHandler) -> None:
    request.close_connection = True
    request.connection.close()
