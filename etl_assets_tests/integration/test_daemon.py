"""Backfills, source protection, the change sensor and the reconcile schedule with a real
webserver and daemon on a dagster-postgres instance.

Runs are launched the way the UI launches them, through the webserver's GraphQL API; the
daemon's queued run coordinator and backfill daemon launch them as separate processes, and its
sensor and scheduler daemons evaluate the sensors and schedules in the code location's own
server. Besides the project's code location, the workspace holds a second one, `watched`, built
from the same component: one table of four closed days with a change sensor and a reconcile
schedule that runs every minute.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Generator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import dagster as dg
import psycopg
import pytest
import yaml
from psycopg import sql

from etl_assets.cli.main import set_pool_limits
from etl_assets.components import PostgresTablesComponent
from etl_assets.components.automation import AUTOMATION_SENSOR
from etl_assets.components.incremental import REASON_TAG
from etl_assets.components.postgres_tables import declared_pools, declared_tables
from etl_assets.devstack.cli import start_daemon, start_webserver
from etl_assets.devstack.demo import verify_curated
from etl_assets.devstack.postgres import free_port
from etl_assets.devstack.seed import READER_ROLE
from etl_assets.devstack.stack import LAKE_BUCKET, LAKE_PREFIX, DevStack, dev_stack
from etl_assets.devstack.verify import compare_table_partition
from etl_assets.lib.incremental import ChangeCursor
from etl_assets.lib.postgres.session import ConnectionSettings
from etl_assets.lib.postgres.wal import WatchedTable
from etl_assets.lib.postgres.wal_admin import drop_wal, setup_wal
from etl_assets.lib.table.spec import TableSpec
from etl_assets.resources.reporting import DATA_VERSION_TAG
from etl_assets_tests.support import (
    graphql,
    healthy_daemons,
    query,
    run_flushed,
    run_sql,
    wait_for,
)

pytestmark = pytest.mark.slow

PAGE_VIEWS = ["raw", "shop", "web", "page_views"]
WATCHED = ["raw", "watched", "app", "events"]
WATCHED_LOCATION = "watched"
WATCHED_DECLARATION = """
type: etl_assets.components.PostgresTablesComponent
attributes:
  source:
    name: watched
    dsn_env: ETL_SHOP_PG_DSN
    password_env: ETL_SHOP_PG_PASSWORD
    wal: {interval_seconds: 5}
  tables:
    - schema: app
      table: events
      partition_column: created_at
      grain: daily
      start: "2026-10-01"
      end: "2026-10-05"
      primary_key: [id]
      columns: [id, created_at, updated_at, v]
      incremental: {change_column: updated_at}
      reconcile: {cron: "* * * * *", partitions: 4}
    - schema: app
      table: history
      partition_column: happened_at
      grain: daily
      start: "2025-09-01"
      primary_key: [id]
      columns: [id, happened_at, v]
      incremental: {mode: wal, settle_lag: 1m}
"""
WATCHED_DEFINITIONS = """
from pathlib import Path

import dagster as dg

from etl_assets.defs import resources as project


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent), project.resources()
    )
"""


def write_workspace(directory: Path) -> Path:
    """A workspace of the project's code location and the `watched` one, in `directory`."""
    package = directory / "src" / "watched_location"
    (package / "defs" / "events").mkdir(parents=True)
    (directory / "dg.toml").write_text(
        'directory_type = "project"\n\n[project]\nroot_module = "watched_location"\n'
        f'code_location_name = "{WATCHED_LOCATION}"\n'
    )
    (package / "__init__.py").write_text("")
    (package / "definitions.py").write_text(WATCHED_DEFINITIONS.lstrip())
    (package / "defs" / "events" / "defs.yaml").write_text(WATCHED_DECLARATION.lstrip())
    workspace = directory / "workspace.yaml"
    locations = [
        {"python_module": {"module_name": "etl_assets.definitions", "location_name": "etl_assets"}},
        {
            "python_module": {
                "module_name": "watched_location.definitions",
                "location_name": WATCHED_LOCATION,
                "working_directory": str(directory / "src"),
            }
        },
    ]
    workspace.write_text(yaml.safe_dump({"load_from": locations}))
    return workspace


