"""`make demo`'s own code path: embedded stack, real `dg launch` runs, lake checked."""

import re
import socket
from pathlib import Path

import pytest

from etl_assets.devstack.cli import demo


def test_the_demo_publishes_every_partition_equal_to_the_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo(tmp_path / "state") == 0
    output = capsys.readouterr().out
    assert "28 partitions published, 28 equal to the source" in output
    assert "MISMATCH" not in output
    for line in (
        "raw/shop/sales/orders        2026-10-09",
        "raw/shop/web/page_views      2026-10-02",
        "curated/shop/order_payments  2026-10-08",
    ):
        assert line in output
    assert "lake/raw/shop/sales/orders/day=2026-10-01/part-00000.parquet" in output

    # Everything the demo started is stopped: the server's pid file is gone and neither the
    # Postgres nor the S3 port the stack used accepts connections.
    state = tmp_path / "state"
    assert not (state / "postgres" / "data" / "postmaster.pid").exists()
    environment = (state / "stack.env").read_text()
    ports = [int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", environment)]
    assert len(set(ports)) == 2
    for port in set(ports):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
