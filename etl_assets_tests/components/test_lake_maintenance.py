"""The Iceberg maintenance job and schedule, run on a real instance against real services."""

from __future__ import annotations

import io
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from etl_assets.components.lake_maintenance import build_iceberg_maintenance
from etl_assets.lib.lake.iceberg_names import table_identifier
from etl_assets.resources.catalog import IcebergCatalog
from etl_assets.resources.lake import S3Lake
from etl_assets_tests.integration.test_iceberg import DAYS, catalog_of, data_files, iceberg_table
from etl_assets_tests.support import LAKE_PREFIX, SOURCE, Pipeline, failure_text, run_sql

EVENTS = """
CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamptz NOT NULL,
                     amount numeric(12, 2), label text);
INSERT INTO events SELECT g, timestamptz '2026-10-01 00:00+00' + g * interval '1 hour', g, 'e'
FROM generate_series(1, 30) g;
"""


def orphan_of(pipeline: Pipeline, lake: dict[str, Any]) -> tuple[str, int]:
    """A data file in the table's data directory that no snapshot refers to; key and size.

    A run killed between writing its data file and committing it leaves such a file.
    """
    identifier = table_identifier(["raw", SOURCE, "public", "events"])
    location = catalog_of(pipeline, lake).load_table(identifier).location()
    prefix = location.removeprefix(f"s3://{pipeline.bucket}/")
    key = f"{prefix}/data/day={DAYS[0]}/killed-run.parquet"
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": [1]}), sink)
    pipeline.endpoint.client().put_object(Bucket=pipeline.bucket, Key=key, Body=sink.getvalue())
    return key, len(sink.getvalue())


def maintenance_run(
    pipeline: Pipeline, lake: dict[str, Any], **config: Any
) -> dg.ExecuteInProcessResult:
    job, _ = build_iceberg_maintenance(
        SOURCE, [table_identifier(["raw", SOURCE, "public", "events"])]
    )
    defs = dg.Definitions(
        jobs=[job],
        resources={
            "lake": S3Lake(
                bucket=pipeline.bucket,
                prefix=LAKE_PREFIX,
                endpoint_url=pipeline.endpoint.url,
                **lake,
            )
        },
    )
    [op_name] = [node.name for node in job.graph.nodes]
    return defs.resolve_job_def(job.name).execute_in_process(
        run_config={"ops": {op_name: {"config": config}}}, instance=pipeline.instance
    )


def test_the_maintenance_job_removes_orphan_files_and_keeps_the_committed_ones(
    pipeline: Pipeline, catalog_uri: str
) -> None:
    run_sql(pipeline.conninfo, EVENTS)
    lake = {"iceberg": IcebergCatalog(uri=catalog_uri)}
    assert pipeline.materialize(iceberg_table(), partition=DAYS[0], lake=lake).success
    committed = data_files(pipeline)
    orphan, size = orphan_of(pipeline, lake)

    dry = maintenance_run(pipeline, lake, orphan_min_age="0s", dry_run=True)
    assert dry.success
    assert set(data_files(pipeline)) == {*committed, orphan}

    young = maintenance_run(pipeline, lake, orphan_min_age="1h")
    assert young.success
    assert orphan in data_files(pipeline)  # a file this young may belong to a running load

    done = maintenance_run(pipeline, lake, orphan_min_age="0s")
    assert done.success
    assert data_files(pipeline) == committed
    messages = [
        entry.user_message
        for entry in pipeline.instance.all_logs(done.run_id)
        if entry.user_message.startswith("raw_testsrc.public__events")
    ]
    assert messages == [
        "raw_testsrc.public__events: expired 0 snapshot(s), removed 1 orphan file(s) "
        f"({size} bytes)"
    ]


def test_a_table_never_published_has_nothing_to_maintain(
    pipeline: Pipeline, catalog_uri: str
) -> None:
    lake = {"iceberg": IcebergCatalog(uri=catalog_uri)}
    assert maintenance_run(pipeline, lake, orphan_min_age="0s").success


def test_a_lake_without_a_catalog_fails_the_job_saying_what_to_set(pipeline: Pipeline) -> None:
    job, _ = build_iceberg_maintenance(SOURCE, [("raw_testsrc", "public__events")])
    defs = dg.Definitions(
        jobs=[job], resources={"lake": S3Lake(bucket=pipeline.bucket, prefix=LAKE_PREFIX)}
    )
    result = defs.resolve_job_def(job.name).execute_in_process(
        instance=pipeline.instance, raise_on_error=False
    )
    assert not result.success
    assert "the lake has no Iceberg catalog: set ETL_ICEBERG_CATALOG_URI" in failure_text(result)