def watched_table() -> TableSpec:
    """The declaration of the `watched` location's table, as the component reads it."""
    attributes = yaml.safe_load(WATCHED_DECLARATION)["attributes"]
    component = PostgresTablesComponent.resolve_from_yaml(yaml.safe_dump(attributes))
    return component.tables[0]


@dataclass
class Running:
    """The stack, the webserver and its port, and a daemon that can be restarted."""

    stack: DevStack
    port: int
    webserver: subprocess.Popen[bytes]
    daemon: subprocess.Popen[bytes]
    logs: ExitStack
    workspace: Path

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.stack.dagster_home))

    def log(self, name: str) -> IO[bytes]:
        """A log file for a process, in the stack's directory (kept for debugging)."""
        return self.logs.enter_context((self.stack.base_dir / name).open("wb"))

    def restart_daemon(self) -> None:
        self.daemon.terminate()
        self.daemon.wait(timeout=60)
        self.daemon = start_daemon(
            self.stack, log=self.log("daemon-restarted.log"), workspace=self.workspace
        )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Generator[Running]:
    state = tmp_path_factory.mktemp("stack")
    workspace = write_workspace(tmp_path_factory.mktemp("workspace"))
    with dev_stack(state) as stack, ExitStack() as logs:
        set_pool_limits(declared_pools(), stack.process_environment())
        port = free_port()
        handle = Running(stack, port, webserver=None, daemon=None, logs=logs, workspace=workspace)  # type: ignore[arg-type]
        handle.webserver = start_webserver(
            stack, port, log=handle.log("webserver.log"), workspace=workspace
        )
        handle.daemon = start_daemon(stack, log=handle.log("daemon.log"), workspace=workspace)
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
                        " WHERE datname = current_database()"
                        " AND application_name LIKE 'raw/shop/web/page_views/%'"
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
        comparison = compare_table_partition(
            source, running.stack.s3, lake, asset="/".join(PAGE_VIEWS), table=page_views, key=key
        )
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


