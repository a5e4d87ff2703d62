"""The lake as other tools see it: hive-partitioned Parquet that DuckDB and Polars read as is."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from etl_assets_tests.integration.test_types import (
    COLUMNS,
    DAY,
    EDGE_COLUMNS,
    EDGES_DDL,
    KEY,
    TORTURE_DDL,
    WHEN,
    create,
    create_rows,
    edge_expectations,
    insert_edges,
    torture_spec,
)
from etl_assets_tests.support import Pipeline, duckdb_on_s3, query, run_sql, spec

DAYS = ("2026-10-01", "2026-10-02", "2026-10-03")


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
    connection = duckdb_on_s3(pipeline.endpoint)
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


# The type table of docs/types.md: for a row (found by its first cell), the torture table's
# columns of that type, what Polars and DuckDB read them as, and the words the row uses for it.
TYPE_TABLE_READERS = [
    ("`smallint`, `integer`, `bigint`", ["select", "naïve", KEY],
     [pl.Int16, pl.Int32, pl.Int64], ["SMALLINT", "INTEGER", "BIGINT"]),
    ("`real`, `double precision`", ["r", "d"], [pl.Float32, pl.Float64], ["FLOAT", "DOUBLE"]),
    ("`numeric(p,s)`, p ≤ 38", ["n_exact", "dom"], [pl.Decimal(38, 10), pl.Decimal(12, 2)],
     ["DECIMAL(38,10)", "DECIMAL(12,2)"]),
    ("`numeric` (unconstrained)", ["n_free"], [pl.String], ["VARCHAR"]),
    ("`boolean`", ["b"], [pl.Boolean], ["BOOLEAN"]),
    ("`text`, `varchar(n)`", ["t", "vc", "bp", "en"], [pl.String] * 4, ["VARCHAR"] * 4),
    ("`bytea`", ["by"], [pl.Binary], ["BLOB"]),
    ("`date`", ["dt"], [pl.Date], ["DATE"]),
    ("`time`", ["tm"], [pl.Time], ["TIME"]),
    ("`timetz`", ["ttz"], [pl.String], ["VARCHAR"]),
    ("`timestamp`", ["ts"], [pl.Datetime("us")], ["TIMESTAMP"]),
    ("`timestamptz`", ["tstz", WHEN], [pl.Datetime("us", "UTC")] * 2,
     ["TIMESTAMP WITH TIME ZONE"] * 2),
    ("`interval`", ["iv"],
     [pl.Struct({"months": pl.Int32, "days": pl.Int32, "microseconds": pl.Int64})],
     ['STRUCT("months" INTEGER, "days" INTEGER, "microseconds" BIGINT)']),
    ("`uuid`", ["u"], [pl.Binary], ["UUID"]),
    ("`json`, `jsonb`", ["js", "jsb"], [None, None], ["JSON", "JSON"]),
    ("1-D arrays", ["arr", "tarr"], [pl.List(pl.Int32), pl.List(pl.String)],
     ["INTEGER[]", "VARCHAR[]"]),
    ("composite types", ["comp"],
     [pl.Struct({"street": pl.String, "number": pl.Int32, "since": pl.Date})],
     ["STRUCT(street VARCHAR, number INTEGER, since DATE)"]),
]  # fmt: skip
# How the type table's rows name the types above, where it differs from the type's own name.
TYPE_TABLE_WORDS = {
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ",
    "INTEGER[]": "T[]",
    "VARCHAR[]": "T[]",
}


def type_table_row(first_cell: str) -> str:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "types.md").read_text()
    section = doc[doc.index("| Postgres |") :]
    table = section[: section.index("\n\n")]  # the Parquet table, not the Iceberg one after it
    [row] = [line for line in table.splitlines() if line.startswith(f"| {first_cell}")]
    return row


def test_polars_and_duckdb_read_each_type_as_the_type_table_says(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    create(pipeline, TORTURE_DDL)
    create_rows(pipeline)
    table = torture_spec()
    assert pipeline.materialize(table, partition=DAY).success
    path = tmp_path / "part-00000.parquet"
    path.write_bytes(pipeline.partition_bytes(table, DAY))
    # Polars refuses decimals wider than 38 digits, as the type table says.
    with pytest.raises(Exception, match="precision"):
        pl.read_parquet(path)
    polars = pl.read_parquet(path, columns=[c for c in COLUMNS if c != "n_big"]).schema
    described = duckdb.connect().execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)])
    duck = {name: kind for name, kind, *_ in described.fetchall()}
    for first_cell, columns, polars_types, duck_types in TYPE_TABLE_READERS:
        row = type_table_row(first_cell)
        for column, polars_type, duck_type in zip(columns, polars_types, duck_types, strict=True):
            if polars_type is not None:
                assert polars[column] == polars_type, column
                assert f"`{polars_type.base_type().__name__}" in row, (first_cell, polars_type)
            assert duck[column] == duck_type, column
            assert f"`{TYPE_TABLE_WORDS.get(duck_type, duck_type.split('(')[0])}" in row, first_cell
    assert str(polars["js"]).startswith("Extension")
    assert "arrow.json" in str(polars["js"])
    assert "`arrow.json`" in type_table_row("`json`, `jsonb`")


def test_readers_read_dates_python_cannot_hold_as_the_integers_parquet_stores(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    run_sql(pipeline.conninfo, EDGES_DDL)
    insert_edges(pipeline.conninfo)
    table = spec(table="edges", columns=EDGE_COLUMNS)
    assert pipeline.materialize(table, partition=DAY).success
    path = tmp_path / "part-00000.parquet"
    path.write_bytes(pipeline.partition_bytes(table, DAY))
    # (id, days, microseconds, microseconds) of d, ts and tz, as Postgres states them.
    expected = [row[:4] for row in edge_expectations(pipeline.conninfo)]
    frame = pl.read_parquet(path).sort("id")
    polars = frame.select(
        "id", pl.col("d").cast(pl.Int32), pl.col("ts").cast(pl.Int64), pl.col("tz").cast(pl.Int64)
    )
    assert polars.rows() == expected
    duck = duckdb.connect()
    rows = duck.execute(
        "SELECT id, d - DATE '1970-01-01', epoch_us(ts), epoch_us(tz) FROM read_parquet(?)"
        " ORDER BY id",
        [str(path)],
    ).fetchall()
    # All exact, but for 2^63 - 1 microseconds (294247-01-10 04:00:54.775807): DuckDB's infinity.
    last = 2**63 - 1
    assert rows == [tuple(None if v == last else v for v in want) for want in expected]
    infinite = duck.execute(
        "SELECT id FROM read_parquet(?) WHERE isinf(ts) AND isinf(tz)", [str(path)]
    ).fetchall()
    assert infinite == [(want[0],) for want in expected if want[2] == want[3] == last] != []
    # Python's datetime cannot hold them.
    with pytest.raises(OverflowError, match="out of range"):
        pq.read_table(path).column("d").to_pylist()
