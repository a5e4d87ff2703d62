"""`make dev`: the demo stack plus a real webserver and daemon, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from etl_assets.devstack.postgres import free_port
from etl_assets.devstack.stack import PROJECT_ROOT

DAEMON_STATUS = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"


def graphql(port: int, query: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for_daemon(port: int, process: subprocess.Popen[str], deadline: float) -> list[str]:
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            data = graphql(port, DAEMON_STATUS)
            statuses = data["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]  # type: ignore[index]
            healthy = [s["daemonType"] for s in statuses if s["healthy"]]  # type: ignore[index]
            if "SENSOR" in healthy:
                return healthy
        except OSError:
            pass
        time.sleep(2)
    pytest.fail("the webserver and daemon did not come up in time")


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_dev_serves_the_ui_and_daemon_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "etl_assets.devstack.cli",
            "dev",
            "--state-dir",
            str(tmp_path),
            "--port",
            str(port),
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        healthy = wait_for_daemon(port, process, time.monotonic() + 300)
        assert {"SENSOR", "SCHEDULER"} <= set(healthy)
        runs = graphql(port, "{ runsOrError { ... on Runs { results { status } } } }")
        statuses = {r["status"] for r in runs["data"]["runsOrError"]["results"]}  # type: ignore[index]
        assert statuses == {"SUCCESS"}
        env_file = (tmp_path / "stack.env").read_text()
        pg_port = int(env_file.split("@127.0.0.1:")[1].split("/")[0])
        assert port_is_open(pg_port)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output
        assert "stopped the webserver, the daemon, S3 and Postgres" in output
        assert not port_is_open(port)
        assert not port_is_open(pg_port)
    finally:
        if process.poll() is None:
            process.kill()