def launch_run(
    running: Running,
    tags: dict[str, str],
    path: list[str] = PAGE_VIEWS,
    location: str = "etl_assets",
) -> str:
    """Materialize the partition (or range) named by `tags` of an asset (page views by default)
    in one run, as the UI's Materialize button does; the run id."""
    selector = {
        "repositoryLocationName": location,
        "repositoryName": "__repository__",
        "jobName": "__ASSET_JOB",
        # No check selection: the run also runs the asset's checks, as the UI's button does.
        "assetSelection": [{"path": path}],
    }
    launched = graphql(
        running.port,
        LAUNCH_RUN,
        {
            "params": {
                "selector": selector,
                "mode": "default",
                "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
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
        run_id = launch_run(running, {"dagster/partition": key, "dagster/max_runtime": "20"})

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
    comparison = compare_table_partition(
        source, running.stack.s3, lake, asset="/".join(PAGE_VIEWS), table=page_views, key=key
    )
    assert comparison.equal, comparison.describe()


WATCHED_ROWS = """
CREATE SCHEMA app;
CREATE TABLE app.events (
    id         int PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    v          text
);
CREATE INDEX ON app.events (updated_at);
INSERT INTO app.events (id, created_at, v)
SELECT g, timestamptz '2026-10-01 00:00+00' + (g - 1) * interval '30 minutes', 'row ' || g
FROM generate_series(1, 192) g;
"""
WATCHED_DAYS = ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"]
UPDATED_ROW = 60  # 2026-10-02 05:30
DELETED_ROW = 110  # 2026-10-03 06:30
INSTIGATOR_STATE = """
query($selector: %(Kind)sSelector!) {
  %(kind)sOrError(%(kind)sSelector: $selector) {
    __typename
    ... on %(Kind)s {
      %(kind)sState {
        id
        status
        ticks(limit: 50) {
          status timestamp endTimestamp runIds skipReason error { message causes { message } }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""
SET_SENSOR_CURSOR = """
mutation($selector: SensorSelector!, $cursor: String) {
  setSensorCursor(sensorSelector: $selector, cursor: $cursor) {
    __typename
    ... on PythonError { message }
  }
}
"""
TURN = """
mutation($value: %(type)s!) {
  %(mutation)s(%(argument)s: $value) { __typename ... on PythonError { message } }
}
"""
"""Turn a sensor or schedule on (by its selector) or off (by its state's id)."""


@dataclass(frozen=True)
class Instigator:
    """A sensor or a schedule of the `watched` location, driven as the UI drives it."""

    kind: str
    """`sensor` or `schedule`."""
    name: str
    location: str = WATCHED_LOCATION

    def selector(self) -> dict[str, str]:
        return {
            "repositoryLocationName": self.location,
            "repositoryName": "__repository__",
            f"{self.kind}Name": self.name,
        }

    def state(self, running: Running) -> dict[str, Any]:
        names = {"kind": self.kind, "Kind": self.kind.capitalize()}
        found = graphql(running.port, INSTIGATOR_STATE % names, {"selector": self.selector()})
        answer = found[f"{self.kind}OrError"]
        assert answer["__typename"] == names["Kind"], answer
        return answer[f"{self.kind}State"]

    def ticks(self, running: Running) -> list[dict[str, Any]]:
        """Every tick so far, newest first."""
        return self.state(running)["ticks"]

    def mutate(self, running: Running, mutation: str, variables: dict[str, Any]) -> None:
        [answer] = graphql(running.port, mutation, variables).values()
        assert answer["__typename"] not in ("PythonError", "UnauthorizedError"), answer

    def start(self, running: Running) -> None:
        kind = self.kind.capitalize()
        start = {"type": f"{kind}Selector", "mutation": f"start{kind}"}
        turn_on = TURN % {**start, "argument": f"{self.kind}Selector"}
        self.mutate(running, turn_on, {"value": self.selector()})

    def stop(self, running: Running) -> None:
        mutation = "stopSensor" if self.kind == "sensor" else "stopRunningSchedule"
        turn_off = TURN % {"type": "String", "mutation": mutation, "argument": "id"}
        self.mutate(running, turn_off, {"value": self.state(running)["id"]})

    def next_tick(self, running: Running) -> dict[str, Any]:
        """Turn it on, wait until a tick begun from now on has ended, and turn it off again."""
        since = time.time()
        self.start(running)

        def ended() -> list[dict[str, Any]]:
            ticks = self.ticks(running)
            return [t for t in ticks if t["timestamp"] >= since and t["status"] != "STARTED"]

        wait_for(lambda: bool(ended()), 180, f"a tick of {self.name}", poll=1)
        self.stop(running)
        return ended()[-1]

    def first_tick(self, running: Running) -> dict[str, Any]:
        """Turn it on, wait until its first tick has ended, and turn it off again."""
        self.start(running)
        wait_for(
            lambda: any(tick["status"] != "STARTED" for tick in self.ticks(running)),
            180,
            f"the first tick of {self.name}",
            poll=1,
        )
        self.stop(running)
        [tick] = self.ticks(running)
        return tick


def wait_for_runs(instance: dg.DagsterInstance, run_ids: list[str]) -> list[dg.DagsterRun]:
    """The runs, once every one of them has ended."""

    def runs() -> list[dg.DagsterRun | None]:
        return [instance.get_run_by_id(run_id) for run_id in run_ids]

    wait_for(
        lambda: all(run is not None and run.is_finished for run in runs()),
        300,
        f"runs {run_ids}",
        poll=2,
    )
    return [run for run in runs() if run is not None]


def requested(runs: list[dg.DagsterRun]) -> set[tuple[str, str, dg.DagsterRunStatus]]:
    """(partition, reason, status) of each run."""
    return {(run.tags["dagster/partition"], run.tags[REASON_TAG], run.status) for run in runs}


def test_the_change_sensor_and_the_reconcile_schedule_tick_under_the_daemon(
    running: Running,
) -> None:
    source = running.stack.source_conninfo()
    with psycopg.connect(source, autocommit=True) as connection:
        connection.execute(WATCHED_ROWS)
        role = sql.Identifier(READER_ROLE)
        connection.execute(sql.SQL("GRANT USAGE ON SCHEMA app TO {}").format(role))
        connection.execute(sql.SQL("GRANT SELECT ON app.events TO {}").format(role))
    instance = running.instance()
    # The first three days are in the lake, loaded by one run.
    loaded = {
        "dagster/asset_partition_range_start": WATCHED_DAYS[0],
        "dagster/asset_partition_range_end": WATCHED_DAYS[2],
    }
    [first_load] = wait_for_runs(instance, [launch_run(running, loaded, WATCHED, WATCHED_LOCATION)])
    assert first_load.status == dg.DagsterRunStatus.SUCCESS
    # Since then a row of 2026-10-02 was updated, and one of 2026-10-03 deleted outright.
    [(watermark,)] = query(source, "SELECT now()")
    run_sql(
        source,
        "UPDATE app.events SET v = 'updated', updated_at = now() WHERE id = %s",
        [UPDATED_ROW],
    )
    run_sql(source, "DELETE FROM app.events WHERE id = %s", [DELETED_ROW])

    # As an operator can in the UI, the sensor's cursor says: days up to 2026-10-03 were seen
    # closing, and changes were looked at up to `watermark`. So 2026-10-04 has closed since, and
    # 2026-10-02 changed since.
    sensor = Instigator("sensor", "raw__watched__app__events__changes")
    cursor = ChangeCursor(
        watermark=watermark, closed_through=dt.datetime(2026, 10, 4, tzinfo=dt.UTC)
    )
    sensor.mutate(
        running, SET_SENSOR_CURSOR, {"selector": sensor.selector(), "cursor": cursor.to_json()}
    )
    tick = sensor.first_tick(running)
    assert tick["status"] == "SUCCESS", tick
    assert requested(wait_for_runs(instance, tick["runIds"])) == {
        ("2026-10-04", "closed", dg.DagsterRunStatus.SUCCESS),
        ("2026-10-02", "changed", dg.DagsterRunStatus.SUCCESS),
    }

    # The delete moved no change column: the reconcile schedule finds it by fingerprint.
    schedule = Instigator("schedule", "raw__watched__app__events__reconcile")
    tick = schedule.first_tick(running)
    assert tick["status"] == "SUCCESS", tick
    assert requested(wait_for_runs(instance, tick["runIds"])) == {
        ("2026-10-03", "reconcile", dg.DagsterRunStatus.SUCCESS),
    }

    # Every tick of both succeeded, and the lake now holds exactly what the source holds.
    assert [t["status"] for t in sensor.ticks(running) + schedule.ticks(running)] == ["SUCCESS"] * 2
    lake = f"{LAKE_BUCKET}/{LAKE_PREFIX}"
    for key in WATCHED_DAYS:
        comparison = compare_table_partition(
            source, running.stack.s3, lake, asset="/".join(WATCHED), table=watched_table(), key=key
        )
        assert comparison.equal, (key, comparison.describe())
        assert comparison.source_rows == (47 if key == "2026-10-03" else 48)


ORDERS = ["raw", "shop", "sales", "orders"]
PAYMENTS = ["raw", "shop", "sales", "payments"]
CURATED = dg.AssetKey(["curated", "shop", "order_payments"])
AUTOMATION = Instigator("sensor", AUTOMATION_SENSOR, location="etl_assets")


def curated_runs(instance: dg.DagsterInstance) -> dict[str, dg.DagsterRun]:
    """Every run of the curated order payments so far, by run id."""
    return {
        run.run_id: run
        for run in instance.get_runs()
        if run.asset_selection and CURATED in run.asset_selection
    }


def automation_after(running: Running, since: float) -> None:
    """Wait until the automation sensor has ended two ticks begun after `since` (a timestamp).

    A tick evaluates the events committed before it began: the first such tick requests what
    they call for, the second shows nothing more was called for.
    """

    def ended() -> int:
        ticks = AUTOMATION.ticks(running)
        return sum(1 for t in ticks if t["timestamp"] > since and t["status"] != "STARTED")

    wait_for(lambda: ended() >= 2, 240, "two automation ticks", poll=2)


def follow(running: Running, before: dict[str, dg.DagsterRun], since: float) -> set[str]:
    """The partitions of the curated runs the automation requested after `since`, once ended.

    Each is its own run, and succeeded.
    """
    instance = running.instance()
    automation_after(running, since)
    new = [run for run_id, run in curated_runs(instance).items() if run_id not in before]
    ended = wait_for_runs(instance, [run.run_id for run in new])
    assert {run.status for run in ended} <= {dg.DagsterRunStatus.SUCCESS}, ended
    partitions = [run.tags.get("dagster/partition") for run in ended]
    assert None not in partitions, partitions  # no range run, no backfill
    assert len(partitions) == len(set(partitions)), partitions  # one run per partition
    return {p for p in partitions if p is not None}


def load(running: Running, path: list[str], first: str, last: str) -> float:
    """One run of `path` over `first...last`, as the UI launches it; when it ended."""
    tags = {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }
    [run] = wait_for_runs(running.instance(), [launch_run(running, tags, path)])
    assert run.status == dg.DagsterRunStatus.SUCCESS
    stats = running.instance().get_run_stats(run.run_id)
    assert stats.end_time is not None
    return stats.end_time


def data_versions(
    instance: dg.DagsterInstance, path: list[str], keys: list[str]
) -> dict[str, tuple[str, str]]:
    """(data version, source fingerprint) of the latest materialization of each partition."""
    found: dict[str, tuple[str, str]] = {}
    for key in keys:
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(path), asset_partitions=[key]), limit=1
        ).records
        materialization = record.asset_materialization
        assert materialization is not None
        assert materialization.tags is not None
        fingerprint = materialization.metadata["source_fingerprint"].value
        assert isinstance(fingerprint, str)
        found[key] = (materialization.tags[DATA_VERSION_TAG], fingerprint)
    return found


def test_curated_partitions_follow_the_raw_partitions_they_read_under_the_daemon(
    running: Running,
) -> None:
    """Acceptance of issue 15 on the demo shop, with the automation sensor on by default."""
    wait_for(lambda: "ASSET" in healthy_daemons(running.port), 180, "the automation daemon")
    wait_for(
        lambda: any(t["status"] != "STARTED" for t in AUTOMATION.ticks(running)),
        180,
        "the automation sensor's first tick",
        poll=2,
    )
    instance = running.instance()
    source = running.stack.source_conninfo()
    days = [f"2026-10-{day:02d}" for day in range(1, 6)]

    # First loads: each curated day follows once its orders and both days of payments are in.
    before = curated_runs(instance)
    load(running, ORDERS, days[0], days[-1])
    loaded = load(running, PAYMENTS, days[0], "2026-10-06")
    assert follow(running, before, loaded) == set(days)

    # A payment of 2026-10-03 changes; the change sensor reloads that day; the curated days that
    # read it (2026-10-03, and 2026-10-02 through the mapping) follow, and no other.
    [(watermark,)] = query(source, "SELECT now()")
    run_sql(
        source,
        "UPDATE sales.payments SET updated_at = now(),"
        " method = CASE method WHEN 'card' THEN 'paypal' ELSE 'card' END"
        " WHERE payment_id = (SELECT min(payment_id) FROM sales.payments"
        " WHERE paid_at >= '2026-10-03+00' AND paid_at < '2026-10-04+00')",
    )
    sensor = Instigator("sensor", "raw__shop__sales__payments__changes", location="etl_assets")
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    cursor = ChangeCursor(watermark=watermark, closed_through=today)
    sensor.mutate(
        running, SET_SENSOR_CURSOR, {"selector": sensor.selector(), "cursor": cursor.to_json()}
    )
    before = curated_runs(instance)
    tick = sensor.first_tick(running)
    assert tick["status"] == "SUCCESS", tick
    [reload] = wait_for_runs(instance, tick["runIds"])
    assert (reload.tags["dagster/partition"], reload.status) == (
        "2026-10-03",
        dg.DagsterRunStatus.SUCCESS,
    )
    reloaded = instance.get_run_stats(reload.run_id).end_time
    assert reloaded is not None
    assert follow(running, before, reloaded) == {"2026-10-02", "2026-10-03"}
    for key in ("2026-10-02", "2026-10-03"):
        comparison = verify_curated(running.stack, key)
        assert comparison.equal, (key, comparison.describe())

    # The same day reloaded with its rows unchanged: same data version, no curated run.
    before = curated_runs(instance)
    assert follow(running, before, load(running, PAYMENTS, "2026-10-03", "2026-10-03")) == set()

    # Two days of orders change; one run reloads all five: five versions, the fingerprints',
    # two of them new; only the curated days of those two follow.
    versions = data_versions(instance, ORDERS, days)
    run_sql(
        source,
        "UPDATE sales.orders SET updated_at = now(), note = 'changed'"
        " WHERE order_id IN (SELECT min(order_id) FROM sales.orders"
        " WHERE placed_at >= %s::timestamptz AND placed_at < %s::timestamptz + interval '1 day'"
        " UNION SELECT min(order_id) FROM sales.orders"
        " WHERE placed_at >= %s::timestamptz AND placed_at < %s::timestamptz + interval '1 day')",
        ["2026-10-02", "2026-10-02", "2026-10-04", "2026-10-04"],
    )
    before = curated_runs(instance)
    reloaded_range = load(running, ORDERS, days[0], days[-1])
    now = data_versions(instance, ORDERS, days)
    assert len({version for version, _ in now.values()}) == 5
    for version, fingerprint in now.values():
        assert version == hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    assert {key for key in days if now[key][0] != versions[key][0]} == {"2026-10-02", "2026-10-04"}
    assert follow(running, before, reloaded_range) == {"2026-10-02", "2026-10-04"}
    for key in days:
        comparison = verify_curated(running.stack, key)
        assert comparison.equal, (key, comparison.describe())
    # Once the curated runs are done, the automation asks for nothing more.
    settled = curated_runs(instance)
    assert follow(running, settled, time.time()) == set()


WAL_SENSOR = Instigator("sensor", "postgres_shop__wal", location="etl_assets")
TICK_LOGS = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 50) { logEvents { events { message } } } } }
  }
}
"""


def wal_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Every run the WAL sensor requested so far."""
    return list(
        instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": WAL_SENSOR.name}))
    )


