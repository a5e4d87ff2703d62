"""A relay in front of a Postgres server that records what each connection asked for at startup.

The server's own log names every session and every statement, but not the settings a client
sent in its startup packet (`options=-c name=value ...`, `application_name`). The relay reads
each connection's startup packet on its way through, keyed by the port it connected to the
server from: the `remote_port` the server logs for that session.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Self

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


@dataclass(frozen=True)
class Startup:
    """The parameters of one startup packet (`user`, `database`, `options`, ...)."""

    parameters: dict[str, str]

    def settings(self) -> dict[str, str]:
        """The server settings the connection asked for: `-c name=value` in `options`, and
        the parameters that are settings themselves (`application_name`, ...)."""
        settings = {
            key: value
            for key, value in self.parameters.items()
            if key not in ("user", "database", "options", "replication")
        }
        words = self.parameters.get("options", "").split()
        for index, word in enumerate(words):
            setting = words[index + 1] if word == "-c" and index + 1 < len(words) else None
            if word.startswith("--") or (word.startswith("-c") and len(word) > 2):
                setting = word[2:]
            if setting and "=" in setting:
                name, value = setting.split("=", 1)
                settings[name.replace("-", "_")] = value
        return settings


@dataclass
class StartupRelay:
    """Listens on 127.0.0.1 and relays every connection to the server unchanged."""

    server_host: str
    server_port: int
    startups: dict[int, Startup] = field(default_factory=dict)
    """Startup packet by the relay's port towards the server (the server's `remote_port`)."""
    _listener: socket.socket = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, name="startup-relay", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection((self.server_host, self.server_port)) as server:
            local_port = int(server.getsockname()[1])
            try:
                startup = self._pass_startup(client, server)
            except (OSError, EOFError):
                return
            if startup is not None:
                with self._lock:
                    self.startups[local_port] = startup
            upstream = threading.Thread(target=_pump, args=(client, server), daemon=True)
            upstream.start()
            _pump(server, client)
            upstream.join()

    def _pass_startup(self, client: socket.socket, server: socket.socket) -> Startup | None:
        """Relay the packets before authentication; the startup packet's parameters."""
        while True:
            header = _read_exactly(client, 8)
            length, code = struct.unpack("!ii", header)
            body = _read_exactly(client, length - 8)
            server.sendall(header + body)
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                answer = _read_exactly(server, 1)
                client.sendall(answer)
                if answer != b"N":
                    raise EOFError("the relay cannot read an encrypted connection")
                continue
            if code == CANCEL_REQUEST:
                return None
            words = body.split(b"\0")
            pairs = dict(zip(words[0::2], words[1::2], strict=False))
            return Startup({k.decode(): v.decode() for k, v in pairs.items() if k})


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError("the connection closed during startup")
        data += chunk
    return data


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy one direction until it ends, then end the other side's writing."""
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            target.sendall(chunk)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)
