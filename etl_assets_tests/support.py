"""Building and running one table's assets against the test services."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import botocore.exceptions
import dagster as dg
import duckdb
import polars as pl
import psycopg
import yaml
from pydantic import BaseModel

from etl_assets.components.table_assets import (
    build_table_assets,
    lake_resources,
    postgres_io_manager_key,
    postgres_source_key,
    raw_asset_key,
)
from etl_assets.devstack.s3 import S3Endpoint
from etl_assets.lib.lake.layout import LakeLayout
from etl_assets.lib.table.spec import ColumnSpec, NullPartitionRows, TableSpec
from etl_assets.lib.table.transforms import Transform
from etl_assets.lib.table.windows import Grain
from etl_assets.resources.lake import S3Lake
from etl_assets.resources.postgres import PostgresSource, PostgresWindowIOManager

LAKE_PREFIX = "lake"
SOURCE = "testsrc"
"""The source every test table is declared in."""


def s3_error(code: str, status: int) -> botocore.exceptions.ClientError:
    """The error botocore raises for an S3 answer with this code and HTTP status."""
    response: Any = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return botocore.exceptions.ClientError(response, "UploadPart")


def duckdb_extension(name: str) -> Path:
    """A DuckDB extension as its `duckdb-extension-<name>` wheel ships it (nothing downloaded)."""
    package = importlib.import_module(f"duckdb_extension_{name}")
    root = Path(str(package.__file__)).parent / "extensions"
    return root / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"


def duckdb_on_s3(endpoint: S3Endpoint, *extensions: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that reads `s3://` from `endpoint`, with httpfs and `extensions`."""
    connection = duckdb.connect()
    for name in ("httpfs", *extensions):
        connection.load_extension(str(duckdb_extension(name)))
    connection.execute(
        "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?,"
        " URL_STYLE 'path', USE_SSL false)",
        [endpoint.access_key, endpoint.secret_key, endpoint.region, urlparse(endpoint.url).netloc],
    )
    return connection


def run_sql(conninfo: str, statement: str, params: Sequence[Any] | None = None) -> None:
    """Execute one or more statements (autocommit)."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(statement, params)  # pyright: ignore[reportArgumentType]


def evaluate_sensor(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any],
    cursor: str | None,
) -> dg.SensorResult:
    """One tick of `sensor` from `cursor`, evaluated as the daemon evaluates it."""
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def run_flushed(conninfo: str, statement: str, params: Sequence[Any] = ()) -> None:
    """Run and commit with the commit flushed: a slot is read only up to flushed WAL, and the
    test server commits asynchronously."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("SET synchronous_commit = on")
        connection.execute(statement, params)  # pyright: ignore[reportArgumentType]


