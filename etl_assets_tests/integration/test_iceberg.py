"""Iceberg tables in a catalog: one atomic commit per partition window, against real services.

The SQL catalog lives in the test Postgres server, the warehouse on moto's S3 server; the Glue
catalog is moto's Glue, reached over HTTP like AWS. Every table is read back by pyiceberg,
DuckDB's iceberg extension and Polars, and compared with the source.
"""

from __future__ import annotations

import datetime as dt
import io
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from psycopg import sql
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from etl_assets.cli.main import main as etl_assets_main
from etl_assets.components.table_assets import (
    LAKE_IO_MANAGER_KEY,
    build_table_assets,
    raw_asset_key,
)
from etl_assets.lib.lake.iceberg import IcebergTarget
from etl_assets.lib.lake.iceberg_names import table_identifier
from etl_assets.lib.lake.objects import Encryption
from etl_assets.lib.lake.publish import UploadSettings
from etl_assets.lib.table.spec import ColumnSpec, LakeFormat
from etl_assets.resources.catalog import IcebergCatalog
from etl_assets.resources.lake import LAKE_FORMAT_METADATA_KEY
from etl_assets_tests.integration.test_faults import start_worker
from etl_assets_tests.support import (
    SOURCE,
    Pipeline,
    duckdb_on_s3,
    failure_text,
    partition_metadata,
    polars_options,
    query,
    revised,
    run_sql,
    spec,
)

EVENTS = """
CREATE TABLE events (
    id         bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    amount     numeric(12, 2),
    label      text
);
INSERT INTO events
SELECT g, timestamptz '2026-10-01 00:00+00' + (g - 1) * interval '17 minutes', g * 1.25, 'e' || g
FROM generate_series(1, 500) g;
"""
DAYS = ("2026-10-01", "2026-10-02", "2026-10-03")


def iceberg_table(**changes: Any) -> Any:
    return revised(spec(), format=LakeFormat.ICEBERG, **changes)


@pytest.fixture
def lake(catalog_uri: str) -> dict[str, Any]:
    """Lake settings with the SQL catalog."""
    return {"iceberg": IcebergCatalog(uri=catalog_uri)}


@pytest.fixture
def events(pipeline: Pipeline) -> Pipeline:
    run_sql(pipeline.conninfo, EVENTS)
    return pipeline


def catalog_of(pipeline: Pipeline, lake: dict[str, Any]) -> Catalog:
    settings: IcebergCatalog = lake["iceberg"]
    return settings.catalog(
        default_warehouse=f"s3://{pipeline.bucket}/lake/iceberg",
        s3_endpoint=pipeline.endpoint.url,
        region=pipeline.endpoint.region,
    )


def loaded(pipeline: Pipeline, lake: dict[str, Any]) -> Table:
    return catalog_of(pipeline, lake).load_table(
        table_identifier(raw_asset_key(SOURCE, iceberg_table()).path)
    )


def source_rows(pipeline: Pipeline, day: str, schema: str = "public") -> list[tuple[Any, ...]]:
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    statement = sql.SQL(
        "SELECT id, created_at, amount, label FROM {}"
        " WHERE created_at >= %s AND created_at < %s ORDER BY id"
    ).format(sql.Identifier(schema, "events"))
    return query(pipeline.conninfo, statement.as_string(), [start, start + dt.timedelta(days=1)])


def table_rows(table: pa.Table, day: str) -> list[tuple[Any, ...]]:
    rows = table.filter(pc.equal(table.column("day"), pa.scalar(day))).sort_by("id")
    return list(
        zip(
            *(rows.column(c).to_pylist() for c in ("id", "created_at", "amount", "label")),
            strict=True,
        )
    )