def kill_mid_tick(running: Running) -> bool:
    """Turn the sensor on and SIGKILL the daemon while a tick is being evaluated.

    False if every tick ended before it could be caught.
    """
    WAL_SENSOR.start(running)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(tick["status"] == "STARTED" for tick in WAL_SENSOR.ticks(running)[:1]):
            running.daemon.kill()
            running.daemon.wait(timeout=60)
            return True
        time.sleep(0.05)
    return False


def test_the_wal_sensor_reloads_exactly_the_touched_days_across_a_daemon_killed_mid_tick(
    running: Running,
) -> None:
    source = running.stack.source_conninfo()
    instance = running.instance()
    load(running, PAGE_VIEWS, "2026-10-02", "2026-10-05")
    first = WAL_SENSOR.first_tick(running)  # takes note of the slot and the days so far
    assert first["status"] == "SKIPPED", first["error"]
    assert first["runIds"] == []
    assert "MB of WAL retained" in first["skipReason"]
    # Since then (page views hold Berlin wall-clock time, and days are Berlin days):
    # a view of 2026-10-02 was erased, one moved from 2026-10-03 to 2026-10-05, and 60,000
    # views were inserted into 2026-10-10, which makes the next tick long enough to be killed.
    first_view = (
        " (SELECT view_id FROM web.page_views WHERE viewed_at >= %s AND viewed_at < %s"
        " ORDER BY view_id LIMIT 1)"
    )
    run_flushed(
        source,
        "DELETE FROM web.page_views WHERE view_id =" + first_view,
        ("2026-10-02", "2026-10-03"),
    )
    run_flushed(
        source,
        "UPDATE web.page_views SET viewed_at = '2026-10-05 12:00' WHERE view_id =" + first_view,
        ("2026-10-03", "2026-10-04"),
    )
    run_flushed(
        source,
        "INSERT INTO web.page_views (view_id, viewed_at, session_id, url, is_bot)"
        " SELECT md5(g::text || 'late')::uuid, '2026-10-10 08:00', md5(g::text)::uuid, '/', false"
        " FROM generate_series(1, 60000) AS g",
    )
    killed = kill_mid_tick(running)
    running.daemon = start_daemon(
        running.stack, log=running.log("daemon-after-kill.log"), workspace=running.workspace
    )
    touched = {"2026-10-02", "2026-10-03", "2026-10-05", "2026-10-10"}
    wait_for(
        lambda: {run.tags["dagster/partition"] for run in wal_runs(instance)} >= touched,
        300,
        "the WAL sensor's runs after the daemon's restart",
        poll=2,
    )
    runs = wait_for_runs(instance, [run.run_id for run in wal_runs(instance)])
    WAL_SENSOR.stop(running)
    assert killed, "no tick was caught being evaluated"
    # Each touched day exactly once, under one run key; no other day.
    partitions = sorted(run.tags["dagster/partition"] for run in runs)
    assert partitions == sorted(touched)
    assert len({run.tags["dagster/run_key"] for run in runs}) == len(runs)
    assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
    assert {run.tags[REASON_TAG] for run in runs} == {"wal"}
    page_views = declared_tables()["raw/shop/web/page_views"]
    lake = f"{LAKE_BUCKET}/{LAKE_PREFIX}"
    for key in sorted(touched):
        comparison = compare_table_partition(
            source, running.stack.s3, lake, asset="/".join(PAGE_VIEWS), table=page_views, key=key
        )
        assert comparison.equal, (key, comparison.describe())
    # Every tick that ended says how much WAL the slot keeps.
    logs = graphql(running.port, TICK_LOGS, {"selector": WAL_SENSOR.selector()})
    ticks = logs["sensorOrError"]["sensorState"]["ticks"]
    messages = [e["message"] for t in ticks for e in t["logEvents"]["events"]]
    assert any("MB of WAL retained" in m for m in messages), messages