def query(conninfo: str, statement: str, params: Sequence[Any] | None = None) -> list[Any]:
    """All rows of a query."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        return connection.execute(statement, params).fetchall()  # pyright: ignore[reportArgumentType]


def spec(
    *,
    schema: str = "public",
    table: str = "events",
    partition_column: str = "created_at",
    grain: Grain = Grain.DAILY,
    start: dt.datetime = dt.datetime(2026, 10, 1),
    end: dt.datetime | None = dt.datetime(2026, 10, 8),
    timezone: str = "UTC",
    primary_key: Sequence[str] = ("id",),
    columns: Sequence[str | ColumnSpec] = ("id", "created_at", "amount", "label"),
    null_partition_rows: NullPartitionRows = NullPartitionRows.FAIL,
    asset_name: str | None = None,
) -> TableSpec:
    """A table declaration with test defaults (of the source `SOURCE`)."""
    return TableSpec(
        schema=schema,
        table=table,
        partition_column=partition_column,
        grain=grain,
        start=start,
        end=end,
        timezone=timezone,
        primary_key=tuple(primary_key),
        columns=tuple(ColumnSpec(c) if isinstance(c, str) else c for c in columns),
        null_partition_rows=null_partition_rows,
        asset_name=asset_name,
    )


M = TypeVar("M", bound=BaseModel)


def revised(model: M, **changes: Any) -> M:
    """`model` with some fields changed, validated again like the YAML it stands for."""
    return type(model).model_validate({**model.model_dump(by_alias=True), **changes})


@dataclass(frozen=True)
class Pipeline:
    """One source database, one bucket and one instance: where a test's runs happen."""

    instance: dg.DagsterInstance
    conninfo: str
    bucket: str
    endpoint: S3Endpoint

    def materialize(
        self,
        table: TableSpec,
        *,
        partition: str | None = None,
        partition_range: tuple[str, str] | None = None,
        transform: Transform | None = None,
        raise_on_error: bool = True,
        lake: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
        writer: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Materialize the table's raw asset for one partition or a range (with extra run tags).

        The run names the asset it materializes, as a run launched from the UI, `dg launch`, a
        sensor or a backfill does.
        """
        built = build_table_assets(SOURCE, table, transform)
        run_tags = dict(tags or {})
        if partition_range is not None:
            run_tags |= {
                "dagster/asset_partition_range_start": partition_range[0],
                "dagster/asset_partition_range_end": partition_range[1],
            }
        job = dg.define_asset_job("materialize_raw", selection=[built.raw.key])
        defs = dg.Definitions(
            assets=[built.source, built.raw],
            jobs=[job],
            resources=self.resources(table, lake=lake, source=source, writer=writer),
        )
        return defs.resolve_job_def(job.name).execute_in_process(
            partition_key=partition,
            tags=run_tags,
            instance=self.instance,
            raise_on_error=raise_on_error,
            asset_selection=[built.raw.key],
        )

    def resources(
        self,
        table: TableSpec,
        *,
        lake: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
        writer: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The source, the lake and their IO managers, on this pipeline's database and bucket.

        `lake` overrides `S3Lake` fields (the endpoint too), `source` `PostgresSource` fields
        and `writer` the `S3Lake` fields about retrying loads.
        """
        lake_settings: dict[str, Any] = {
            "bucket": self.bucket,
            "prefix": LAKE_PREFIX,
            "endpoint_url": self.endpoint.url,
            **(lake or {}),
        }
        source_settings: dict[str, Any] = {"dsn": self.conninfo, **(source or {})}
        database = PostgresSource(**source_settings)
        return {
            postgres_source_key(SOURCE): database,
            postgres_io_manager_key(SOURCE): PostgresWindowIOManager(source=database),
            **lake_resources(S3Lake(**lake_settings, **(writer or {}))),
        }

    def objects(self) -> dict[str, int]:
        """Every object in the bucket: key -> size."""
        return lake_objects(self.endpoint, self.bucket)

    def partition_bytes(self, table: TableSpec, partition: str) -> bytes:
        """The published Parquet object of one partition of the table's raw asset."""
        key = LakeLayout(self.bucket, LAKE_PREFIX).partition_key(
            raw_asset_key(SOURCE, table).path, table.hive_partition_name, partition
        )
        return self.endpoint.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def metadata(self, table: TableSpec, partition: str) -> dict[str, Any]:
        """Metadata of the latest materialization of one partition of the table's raw asset."""
        return partition_metadata(self.instance, raw_asset_key(SOURCE, table), partition)


def lake_objects(endpoint: S3Endpoint, bucket: str) -> dict[str, int]:
    """Every object in the bucket: key -> size."""
    client = endpoint.client()
    objects: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            objects[item["Key"]] = item["Size"]
    return objects


def partition_metadata(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str
) -> dict[str, Any]:
    """Metadata values of the latest materialization of one partition."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    assert records, f"{asset_key.to_user_string()} [{partition}] was never materialized"
    event = records[0].asset_materialization
    assert event is not None
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def check_results(
    pipeline: Pipeline, result: dg.ExecuteInProcessResult
) -> dict[tuple[str, str], bool]:
    """Whether each check passed, by (check name, partition), as the run recorded them."""
    outcomes: dict[tuple[str, str], bool] = {}
    for entry in pipeline.instance.all_logs(
        result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ):
        evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
        assert isinstance(evaluation, dg.AssetCheckEvaluation)
        outcomes[evaluation.check_name, evaluation.partition or ""] = evaluation.passed
    return outcomes


def materialized_partitions(pipeline: Pipeline, table: TableSpec, run_id: str) -> list[str]:
    """The partitions of the table's raw asset that one run recorded as materialized."""
    records = pipeline.instance.fetch_materializations(
        raw_asset_key(SOURCE, table), limit=1000
    ).records
    return sorted(
        r.asset_materialization.partition or ""
        for r in records
        if r.run_id == run_id and r.asset_materialization is not None
    )


def polars_options(pipeline: Pipeline) -> dict[str, str]:
    """Polars' storage options for the pipeline's S3 endpoint."""
    return {
        "aws_endpoint_url": pipeline.endpoint.url,
        "aws_allow_http": "true",
        "aws_region": pipeline.endpoint.region,
        "aws_access_key_id": pipeline.endpoint.access_key,
        "aws_secret_access_key": pipeline.endpoint.secret_key,
    }


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """The whole error of the run's first failed step, causes included, as the UI shows it."""
    failures = result.get_step_failure_events()
    assert failures, "the run has no failed step"
    error = failures[0].step_failure_data.error
    assert error is not None
    return error.to_string()


def graphql(port: int, query_text: str, variables: Mapping[str, Any] | None = None) -> Any:
    """POST a query to the webserver's GraphQL API (what the UI uses); return its `data`."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query_text, "variables": dict(variables or {})}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body["errors"]
    return body["data"]


COMPONENT_LOCATION_DEFINITIONS = """
from pathlib import Path

import dagster as dg

from etl_assets.defs import resources as project


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent), project.resources()
    )
