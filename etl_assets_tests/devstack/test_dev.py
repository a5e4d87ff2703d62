"""`make dev`: the demo stack plus a real webserver and daemon, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from etl_assets.components.postgres_tables import declared_tables
from etl_assets.devstack.cli import dev, port_in_use
from etl_assets.devstack.s3 import S3Endpoint
from etl_assets.devstack.stack import LAKE_BUCKET, LAKE_PREFIX, PROJECT_ROOT
from etl_assets.devstack.verify import compare_table_partition
from etl_assets_tests.support import daemon_report, graphql, healthy_daemons, wait_for


def ui_port(log: Path, process: subprocess.Popen[bytes]) -> int | None:
    """The port `dev` printed for the UI; fails with the output if `dev` ended instead."""
    output = log.read_text()
    assert process.poll() is None, f"dev exited with {process.returncode}:\n{output[-5000:]}"
    found = re.search(r"Dagster UI: http://127\.0\.0\.1:(\d+)", output)
    return int(found[1]) if found else None


def serving(log: Path, process: subprocess.Popen[bytes]) -> bool:
    port = ui_port(log, process)
    return port is not None and {"SENSOR", "SCHEDULER"} <= healthy_daemons(port)


@pytest.mark.slow
def test_dev_serves_the_ui_and_daemon_until_interrupted(tmp_path: Path) -> None:
    # A file, not a pipe: nobody reads while the stack runs, and a full pipe would block it.
    state, log = tmp_path / "state", tmp_path / "dev.log"
    output_file = log.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "etl_assets.devstack.cli",
            "dev",
            "--state-dir",
            str(state),
            # A port taken when the UI starts: one chosen before the demo runs could be handed
            # to one of their many connections in the meantime.
            "--port",
            "0",
        ],
        cwd=PROJECT_ROOT,
        stdout=output_file,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_for(lambda: serving(log, process), timeout=300, what="the UI and daemon", poll=2)
        except AssertionError as timed_out:
            port = ui_port(log, process)
            daemons = daemon_report(port) if port else "no UI port printed"
            raise AssertionError(
                f"{timed_out}; the daemons:\n{daemons}\ndev printed:\n{log.read_text()[-5000:]}"
            ) from None
        port = ui_port(log, process)
        assert port is not None
        assert "QUEUED_RUN_COORDINATOR" in healthy_daemons(port)
        assert "SENSOR: healthy=True" in daemon_report(port).splitlines()
        runs = graphql(port, "{ runsOrError { ... on Runs { results { status } } } }")
        assert {r["status"] for r in runs["runsOrError"]["results"]} == {"SUCCESS"}
        env_file = (state / "stack.env").read_text()
        pg_port = int(env_file.split("@127.0.0.1:")[1].split("/")[0])
        assert port_in_use(pg_port)
        # The lake is up for a person to explore: an outside reader finds the demo's partitions.
        variables = dict(
            line.removeprefix("export ").split("=", 1) for line in env_file.splitlines() if line
        )
        endpoint = S3Endpoint(url=variables["AWS_ENDPOINT_URL"].strip("'"))
        source = make_conninfo(
            variables["ETL_ASSETS_DAGSTER_PG_URL"]
            .strip("'")
            .replace("postgresql+psycopg2://", "postgresql://"),
            dbname="shop",
        )
        orders = declared_tables()["raw/shop/sales/orders"]
        comparison = compare_table_partition(
            source,
            endpoint,
            f"{LAKE_BUCKET}/{LAKE_PREFIX}",
            asset="raw/shop/sales/orders",
            table=orders,
            key="2026-10-05",
        )
        assert comparison.equal, comparison.describe()
        assert comparison.source_rows > 0
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
        output = log.read_text()
        assert process.returncode == 0, output[-5000:]
        assert "does not match the name" not in output  # the dg project names its location
        assert "source pools: postgres_shop=3" in output
        assert (
            "WAL sensor ready to turn on under Automation: postgres_shop__wal"
            " (slot etl_assets_shop: web.page_views)" in output
        )
        assert "stopped the webserver, the daemon, S3 and Postgres" in output
        assert not port_in_use(port)
        assert not port_in_use(pg_port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output_file.close()


def test_dev_refuses_a_busy_port_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = int(listener.getsockname()[1])
        assert dev(tmp_path / "state", busy) == 1
    assert f"port {busy} is in use on 127.0.0.1" in capsys.readouterr().out
    assert not (tmp_path / "state").exists()
