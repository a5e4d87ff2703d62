"""Backfills and source protection with a real webserver and daemon on a dagster-postgres instance.

Runs are launched the way the UI launches them, through the webserver's GraphQL API; the
daemon's queued run coordinator and backfill daemon launch them as separate processes.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Generator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any

import dagster as dg
import psycopg
import pytest

from etl_assets.cli.main import declared_pools, set_pool_limits
from etl_assets.devstack.cli import start_daemon, start_webserver
from etl_assets.devstack.demo import declared_tables
from etl_assets.devstack.postgres import free_port
from etl_assets.devstack.stack import LAKE_BUCKET, LAKE_PREFIX, DevStack, dev_stack
from etl_assets.devstack.verify import compare_table_partition
from etl_assets_tests.support import graphql, healthy_daemons, wait_for

pytestmark = pytest.mark.slow

PAGE_VIEWS = ["raw", "shop", "web", "page_views"]
PAYMENTS = ["raw", "shop", "sales", "payments"]


@dataclass
class Running:
    """The stack, the webserver's port, and a daemon that can be restarted."""

    stack: DevStack
    port: int
    daemon: subprocess.Popen[bytes]
    logs: ExitStack

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.stack.dagster_home))

    def log(self, name: str) -> IO[bytes]:
        """A log file for a process, in the stack's directory (kept for debugging)."""
        return self.logs.enter_context((self.stack.base_dir / name).open("wb"))

    def restart_daemon(self) -> None:
        self.daemon.terminate()
        self.daemon.wait(timeout=60)
        self.daemon = start_daemon(self.stack, log=self.log("daemon-restarted.log"))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Generator[Running]:
    state = tmp_path_factory.mktemp("stack")
    with dev_stack(state) as stack, ExitStack() as logs:
        set_pool_limits(declared_pools(), stack.process_environment())
        port = free_port()
        handle = Running(stack, port, daemon=None, logs=logs)  # type: ignore[arg-type]
        webserver = start_webserver(stack, port, log=handle.log("webserver.log"))
        handle.daemon = start_daemon(stack, log=handle.log("daemon.log"))
        try:
            wait_for(
                lambda: (
                    {"BACKFILL", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= healthy_daemons(port)
                ),
                timeout=300,
                what="the webserver and daemon",
                poll=2,
            )
            yield handle
        finally:
            for process in (webserver, handle.daemon):
                process.terminate()
            for process in (webserver, handle.daemon):
                process.wait(timeout=60)


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}
"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


def backfill_runs(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id})))


def materialized_partitions(
    instance: dg.DagsterInstance, path: list[str], run_ids: set[str]
) -> list[str]:
    records = instance.fetch_materializations(dg.AssetKey(path), limit=10_000).records
    return sorted(
        r.asset_materialization.partition
        for r in records
        if r.run_id in run_ids and r.asset_materialization and r.asset_materialization.partition
    )


def test_a_ui_backfill_survives_a_daemon_restart_without_duplicates_or_gaps(
    running: Running,
) -> None:
    keys = [f"2026-10-{day:02d}" for day in range(1, 13)]
    launched = graphql(
        running.port,
        LAUNCH_BACKFILL,
        {"params": {"assetSelection": [{"path": PAGE_VIEWS}], "partitionNames": keys}},
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    instance = running.instance()
    wait_for(lambda: len(backfill_runs(instance, backfill_id)) >= 1, 180, "the first run")
    running.restart_daemon()

    def finished() -> bool:
        status = graphql(running.port, BACKFILL_STATUS, {"id": backfill_id})
        return status["partitionBackfillOrError"]["status"] in (
            "COMPLETED",
            "COMPLETED_SUCCESS",
            "FAILED",
            "COMPLETED_FAILED",
        )

    wait_for(finished, 600, "the backfill", poll=3)
    status = graphql(running.port, BACKFILL_STATUS, {"id": backfill_id})
    assert status["partitionBackfillOrError"]["status"] in ("COMPLETED", "COMPLETED_SUCCESS")

    runs = backfill_runs(instance, backfill_id)
    assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
    assert len(runs) == 4  # max_partitions_per_run: 3
    partitions = materialized_partitions(instance, PAGE_VIEWS, {run.run_id for run in runs})
    assert partitions == keys  # each partition exactly once: no duplicate, no gap

    evaluations = [
        entry.dagster_event.event_specific_data
        for run in runs
        for entry in instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
        if entry.dagster_event is not None
    ]
    passed = {
        (e.check_name, e.partition)
        for e in evaluations
        if isinstance(e, dg.AssetCheckEvaluation) and e.passed
    }
    for key in keys:
        assert ("row_count_matches_source", key) in passed
        assert ("schema_matches_contract", key) in passed

    client = running.stack.s3.client()
    listing = client.list_objects_v2(
        Bucket=LAKE_BUCKET, Prefix=f"{LAKE_PREFIX}/raw/shop/web/page_views/"
    )
    assert sorted(o["Key"] for o in listing.get("Contents", [])) == [
        f"{LAKE_PREFIX}/raw/shop/web/page_views/day={key}/part-00000.parquet" for key in keys
    ]


def test_twenty_partitions_at_once_with_a_pool_of_four_hold_four_sessions_and_all_load(
    running: Running,
) -> None:
    keys = [f"2026-10-{day:02d}" for day in range(1, 21)]
    set_pool_limits({"postgres_shop": 4}, running.stack.process_environment())
    source = running.stack.source_conninfo()
    peak = {"sessions": 0}
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(source, autocommit=True) as watcher:
            while not stop.is_set():
                count = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'raw/shop/sales/payments/%'"
                ).fetchone()
                peak["sessions"] = max(peak["sessions"], int(count[0]) if count else 0)
                stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    # Hold the table so every extraction that gets a slot waits inside its session: the number
    # of sessions is then exactly the number of extractions the pool lets run at once.
    with psycopg.connect(source) as blocker:
        blocker.execute("LOCK TABLE sales.payments IN ACCESS EXCLUSIVE MODE")
        watcher.start()
        run_ids = [launch_partition(running, PAYMENTS, key) for key in keys]
        wait_for(lambda: peak["sessions"] >= 4, 300, "four extractions to start", poll=0.5)
        stop.wait(10)  # time for a fifth one to show up, if the pool let it
        blocker.rollback()
    instance = running.instance()

    def all_done() -> bool:
        return all(
            (run := instance.get_run_by_id(run_id)) is not None and run.is_finished
            for run_id in run_ids
        )

    wait_for(all_done, 900, "the 20 runs", poll=3)
    stop.set()
    watcher.join()
    assert peak["sessions"] == 4
    statuses = {instance.get_run_by_id(run_id).status for run_id in run_ids}  # type: ignore[union-attr]
    assert statuses == {dg.DagsterRunStatus.SUCCESS}
    payments = declared_tables()["raw/shop/sales/payments"]
    lake = f"{LAKE_BUCKET}/{LAKE_PREFIX}"
    for key in keys:
        comparison = compare_table_partition(source, running.stack.s3, lake, payments, key)
        assert comparison.equal, (key, comparison.first_difference)
        assert comparison.source_rows > 0


def launch_partition(running: Running, path: list[str], key: str) -> str:
    params: dict[str, Any] = {
        "selector": {
            "repositoryLocationName": "etl_assets",
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": path}],
            "assetCheckSelection": [],
        },
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": key}]},
    }
    launched = graphql(running.port, LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]
