"""The lake IO manager: downstream assets read exactly the partitions they depend on."""

import dagster as dg
import polars as pl

from etl_assets.components.table_assets import (
    LAKE_IO_MANAGER_KEY,
    TableAssets,
    build_table_assets,
)
from etl_assets.lib.table.spec import TableSpec
from etl_assets_tests.support import SOURCE, Pipeline, failure_text, run_sql, spec


def hourly_events(pipeline: Pipeline, days: int) -> tuple[TableSpec, TableAssets]:
    """A row an hour in `events`, published for `days` days from 2026-10-01; its assets."""
    run_sql(
        pipeline.conninfo,
        "CREATE TABLE events (id int PRIMARY KEY, created_at timestamptz NOT NULL)",
    )
    run_sql(
        pipeline.conninfo,
        "INSERT INTO events SELECT g, timestamptz '2026-10-01 00:00+00' + g * interval '1 hour'"
        " FROM generate_series(0, %s) g",
        (days * 24 - 1,),
    )
    table = spec(columns=("id", "created_at"))
    last = f"2026-10-{days:02d}"
    assert pipeline.materialize(table, partition_range=("2026-10-01", last)).success
    return table, build_table_assets(SOURCE, table, None)


def counts_asset(built: TableAssets, seen: dict[str, object]) -> dg.AssetsDefinition:
    """`curated/counts`, through the lake IO manager: the rows of each partition of `events`.

    `seen` learns what the asset was given: the input's type and its ids.
    """

    @dg.asset(
        key=["curated", "counts"],
        ins={"events": dg.AssetIn(built.raw.key)},
        partitions_def=built.raw.partitions_def,
        io_manager_key=LAKE_IO_MANAGER_KEY,
    )
    def counts(events: pl.LazyFrame) -> pl.LazyFrame:
        seen["type"] = type(events)
        seen["ids"] = events.select("id").collect()["id"].to_list()
        return events.select(pl.len().alias("rows"))

    return counts


def test_downstream_assets_read_exactly_the_partitions_they_depend_on(pipeline: Pipeline) -> None:
    table, built = hourly_events(pipeline, days=3)
    seen: dict[str, object] = {}
    counts = counts_asset(built, seen)

    def materialize_counts(partition: str) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [built.source, built.raw, counts],
            partition_key=partition,
            instance=pipeline.instance,
            resources=pipeline.resources(table),
            selection=[counts.key],
            raise_on_error=False,
        )

    assert materialize_counts("2026-10-02").success
    assert seen["type"] is pl.LazyFrame
    assert seen["ids"] == list(range(24, 48))
    key = "lake/curated/counts/day=2026-10-02/part-00000.parquet"
    body = pipeline.endpoint.client().get_object(Bucket=pipeline.bucket, Key=key)["Body"].read()
    assert pl.read_parquet(body)["rows"].to_list() == [24]

    missing = materialize_counts("2026-10-05")
    assert not missing.success
    assert "has no published data at s3://" in failure_text(missing)
    assert "materialize those partitions first" in failure_text(missing)
