"""The lake as other tools see it: hive-partitioned Parquet that DuckDB and Polars read as is."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import urlparse

import duckdb
import duckdb_extension_httpfs  # pyright: ignore[reportMissingTypeStubs]
import polars as pl

from etl_assets_tests.support import Pipeline, query, run_sql, spec

DAYS = ("2026-10-01", "2026-10-02", "2026-10-03")


def httpfs_extension() -> Path:
    """The httpfs build shipped by the duckdb-extension-httpfs wheel (no download)."""
    root = Path(duckdb_extension_httpfs.__file__).parent / "extensions"
    return root / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"


def published_events(pipeline: Pipeline) -> str:
    run_sql(
        pipeline.conninfo,
        """
        CREATE TABLE events (id int PRIMARY KEY, created_at timestamptz NOT NULL,
                             amount numeric(9, 2));
        INSERT INTO events
        SELECT g, timestamptz '2026-10-01 00:00+00' + g * interval '37 minutes', g / 4.0
        FROM generate_series(0, 115) g;
        """,
    )
    table = spec(columns=("id", "created_at", "amount"))
    assert pipeline.materialize(table, partition_range=(DAYS[0], DAYS[-1])).success
    return f"s3://{pipeline.bucket}/lake/raw/testsrc/public/events"


def source_counts(pipeline: Pipeline) -> list[tuple[dt.date, int]]:
    return [
        (day, count)
        for day, count in query(
            pipeline.conninfo,
            "SELECT (created_at AT TIME ZONE 'UTC')::date, count(*) FROM events"
            " WHERE created_at < '2026-10-04+00' GROUP BY 1 ORDER BY 1",
        )
    ]


def test_duckdb_reads_the_lake_with_hive_partitioning(pipeline: Pipeline) -> None:
    dataset = published_events(pipeline)
    endpoint = urlparse(pipeline.endpoint.url)
    connection = duckdb.connect()
    connection.execute(f"LOAD '{httpfs_extension()}'")
    connection.execute(
        "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, REGION 'us-east-1', ENDPOINT ?,"
        " URL_STYLE 'path', USE_SSL false)",
        [pipeline.endpoint.access_key, pipeline.endpoint.secret_key, endpoint.netloc],
    )
    rows = connection.execute(
        f"SELECT day, count(*), sum(amount) FROM read_parquet('{dataset}/*/*.parquet',"
        " hive_partitioning = true) GROUP BY day ORDER BY day"
    ).fetchall()
    assert [(day, count) for day, count, _ in rows] == source_counts(pipeline)
    total = query(
        pipeline.conninfo, "SELECT sum(amount) FROM events WHERE created_at < '2026-10-04+00'"
    )
    assert sum(amount for _, _, amount in rows) == total[0][0]


def test_polars_reads_the_lake_with_hive_partitioning(pipeline: Pipeline) -> None:
    dataset = published_events(pipeline)
    frame = pl.scan_parquet(f"{dataset}/", hive_partitioning=True)
    counts = frame.group_by("day").agg(pl.len()).sort("day").collect()
    assert list(counts.iter_rows()) == source_counts(pipeline)
    one_day = frame.filter(pl.col("day") == pl.date(2026, 10, 2)).collect()
    assert one_day.height == dict(source_counts(pipeline))[dt.date(2026, 10, 2)]
