"""The embedded Postgres the demo and the tests start: it always stops when asked."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from etl_assets.devstack.postgres import EmbeddedPostgres


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as a service user only under root")
def test_a_server_stops_after_a_parent_directory_was_closed_to_its_user(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    server = EmbeddedPostgres(closed / "postgres")
    server.start()
    try:
        # What pytest does to its base temporary directory on every session it starts.
        closed.chmod(stat.S_IRWXU)
        server.stop()
        assert not (server.data_dir / "postmaster.pid").exists()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", server.port)) != 0
    finally:
        closed.chmod(stat.S_IRWXU | stat.S_IXOTH)
        server.stop()