def test_a_partition_is_replaced_by_one_commit_and_the_previous_snapshot_still_reads_it(
    events: Pipeline, lake: dict[str, Any]
) -> None:
    table = iceberg_table()
    assert events.materialize(table, partition_range=(DAYS[0], DAYS[-1]), lake=lake).success
    before = loaded(events, lake)
    v1 = before.current_snapshot()
    assert v1 is not None
    for day in DAYS:
        assert table_rows(before.scan().to_arrow(), day) == source_rows(events, day)

    run_sql(events.conninfo, "UPDATE events SET label = 'changed' WHERE id BETWEEN 90 AND 100")
    run_sql(events.conninfo, "DELETE FROM events WHERE id = 101")
    result = events.materialize(table, partition="2026-10-02", lake=lake)
    assert result.success
    after = loaded(events, lake)
    current = after.current_snapshot()
    assert current is not None
    # One commit: the snapshot the partition's replacement made carries the run and window.
    assert current.summary is not None
    assert current.summary["etl-assets.run"] == result.run_id
    assert current.summary["etl-assets.partition"] == "2026-10-02"
    assert str(current.summary["etl-assets.source-fingerprint"]).startswith("rows=")
    everything = after.scan().to_arrow()
    for day in DAYS:
        assert table_rows(everything, day) == source_rows(events, day)
    # Time travel: the snapshot before the commit still reads the first version.
    old = after.scan(snapshot_id=v1.snapshot_id).to_arrow()
    assert ("changed" in pc.unique(old.column("label")).to_pylist()) is False
    assert len(table_rows(old, "2026-10-02")) == len(source_rows(events, "2026-10-02")) + 1
    # DuckDB travels to it too, from the current metadata.
    duck = duckdb_on_s3(events.endpoint, "avro", "iceberg")
    travelled = duck.execute(
        "SELECT count(*), count(*) FILTER (WHERE label = 'changed')"
        " FROM iceberg_scan(?, snapshot_from_id => ?)",
        [after.metadata_location, v1.snapshot_id],
    ).fetchone()
    assert travelled == (old.num_rows, 0)
    metadata = events.metadata(table, "2026-10-02")
    assert metadata["iceberg_snapshot_id"] == current.snapshot_id
    assert metadata["iceberg_table"] == "raw_testsrc.public__events"
    assert metadata["iceberg_partition"] == "day=2026-10-02"


def catalog_conninfo(catalog_uri: str) -> str:
    """The SQL catalog's database as a libpq URI (the catalog itself uses SQLAlchemy's)."""
    return catalog_uri.replace("postgresql+psycopg2://", "postgresql://", 1)


def data_files(pipeline: Pipeline) -> dict[str, str]:
    """Every object under the Iceberg warehouse's data directories: key -> ETag."""
    client = pipeline.endpoint.client()
    found: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=pipeline.bucket, Prefix="lake/iceberg/"
    ):
        for item in page.get("Contents", []):
            if "/data/" in item["Key"]:
                found[item["Key"]] = item["ETag"]
    return found


