"""The lake as Spark reads it (Glue, EMR and Athena for Apache Spark read Parquet with Spark).

Spark 4 cannot read a Parquet uuid, a time or a decimal wider than 38 digits; declared
`as: text`, those columns become text and the rest of the table reads as is, value for value.
pyspark comes from PyPI (the `spark` dependency group, installed by `make test-slow`) and runs
in local mode on 127.0.0.1 with the machine's Java: nothing is downloaded at run time.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import re
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from etl_assets.devstack.verify import values_equal
from etl_assets.lib.table.spec import ColumnSpec, Representation, TableSpec
from etl_assets_tests.integration.test_outside_readers import type_table_row
from etl_assets_tests.integration.test_types import (
    ARRAY_COLUMNS,
    ARRAYS_DDL,
    COLUMNS,
    DAY,
    EDGE_COLUMNS,
    EDGES_DDL,
    EXPECTED,
    KEY,
    TORTURE_DDL,
    create,
    create_rows,
    edge_expectations,
    expected_rows,
    insert_edges,
    torture_spec,
)
from etl_assets_tests.support import Pipeline, revised, run_sql, spec

pytestmark = pytest.mark.slow

# The per-column choice that makes a table readable by Spark: these types as text.
SPARK_UNREADABLE = {"u": "uuid", "tm": "time", "n_big": "numeric(50,5)"}
# What Spark says of each when it meets one (the whole file is unreadable to it).
SPARK_REFUSALS = {
    "u": "Illegal Parquet type: FIXED_LEN_BYTE_ARRAY (UUID)",
    "tm": "The data type TIME is not supported",
    "n_big": "Decimal precision 50 exceeds max precision 38",
}
ARRAYS_UNREADABLE = ("a_uuid", "a_time", "a_numbig")


@pytest.fixture(scope="module")
def spark() -> Generator[Any]:
    """A local Spark session on 127.0.0.1, in UTC (Python's side of timestamps included)."""
    sql_module: Any = importlib.import_module("pyspark.sql")
    saved = {name: os.environ.get(name) for name in ("TZ", "SPARK_LOCAL_IP")}
    os.environ["TZ"] = "UTC"  # pyspark turns Spark timestamps into local datetimes
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    time.tzset()
    session = (
        sql_module.SparkSession.builder.master("local[1]")
        .appName("etl-assets-lake-reader")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        time.tzset()


def as_text(columns: tuple[str, ...], text: tuple[str, ...]) -> tuple[str | ColumnSpec, ...]:
    return tuple(
        ColumnSpec(c, representation=Representation.TEXT) if c in text else c for c in columns
    )


def published(pipeline: Pipeline, table: TableSpec, directory: Path) -> str:
    assert pipeline.materialize(table, partition=DAY).success
    path = directory / f"{table.table}-{len(list(directory.iterdir()))}.parquet"
    path.write_bytes(pipeline.partition_bytes(table, DAY))
    return str(path)


def python_value(value: Any, data_type: Any) -> Any:
    """A value Spark collected, in the forms psycopg and pyarrow give (aware UTC timestamps)."""
    types: Any = importlib.import_module("pyspark.sql.types")
    if value is None:
        return None
    if isinstance(data_type, types.StructType):
        return {f.name: python_value(value[f.name], f.dataType) for f in data_type.fields}
    if isinstance(data_type, types.ArrayType):
        return [python_value(v, data_type.elementType) for v in value]
    if isinstance(data_type, types.TimestampType):
        return value.replace(tzinfo=dt.UTC)
    if isinstance(data_type, types.BinaryType):
        return bytes(value)
    return value


def spark_rows(spark: Any, path: str, order_by: str) -> list[dict[str, Any]]:
    frame = spark.read.parquet(path).orderBy(order_by)
    fields = frame.schema.fields
    return [
        {f.name: python_value(row[f.name], f.dataType) for f in fields} for row in frame.collect()
    ]


def dates_as_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: dates_as_text(v) for k, v in value.items()}
    return value.isoformat() if isinstance(value, dt.date) else value


def test_spark_reads_a_table_with_the_spark_safe_choices_value_for_value(
    pipeline: Pipeline, spark: Any, tmp_path: Path
) -> None:
    create(pipeline, TORTURE_DDL)
    create_rows(pipeline)
    table = torture_spec(as_text(COLUMNS, tuple(SPARK_UNREADABLE)))
    path = published(pipeline, table, tmp_path)
    text = dict.fromkeys(SPARK_UNREADABLE, "{c}::text")
    expected = expected_rows(pipeline.conninfo, {**EXPECTED, **text})
    actual = spark_rows(spark, path, f"`{KEY}`")
    assert [row[KEY] for row in actual] == [1, 2, 3]
    for want, got in zip(expected, actual, strict=True):
        assert list(got) == list(COLUMNS)
        got["comp"] = dates_as_text(got["comp"])
        for name in COLUMNS:
            assert values_equal(want[name], got[name]), (name, want[name], got[name])
    assert actual[0]["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert actual[0]["tm"] == "12:34:56.123456"
    assert actual[1]["n_big"] == "123456789012345678901234567890123456789012345.12345"
    schema = {f.name: f.dataType.simpleString() for f in spark.read.parquet(path).schema.fields}
    assert schema["ts"] == "timestamp_ntz"
    assert schema["tstz"] == "timestamp"
    assert schema["iv"] == "struct<months:int,days:int,microseconds:bigint>"


def test_spark_reads_arrays_composites_and_every_edge_value(
    pipeline: Pipeline, spark: Any, tmp_path: Path
) -> None:
    run_sql(pipeline.conninfo, ARRAYS_DDL)
    arrays = spec(table="arrays", columns=as_text(ARRAY_COLUMNS, ARRAYS_UNREADABLE))
    path = published(pipeline, arrays, tmp_path)
    # The same values as pyarrow reads (which the type suite compares with Postgres).
    reference = pq.read_table(path).sort_by("id").to_pylist()
    actual = spark_rows(spark, path, "id")
    assert len(actual) == len(reference) == 3
    for want, got in zip(reference, actual, strict=True):
        assert list(got) == list(ARRAY_COLUMNS)
        for name in ARRAY_COLUMNS:
            assert values_equal(want[name], got[name]), (name, want[name], got[name])
    assert reference[0]["a_uuid"] == "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}"
    # Dates and timestamps Python cannot hold, and intervals of any size: compared as the
    # integers Parquet stores (days and microseconds since 1970, the interval's fields).
    run_sql(pipeline.conninfo, EDGES_DDL)
    insert_edges(pipeline.conninfo)
    edges = revised(spec(table="edges", columns=EDGE_COLUMNS), preview_rows=0)
    spark.read.parquet(published(pipeline, edges, tmp_path)).createOrReplaceTempView("edges")
    fields = (
        "CASE WHEN {v} IS NOT NULL"
        " THEN array(bigint({v}.months), bigint({v}.days), {v}.microseconds) END"
    )
    micros = "unix_micros(timestamp({v}))"
    rows = spark.sql(
        "SELECT id, unix_date(d), {ts}, {tz}, {iv},"
        " transform(d_arr, v -> unix_date(v)), transform(ts_arr, v -> {tsv}),"
        " transform(tz_arr, v -> {tzv}), transform(iv_arr, v -> {ivv}),"
        " unix_date(comp.d), {cts}, {ctz}, {civ} FROM edges ORDER BY id".format(
            ts=micros.format(v="ts"),
            tz=micros.format(v="tz"),
            iv=fields.format(v="iv"),
            tsv=micros.format(v="v"),
            tzv=micros.format(v="v"),
            ivv=fields.format(v="v"),
            cts=micros.format(v="comp.ts"),
            ctz=micros.format(v="comp.tz"),
            civ=fields.format(v="comp.iv"),
        )
    ).collect()
    assert [tuple(row) for row in rows] == edge_expectations(pipeline.conninfo)


@pytest.mark.parametrize("column", list(SPARK_UNREADABLE))
def test_without_the_choice_one_such_column_makes_the_file_unreadable_to_spark(
    pipeline: Pipeline, spark: Any, tmp_path: Path, column: str
) -> None:
    create(pipeline, TORTURE_DDL)
    create_rows(pipeline)
    others = tuple(c for c in SPARK_UNREADABLE if c != column)
    path = published(pipeline, torture_spec(as_text(COLUMNS, others)), tmp_path)
    with pytest.raises(Exception, match=re.escape(SPARK_REFUSALS[column])):
        spark.read.parquet(path).collect()
    # The type table of docs/types.md says so, and names the way out.
    cell = type_table_row(TYPE_ROWS[column]).split("|")[-2]
    assert cell.strip().startswith("no"), cell
    assert "`as: text`" in cell


TYPE_ROWS = {"u": "`uuid`", "tm": "`time`", "n_big": "`numeric(p,s)`, 38 < p"}


def type_table_spark_cells() -> Iterator[tuple[str, str]]:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "types.md").read_text()
    table = doc[doc.index("| Postgres |") :]
    for line in table[: table.index("\n\n")].splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        yield cells[0], cells[-1]


def test_the_type_table_says_spark_reads_every_other_type() -> None:
    cells = dict(type_table_spark_cells())
    refused = {first for first in cells if any(first.startswith(r) for r in TYPE_ROWS.values())}
    assert len(refused) == 3
    for first, cell in cells.items():
        if first not in refused:
            assert cell.startswith("yes"), (first, cell)
