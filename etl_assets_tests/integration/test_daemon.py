"""Backfills and source protection with a real webserver and daemon on a dagster-postgres instance.

Runs are launched the way the UI launches them, through the webserver's GraphQL API; the
daemon's queued run coordinator and backfill daemon launch them as separate processes.
"""

from __future__ import annotations

import os
import re
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


@dataclass
class Running:
    """The stack, the webserver and its port, and a daemon that can be restarted."""

    stack: DevStack
    port: int
    webserver: subprocess.Popen[bytes]
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
        handle = Running(stack, port, webserver=None, daemon=None, logs=logs)  # type: ignore[arg-type]
        handle.webserver = start_webserver(stack, port, log=handle.log("webserver.log"))
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
            for process in (handle.webserver, handle.daemon):
                process.terminate()
            for process in (handle.webserver, handle.daemon):
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


def launch_page_views_backfill(running: Running, keys: list[str]) -> str:
    """Launch a backfill of page views' `keys` as the UI does; return its id."""
    launched = graphql(
        running.port,
        LAUNCH_BACKFILL,
        {"params": {"assetSelection": [{"path": PAGE_VIEWS}], "partitionNames": keys}},
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


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
    backfill_id = launch_page_views_backfill(running, keys)
    instance = running.instance()
    wait_for(lambda: len(backfill_runs(instance, backfill_id)) >= 1, 180, "the first run")
    at_restart = backfill_runs(instance, backfill_id)
    running.restart_daemon()
    # The restart fell in the middle of the backfill: runs were still queued or running.
    assert not all(run.is_finished for run in at_restart)

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


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    """The process id the run's worker reported when it started."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        started = re.search(r"Started process for run \(pid: (\d+)\)", entry.message)
        if started:
            return int(started[1])
    raise AssertionError(f"run {run_id} reported no worker process")


def test_a_backfill_in_runs_of_separate_processes_holds_the_source_pool_across_them(
    running: Running, request: pytest.FixtureRequest
) -> None:
    # 12 days of page views requested at once, in runs of 3 (max_partitions_per_run): 4 runs,
    # all of which the run queue starts together, against a pool of 3.
    limit = 3
    environment = running.stack.process_environment()
    set_pool_limits({"postgres_shop": limit}, environment)
    request.addfinalizer(lambda: set_pool_limits(declared_pools(), environment))
    keys = [f"2026-10-{day:02d}" for day in range(1, 13)]
    source = running.stack.source_conninfo()
    peak: dict[str, Any] = {"sessions": 0, "names": set()}
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(source, autocommit=True) as watcher:
            while not stop.is_set():
                names = [
                    str(row[0])
                    for row in watcher.execute(
                        "SELECT application_name FROM pg_stat_activity"
                        " WHERE application_name LIKE 'raw/shop/web/page_views/%'"
                    ).fetchall()
                ]
                if len(names) > peak["sessions"]:
                    peak.update(sessions=len(names), names=set(names))
                stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    # Hold the table so every extraction that gets a slot waits inside its session: the number
    # of sessions is then exactly the number of extractions the pool lets run at once.
    with psycopg.connect(source) as blocker:
        blocker.execute("LOCK TABLE web.page_views IN ACCESS EXCLUSIVE MODE")
        watcher.start()
        backfill_id = launch_page_views_backfill(running, keys)
        wait_for(lambda: peak["sessions"] >= limit, 300, "the pool's extractions", poll=0.5)
        stop.wait(10)  # time for one more session to show up, if the pool let it
        blocker.rollback()

    instance = running.instance()

    def all_runs_finished() -> bool:
        runs = backfill_runs(instance, backfill_id)
        return len(runs) == 4 and all(run.is_finished for run in runs)

    wait_for(all_runs_finished, 600, "the backfill's 4 runs", poll=2)
    stop.set()
    watcher.join()
    runs = backfill_runs(instance, backfill_id)
    assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
    assert peak["sessions"] == limit
    # The sessions at the peak belonged to as many different runs (each names its range).
    assert len(peak["names"]) == limit
    ranges = {f"raw/shop/web/page_views/{keys[i]}...{keys[i + 2]}" for i in range(0, 12, 3)}
    assert peak["names"] <= ranges
    # Every run was its own process, neither the daemon, the webserver nor this test.
    pids = {run_worker_pid(instance, run.run_id) for run in runs}
    assert len(pids) == len(runs)
    assert not pids & {os.getpid(), running.daemon.pid, running.webserver.pid}
    # Every slot was handed back through the instance once its run's extraction ended.
    slots = instance.event_log_storage.get_concurrency_info("postgres_shop")
    assert slots.claimed_slots == []
    assert slots.pending_steps == []
    assert materialized_partitions(instance, PAGE_VIEWS, {run.run_id for run in runs}) == keys
    page_views = declared_tables()["raw/shop/web/page_views"]
    lake = f"{LAKE_BUCKET}/{LAKE_PREFIX}"
    for key in keys:
        comparison = compare_table_partition(source, running.stack.s3, lake, page_views, key)
        assert comparison.equal, (key, comparison.first_difference)
        assert comparison.source_rows > 0


LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


def launch_partition_run(running: Running, key: str, tags: dict[str, str]) -> str:
    """Materialize one page-views partition as the UI's Materialize button does; the run id."""
    selector = {
        "repositoryLocationName": "etl_assets",
        "repositoryName": "__repository__",
        "jobName": "__ASSET_JOB",
        "assetSelection": [{"path": PAGE_VIEWS}],
        "assetCheckSelection": [],
    }
    run_tags = {"dagster/partition": key, **tags}
    launched = graphql(
        running.port,
        LAUNCH_RUN,
        {
            "params": {
                "selector": selector,
                "mode": "default",
                "executionMetadata": {
                    "tags": [{"key": k, "value": v} for k, v in run_tags.items()]
                },
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def test_a_run_over_its_maximum_runtime_is_failed_by_monitoring_and_retried(
    running: Running,
) -> None:
    # With the local run launcher, which cannot check on its workers, the maximum runtime is
    # what ends a run that hangs (a dead worker too); run_retries then launches it again.
    key = "2026-10-20"
    instance = running.instance()
    source = running.stack.source_conninfo()
    with psycopg.connect(source) as blocker:
        blocker.execute("LOCK TABLE web.page_views IN ACCESS EXCLUSIVE MODE")
        run_id = launch_partition_run(running, key, {"dagster/max_runtime": "20"})

        def ended() -> bool:
            run = instance.get_run_by_id(run_id)
            return run is not None and run.is_finished

        wait_for(ended, 300, "run monitoring to end the run over its maximum runtime", poll=2)
        blocker.rollback()
    hung = instance.get_run_by_id(run_id)
    assert hung is not None
    assert hung.status == dg.DagsterRunStatus.FAILURE
    messages = [entry.message for entry in instance.all_logs(run_id)]
    assert any("Exceeded maximum runtime of 20 seconds" in m for m in messages), messages[-5:]

    def retried() -> dg.DagsterRun | None:
        children = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
        return children[0] if children and children[0].is_finished else None

    wait_for(lambda: retried() is not None, 300, "the automatic retry", poll=2)
    retry = retried()
    assert retry is not None
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    assert retry.tags["dagster/retry_number"] == "1"
    assert materialized_partitions(instance, PAGE_VIEWS, {retry.run_id}) == [key]
    page_views = declared_tables()["raw/shop/web/page_views"]
    lake = f"{LAKE_BUCKET}/{LAKE_PREFIX}"
    comparison = compare_table_partition(source, running.stack.s3, lake, page_views, key)
    assert comparison.equal, comparison.describe()