"""


def component_workspace(directory: Path, location: str, declaration: str) -> Path:
    """A workspace of one code location, `location`, holding what the `defs.yaml` text
    `declaration` declares with the project's resources; written under `directory`."""
    module = f"{location}_location"
    package = directory / "src" / module
    (package / "defs" / location).mkdir(parents=True)
    (directory / "dg.toml").write_text(
        f'directory_type = "project"\n\n[project]\nroot_module = "{module}"\n'
        f'code_location_name = "{location}"\n'
    )
    (package / "__init__.py").write_text("")
    (package / "definitions.py").write_text(COMPONENT_LOCATION_DEFINITIONS.lstrip())
    (package / "defs" / location / "defs.yaml").write_text(declaration.lstrip())
    entry = {
        "module_name": f"{module}.definitions",
        "location_name": location,
        "working_directory": str(directory / "src"),
    }
    workspace = directory / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": entry}]}))
    return workspace


DAEMON_STATUS = (
    "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy "
    "lastHeartbeatErrors { message } } } } }"
)


def daemon_statuses(port: int) -> list[dict[str, Any]]:
    """Each daemon's status as the webserver reports it (none while it is not up yet)."""
    try:
        data = graphql(port, DAEMON_STATUS)
    except OSError:
        return []
    return data["instance"]["daemonHealth"]["allDaemonStatuses"]


def healthy_daemons(port: int) -> set[str]:
    """The daemons the webserver reports healthy (empty while it is not up yet)."""
    return {s["daemonType"] for s in daemon_statuses(port) if s["healthy"]}


def daemon_report(port: int) -> str:
    """Each daemon's health and its last heartbeat's errors, for a failing test's message."""
    lines = []
    for status in daemon_statuses(port):
        errors = "; ".join(e["message"][:300] for e in status["lastHeartbeatErrors"])
        lines.append(f"{status['daemonType']}: healthy={status['healthy']} {errors}".rstrip())
    return "\n".join(lines) or "the webserver does not answer"


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 1.0) -> None:
    """Poll `condition` until it holds, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def on_every_batch(callback: Callable[[], None]) -> Transform:
    """A transform that leaves the rows alone and calls `callback` once per streamed batch."""

    def call(ids: pl.Series) -> pl.Series:
        callback()
        return ids

    def transform(frame: pl.LazyFrame) -> pl.LazyFrame:
        return frame.with_columns(
            pl.col("id").map_batches(call, return_dtype=pl.Int64, is_elementwise=True)
        )

    return transform