def iceberg_worker(
    events: Pipeline, directory: Path, catalog_uri: str, partition: str, **settings: Any
) -> subprocess.Popen[bytes]:
    """A run of one partition of the events table in a process of its own."""
    return start_worker(
        events,
        directory,
        seconds_per_batch=0,
        table="events",
        columns=["id", "created_at", "amount", "label"],
        partition=partition,
        iceberg_uri=catalog_uri,
        **settings,
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_worker_killed_before_its_commit_changes_nothing_and_its_orphan_is_removed(
    events: Pipeline,
    catalog_uri: str,
    lake: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = iceberg_table()
    assert events.materialize(table, partition=DAYS[0], lake=lake).success
    before = loaded(events, lake)
    snapshot = before.current_snapshot()
    assert snapshot is not None
    committed = data_files(events)
    run_sql(events.conninfo, "UPDATE events SET label = 'second' WHERE id < 20")
    # The worker's commit is an UPDATE of the table's catalog row: holding the row, the test
    # stops it after its data file is written and before the commit, and kills it there.
    with psycopg.connect(catalog_conninfo(catalog_uri)) as blocker:
        blocker.execute(
            "SELECT * FROM iceberg_tables WHERE table_name = 'public__events' FOR UPDATE"
        )
        worker = iceberg_worker(events, tmp_path / "worker", catalog_uri, DAYS[0])

        def committing() -> bool:
            assert worker.poll() is None, (tmp_path / "worker" / "worker.log").read_text()[-3000:]
            waiting = query(
                catalog_conninfo(catalog_uri),
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database() AND query LIKE 'UPDATE iceberg_tables%%'",
            )
            return waiting[0][0] == 1

        wait_until(committing, "the worker's commit to wait on the catalog row")
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        blocker.rollback()
    after = loaded(events, lake)
    assert after.current_snapshot() == snapshot
    assert table_rows(after.scan().to_arrow(), DAYS[0]) != source_rows(events, DAYS[0])
    orphans = sorted(set(data_files(events)) - set(committed))
    assert len(orphans) == 1

    for name, value in events.endpoint.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ETL_ICEBERG_CATALOG_URI", catalog_uri)
    out = io.StringIO()
    code = etl_assets_main(["lake", "iceberg-maintenance", "--min-age", "0s"], out=out)
    assert code == 0, out.getvalue()
    assert "raw_testsrc.public__events: expired 0 snapshot(s), removed 1 orphan file(s)" in (
        out.getvalue()
    )
    assert data_files(events) == committed  # the committed files are untouched
    assert events.materialize(table, partition=DAYS[0], lake=lake).success
    assert table_rows(loaded(events, lake).scan().to_arrow(), DAYS[0]) == source_rows(
        events, DAYS[0]
    )


EIGHT_DAYS = tuple(f"2026-10-{day:02d}" for day in range(1, 9))


@pytest.mark.slow
def test_eight_partitions_committed_at_once_lose_no_commit(
    events: Pipeline, catalog_uri: str, lake: dict[str, Any], tmp_path: Path
) -> None:
    run_sql(
        events.conninfo,
        "INSERT INTO events SELECT g, timestamptz '2026-10-06 00:00+00' + (g - 501)"
        " * interval '7 minutes', g, 'late' FROM generate_series(501, 1100) g",
    )
    # The table exists before the race, as after any first load.
    table = iceberg_table(end=dt.datetime(2026, 10, 9))
    assert events.materialize(table, partition=EIGHT_DAYS[0], lake=lake).success
    workers = [
        iceberg_worker(events, tmp_path / day, catalog_uri, day, end="2026-10-09")
        for day in EIGHT_DAYS
    ]
    for day, worker in zip(EIGHT_DAYS, workers, strict=True):
        assert worker.wait(300) == 0, (tmp_path / day / "worker.log").read_text()[-3000:]
    loaded_table = loaded(events, lake)
    everything = loaded_table.scan().to_arrow()
    for day in EIGHT_DAYS:
        assert table_rows(everything, day) == source_rows(events, day)
    commits = [
        s.summary
        for s in loaded_table.snapshots()
        if s.summary is not None and s.summary.get("added-data-files") == "1"
    ]
    partitions = [str(summary["etl-assets.partition"]) for summary in commits]
    assert sorted(partitions) == sorted([EIGHT_DAYS[0], *EIGHT_DAYS])  # none lost


@pytest.mark.slow
def test_two_runs_of_one_partition_at_once_leave_one_complete_version(
    events: Pipeline, catalog_uri: str, lake: dict[str, Any], tmp_path: Path
) -> None:
    assert events.materialize(iceberg_table(), partition=DAYS[1], lake=lake).success
    workers = [
        iceberg_worker(events, tmp_path / name, catalog_uri, DAYS[1])
        for name in ("first", "second")
    ]
    for name, worker in zip(("first", "second"), workers, strict=True):
        assert worker.wait(300) == 0, (tmp_path / name / "worker.log").read_text()[-3000:]
    table = loaded(events, lake)
    live = [
        task.file.file_path for task in table.scan(row_filter=f"day = '{DAYS[1]}'").plan_files()
    ]
    assert len(live) == 1  # one complete version, not two files' rows
    assert table_rows(table.scan().to_arrow(), DAYS[1]) == source_rows(events, DAYS[1])


def test_a_newly_declared_column_is_added_and_old_files_read_it_as_null_unrewritten(
    events: Pipeline, lake: dict[str, Any]
) -> None:
    assert events.materialize(
        iceberg_table(), partition_range=(DAYS[0], DAYS[1]), lake=lake
    ).success
    before = data_files(events)
    run_sql(events.conninfo, "ALTER TABLE events ADD COLUMN channel text DEFAULT 'web'")
    wider = iceberg_table(columns=("id", "created_at", "amount", "label", "channel"))
    assert events.materialize(wider, partition=DAYS[2], lake=lake).success
    table = loaded(events, lake)
    assert table.schema().find_field("channel").required is False
    everything = table.scan().to_arrow()
    old = everything.filter(pc.is_in(everything.column("day"), pa.array(DAYS[:2])))
    new = everything.filter(pc.equal(everything.column("day"), pa.scalar(DAYS[2])))
    assert old.column("channel").null_count == old.num_rows > 0
    assert set(new.column("channel").to_pylist()) == {"web"}
    # Nothing was rewritten: the old data files are the same objects.
    after = data_files(events)
    assert {k: after[k] for k in before} == before


def test_downstream_assets_scan_exactly_the_upstream_partitions_from_iceberg(
    events: Pipeline, lake: dict[str, Any]
) -> None:
    table = iceberg_table()
    assert events.materialize(table, partition_range=(DAYS[0], DAYS[-1]), lake=lake).success
    built = build_table_assets(SOURCE, table, None)
    seen: dict[str, Any] = {}

    @dg.asset(
        key=["curated", "labels"],
        ins={"events": dg.AssetIn(built.raw.key)},
        partitions_def=built.partitions_def,
        io_manager_key=LAKE_IO_MANAGER_KEY,
    )
    def labels(events: pl.LazyFrame) -> pl.LazyFrame:
        seen["columns"] = events.collect_schema().names()
        seen["ids"] = events.select("id").collect()["id"].to_list()
        return events.select("id", "label")

    result = dg.materialize(
        [built.source, built.raw, labels],
        partition_key=DAYS[1],
        instance=events.instance,
        resources=events.resources(table, lake=lake),
        selection=[labels.key],
    )
    assert result.success
    assert seen["ids"] == [row[0] for row in source_rows(events, DAYS[1])]
    # The partition column is the table's, not the rows': downstream sees the declared columns.
    assert seen["columns"] == ["id", "created_at", "amount", "label"]
    missing = dg.materialize(
        [built.source, built.raw, labels],
        partition_key="2026-10-06",
        instance=events.instance,
        resources=events.resources(table, lake=lake),
        selection=[labels.key],
        raise_on_error=False,
    )
    assert not missing.success
    assert "has no published data for 2026-10-06 in raw_testsrc.public__events" in failure_text(
        missing
    )


def test_outside_readers_read_the_table_value_for_value(
    events: Pipeline, lake: dict[str, Any]
) -> None:
    assert events.materialize(
        iceberg_table(), partition_range=(DAYS[0], DAYS[-1]), lake=lake
    ).success
    table = loaded(events, lake)
    expected = sorted(row for day in DAYS for row in source_rows(events, day))
    # Polars, through pyiceberg's planning.
    frame = pl.scan_iceberg(table, storage_options=polars_options(events)).collect()
    assert sorted(frame.select("id", "created_at", "amount", "label").iter_rows()) == expected
    # DuckDB's iceberg extension, from the table's metadata file.
    duck = duckdb_on_s3(events.endpoint, "avro", "iceberg")
    rows = duck.execute(
        "SELECT id, created_at, amount, label FROM iceberg_scan(?) ORDER BY id",
        [table.metadata_location],
    ).fetchall()
    assert rows == expected


def test_a_curated_asset_declared_iceberg_is_a_table_of_its_own(
    events: Pipeline, lake: dict[str, Any]
) -> None:
    table = iceberg_table()
    assert events.materialize(table, partition_range=(DAYS[0], DAYS[1]), lake=lake).success
    built = build_table_assets(SOURCE, table, None)

    @dg.asset(
        key=["curated", "testsrc", "labels"],
        ins={"events": dg.AssetIn(built.raw.key)},
        partitions_def=built.partitions_def,
        io_manager_key=LAKE_IO_MANAGER_KEY,
        metadata={LAKE_FORMAT_METADATA_KEY: LakeFormat.ICEBERG.value},
    )
    def labels(events: pl.LazyFrame) -> pl.LazyFrame:
        return events.select("id", "label")

    for day in DAYS[:2]:
        result = dg.materialize(
            [built.source, built.raw, labels],
            partition_key=day,
            instance=events.instance,
            resources=events.resources(table, lake=lake),
            selection=[labels.key],
        )
        assert result.success
    curated = catalog_of(events, lake).load_table(("curated_testsrc", "labels"))
    assert [f.name for f in curated.schema().fields] == ["id", "label", "day"]
    rows = curated.scan().to_arrow().sort_by("id")
    assert list(
        zip(*(rows.column(c).to_pylist() for c in ("id", "label", "day")), strict=True)
    ) == [(row[0], row[3], day) for day in DAYS[:2] for row in source_rows(events, day)]
    metadata = partition_metadata(events.instance, labels.key, DAYS[1])
    snapshot = curated.current_snapshot()
    assert snapshot is not None
    assert metadata["iceberg_snapshot_id"] == snapshot.snapshot_id


def test_the_glue_catalog_commits_each_window_and_time_travels(pipeline: Pipeline) -> None:
    # Glue's catalog is the account's: a schema of its own keeps this test's table apart.
    schema = f"glue_{uuid.uuid4().hex[:8]}"
    create = sql.SQL("CREATE SCHEMA {0}; SET search_path = {0};").format(sql.Identifier(schema))
    run_sql(pipeline.conninfo, create.as_string() + EVENTS)
    table = iceberg_table(schema=schema)
    lake = {"iceberg": IcebergCatalog(kind="glue")}
    assert pipeline.materialize(table, partition_range=(DAYS[0], DAYS[1]), lake=lake).success
    identifier = table_identifier(raw_asset_key(SOURCE, table).path)
    glue = pipeline.endpoint.client("glue")
    registered = glue.get_table(DatabaseName=identifier[0], Name=identifier[1])["Table"]
    assert registered["Parameters"]["table_type"].upper() == "ICEBERG"
    v1 = catalog_of(pipeline, lake).load_table(identifier)
    assert registered["Parameters"]["metadata_location"] == v1.metadata_location

    update = sql.SQL("UPDATE {} SET label = 'changed' WHERE id < 40").format(
        sql.Identifier(schema, "events")
    )
    run_sql(pipeline.conninfo, update.as_string())
    assert pipeline.materialize(table, partition=DAYS[0], lake=lake).success
    v2 = catalog_of(pipeline, lake).load_table(identifier)
    registered = glue.get_table(DatabaseName=identifier[0], Name=identifier[1])["Table"]
    assert registered["Parameters"]["metadata_location"] == v2.metadata_location
    rows = v2.scan().to_arrow()
    for day in DAYS[:2]:
        assert table_rows(rows, day) == source_rows(pipeline, day, schema=schema)
    before = v1.current_snapshot()
    assert before is not None
    old = v2.scan(snapshot_id=before.snapshot_id).to_arrow()
    assert "changed" not in old.column("label").to_pylist()


def test_a_window_without_rows_empties_its_partition_and_adds_no_file(
    events: Pipeline, lake: dict[str, Any]
) -> None:
    table = iceberg_table()
    assert events.materialize(table, partition="2026-10-07", lake=lake).success  # no rows
    assert data_files(events) == {}
    assert events.metadata(table, "2026-10-07")["dagster/row_count"] == 0
    assert events.materialize(table, partition_range=(DAYS[0], DAYS[1]), lake=lake).success
    files = data_files(events)
    run_sql(events.conninfo, "DELETE FROM events WHERE created_at < '2026-10-02'")
    result = events.materialize(table, partition=DAYS[0], lake=lake)
    assert result.success
    after = loaded(events, lake)
    rows = after.scan().to_arrow()
    assert table_rows(rows, DAYS[0]) == []
    assert table_rows(rows, DAYS[1]) == source_rows(events, DAYS[1])
    snapshot = after.current_snapshot()
    assert snapshot is not None
    assert snapshot.summary is not None
    assert snapshot.summary["etl-assets.run"] == result.run_id
    metadata = events.metadata(table, DAYS[0])
    assert metadata["iceberg_snapshot_id"] == snapshot.snapshot_id
    assert "dagster/uri" not in metadata
    # The emptied window's staged file was not kept (the older snapshot keeps its old file).
    assert data_files(events) == files


def test_a_rerun_of_unchanged_rows_commits_a_file_of_the_same_bytes(
    events: Pipeline, lake: dict[str, Any]
) -> None:
    table = iceberg_table()
    assert events.materialize(table, partition=DAYS[0], lake=lake).success
    first = data_files(events)
    assert events.materialize(table, partition=DAYS[0], lake=lake).success
    second = {k: v for k, v in data_files(events).items() if k not in first}
    [(new_key, new_etag)] = second.items()
    [(old_key, old_etag)] = first.items()
    assert new_key != old_key  # a file of its own, committed in place of the old one
    assert new_etag == old_etag
    client = events.endpoint.client()
    body = client.get_object(Bucket=events.bucket, Key=new_key)["Body"].read()
    assert body == client.get_object(Bucket=events.bucket, Key=old_key)["Body"].read()


def test_a_type_change_iceberg_cannot_make_is_refused_before_anything_is_written(
    events: Pipeline, lake: dict[str, Any]
) -> None:
    assert events.materialize(iceberg_table(), partition=DAYS[0], lake=lake).success
    before = loaded(events, lake).current_snapshot()
    files = data_files(events)
    run_sql(events.conninfo, "ALTER TABLE events ALTER COLUMN amount TYPE text")
    retyped = iceberg_table(
        columns=(
            "id",
            "created_at",
            ColumnSpec("amount", "text"),
            "label",
        )
    )
    result = events.materialize(retyped, partition=DAYS[1], lake=lake, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert "raw_testsrc.public__events cannot take the declared columns" in text
    assert "amount: decimal(12, 2) (numeric(12,2)) in the table, string (text) declared" in text
    assert loaded(events, lake).current_snapshot() == before
    assert data_files(events) == files


def test_a_namespace_another_run_creates_at_the_same_moment_is_used_as_it_is(
    pipeline: Pipeline, lake: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = catalog_of(pipeline, lake)
    catalog.create_namespace("raw_testsrc")  # the other run's insert
    looked = []
    real = catalog.namespace_exists

    def namespace_exists(name: str) -> bool:
        looked.append(name)  # ... lands just after this run's catalog first looked for it
        return len(looked) > 1 and real(name)

    monkeypatch.setattr(catalog, "namespace_exists", namespace_exists)
    target = IcebergTarget(
        catalog,
        ("raw_testsrc", "events"),
        "day",
        pipeline.endpoint.client(),
        UploadSettings(Encryption()),
        run_id="run-1",
    )
    target.prepare(pa.schema([pa.field("id", pa.int64(), nullable=False)]))
    assert catalog.load_table(("raw_testsrc", "events")).spec().fields[0].name == "day"