HISTORY = ["raw", "watched", "app", "history"]


def test_a_delete_300_days_old_and_a_late_commit_reload_only_their_windows_under_the_daemon(
    running: Running,
) -> None:
    source = running.stack.source_conninfo()
    instance = running.instance()
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    old, recent = today - dt.timedelta(days=300), today - dt.timedelta(days=3)
    with psycopg.connect(source, autocommit=True) as connection:
        connection.execute("CREATE SCHEMA IF NOT EXISTS app")
        connection.execute(
            "CREATE TABLE app.history (id int PRIMARY KEY, happened_at timestamptz NOT NULL,"
            " v text);"
            "ALTER TABLE app.history REPLICA IDENTITY FULL"
        )
        role = sql.Identifier(READER_ROLE)
        connection.execute(sql.SQL("GRANT USAGE ON SCHEMA app TO {}").format(role))
        connection.execute(sql.SQL("GRANT SELECT ON app.history TO {}").format(role))
    run_flushed(
        source,
        "INSERT INTO app.history VALUES (1, %s, 'erased'), (2, %s, 'kept'), (3, %s, 'recent')",
        (old + dt.timedelta(hours=9), old + dt.timedelta(hours=15), recent + dt.timedelta(hours=9)),
    )
    settings = ConnectionSettings(conninfo=source)
    watched = [WatchedTable("app", "history", "happened_at")]
    setup_wal(settings, "etl_assets_watched", "etl_assets_watched", watched)
    keys = [day.strftime("%Y-%m-%d") for day in (old, recent)]
    sensor = Instigator("sensor", "postgres_watched__wal")
    try:
        with psycopg.connect(source) as late:
            late.execute("SET synchronous_commit = on")
            # A transaction with a row of the recent day, still open while that day is loaded.
            late.execute(
                "INSERT INTO app.history VALUES (4, %s, 'late')", (recent + dt.timedelta(hours=23),)
            )
            launched = [
                launch_run(running, {"dagster/partition": key}, HISTORY, WATCHED_LOCATION)
                for key in keys
            ]
            assert {run.status for run in wait_for_runs(instance, launched)} == {
                dg.DagsterRunStatus.SUCCESS
            }
            first = sensor.next_tick(running)  # takes note of the slot and the days so far
            assert first["status"] == "SKIPPED", first["error"]
            late.commit()
        run_flushed(source, "DELETE FROM app.history WHERE id = 1")
        tick = sensor.next_tick(running)
        assert tick["status"] == "SUCCESS", tick["error"]
        runs = wait_for_runs(instance, tick["runIds"])
        # Those two windows and only those were read again.
        assert requested(runs) == {(key, "wal", dg.DagsterRunStatus.SUCCESS) for key in keys}
        lake = f"{LAKE_BUCKET}/{LAKE_PREFIX}"
        history = PostgresTablesComponent.resolve_from_yaml(
            yaml.safe_dump(yaml.safe_load(WATCHED_DECLARATION)["attributes"])
        ).tables[1]
        rows = {}
        for key in keys:
            comparison = compare_table_partition(
                source, running.stack.s3, lake, asset="/".join(HISTORY), table=history, key=key
            )
            assert comparison.equal, comparison.describe()
            rows[key] = comparison.source_rows
        # The erased row is gone from the lake, and the late one is in it.
        assert rows == {keys[0]: 1, keys[1]: 2}
    finally:
        drop_wal(settings, "etl_assets_watched", "etl_assets_watched")
