"""Every Postgres type and edge value: it round-trips exactly through S3, or it is refused.

The torture tables live in a non-public schema whose name, like the table's and the columns',
mixes case, spaces, quotes, reserved words, non-ASCII letters and `;--`.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import locale
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, LiteralString, cast

import duckdb
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from etl_assets.components.table_assets import raw_asset_key
from etl_assets.devstack.verify import values_equal
from etl_assets.lib.arrow_types import INTERVAL_TYPE
from etl_assets.lib.table.spec import ColumnSpec, Representation, TableSpec
from etl_assets_tests.support import (
    LAKE_PREFIX,
    SOURCE,
    Pipeline,
    failure_text,
    query,
    revised,
    run_sql,
    spec,
)

SCHEMA = 'Tortüre; --Schema "x"'
TABLE = 'Mixed Case "quoted" select'
KEY = "Order ID"
WHEN = "created at"
DAY = "2026-10-02"

TORTURE_DDL = """
CREATE TYPE {schema}.mood AS ENUM ('happy', 'sad', 'ünïcode mood');
CREATE TYPE {schema}.address AS (street text, number int, since date);
CREATE DOMAIN {schema}.money2 AS numeric(12, 2) CHECK (VALUE >= 0);
CREATE TABLE {table} (
    {key}        bigint PRIMARY KEY,
    {when}       timestamptz NOT NULL,
    "select"     smallint,
    "naïve"      integer,
    "semi;--colon" bigint,
    n_exact      numeric(38, 10),
    n_big        numeric(50, 5),
    n_free       numeric,
    r            real,
    d            double precision,
    b            boolean,
    t            text,
    vc           varchar(10),
    bp           char(5),
    by           bytea,
    en           {schema}.mood,
    dt           date,
    ts           timestamp,
    tstz         timestamptz,
    tm           time,
    ttz          timetz,
    iv           interval,
    u            uuid,
    js           json,
    jsb          jsonb,
    arr          int[],
    tarr         text[],
    earr         {schema}.mood[],
    comp         {schema}.address,
    dom          {schema}.money2
);
"""

TORTURE_ROWS = """
INSERT INTO {table} VALUES
(1, '2026-10-02 00:00:00+00', 1, 2, 3, 1.5, 1.5, 1.5, 1.5, 1.5, true, 'plain', 'short', 'ab',
 '\\x00ff', 'happy', '2026-10-02', '2026-10-02 12:34:56.123456', '2026-10-02 12:34:56.123456+02',
 '12:34:56.123456', '12:34:56.5+05:30', '1 year 2 mons 3 days 04:05:06.789123',
 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"b": 1,   "a": [1, 2.50, null]}}',
 '{{"b": 1, "a": [1, 2.50, null]}}', '{{1,NULL,3}}', '{{"x",NULL,"y z"}}', '{{happy,NULL}}',
 ROW('Main St', 42, '2000-02-29'), 12.50),
(2, '2026-10-02 23:59:59.999999+00', -32768, -2147483648, 9223372036854775807,
 1234567890123456789012345678.1234567890, 123456789012345678901234567890123456789012345.12345,
 '123456789012345678901234567890.123456789012345678901', 'NaN', 'Infinity', false,
 'ünïcode ✓ 🚀 ''quotes'' "dq" ;--', '', '     ', '\\x', 'ünïcode mood',
 '0001-01-01', '0001-01-01 00:00:00', '9999-12-31 23:59:59.999999+00',
 '23:59:59.999999', '00:00:00-15:59', '-178000000 years -7 mons -2147483648 days -00:00:00.000001',
 '00000000-0000-0000-0000-000000000000', '{{"a":1, "a":2}}', '{{}}', '{{}}', '{{}}', '{{}}',
 ROW(NULL, NULL, NULL), 0),
(3, '2026-10-02 12:00:00+00', NULL, NULL, NULL, NULL, NULL, 'NaN', '-Infinity', '-0', NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'null', 'null',
 NULL, NULL, NULL, NULL, NULL),
(4, '2026-10-03 00:00:00+00', 4, 4, 4, 4, 4, 4, 4, 4, true, 'next day', 'x', 'x', '\\x01',
 'sad', '2026-10-03', '2026-10-03 00:00', '2026-10-03 00:00+00', '00:00', '00:00+00',
 '0', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '1', '2', '{{4}}', '{{d}}', '{{sad}}',
 ROW('x', 1, '2026-10-03'), 4);
"""

COLUMNS = (
    KEY, WHEN, "select", "naïve", "semi;--colon", "n_exact", "n_big", "n_free", "r", "d", "b",
    "t", "vc", "bp", "by", "en", "dt", "ts", "tstz", "tm", "ttz", "iv", "u", "js", "jsb", "arr",
    "tarr", "earr", "comp", "dom",
)  # fmt: skip

INTERVAL_PARTS = (
    "CASE WHEN {c} IS NULL THEN NULL ELSE json_build_object("
    "'months', (extract(year from {c}) * 12 + extract(month from {c}))::int, "
    "'days', extract(day from {c})::int, "
    "'microseconds', (extract(hour from {c}) * 3600000000 + extract(minute from {c}) * 60000000"
    " + extract(microseconds from {c}))::bigint) END"
)
COMPOSITE_PARTS = (
    "CASE WHEN num_nulls({c}) = 1 THEN NULL ELSE json_build_object("
    "'street', ({c}).street, 'number', ({c}).number, 'since', ({c}).since) END"
)
# How Postgres itself states the exact value each lake column must hold.
EXPECTED = {
    "n_free": "{c}::text",
    "en": "{c}::text",
    "earr": "{c}::text[]",
    "ttz": "{c}::text",
    "js": "{c}::text",
    "jsb": "{c}::text",
    "iv": INTERVAL_PARTS,
    "comp": COMPOSITE_PARTS,
}


def torture_spec(
    columns: tuple[str | ColumnSpec, ...] = COLUMNS, end: dt.datetime = dt.datetime(2026, 10, 11)
) -> TableSpec:
    return spec(
        schema=SCHEMA,
        table=TABLE,
        partition_column=WHEN,
        primary_key=(KEY,),
        columns=columns,
        end=end,
    )


def create(pipeline: Pipeline, ddl: str) -> None:
    create_in(pipeline.conninfo, ddl)


def create_in(conninfo: str, ddl: str) -> None:
    """The torture schema, and `ddl` with its names filled in, in the database `conninfo`."""
    run_sql(conninfo, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)).as_string())
    run_sql(
        conninfo,
        ddl.format(
            schema=sql.Identifier(SCHEMA).as_string(),
            table=sql.Identifier(SCHEMA, TABLE).as_string(),
            key=sql.Identifier(KEY).as_string(),
            when=sql.Identifier(WHEN).as_string(),
        ),
    )


def expected_rows(conninfo: str, expected: Mapping[str, str] = EXPECTED) -> list[dict[str, Any]]:
    """The torture rows of DAY as Postgres states them (`expected`: per column, how)."""
    select = sql.SQL(", ").join(
        sql.SQL(cast("LiteralString", expected.get(name, "{c}"))).format(c=sql.Identifier(name))
        + sql.SQL(" AS ")
        + sql.Identifier(name)
        for name in COLUMNS
    )
    query = sql.SQL("SELECT {} FROM {} WHERE {} >= %s AND {} < %s ORDER BY {}").format(
        select,
        sql.Identifier(SCHEMA, TABLE),
        sql.Identifier(WHEN),
        sql.Identifier(WHEN),
        sql.Identifier(KEY),
    )
    start = dt.datetime(2026, 10, 2, tzinfo=dt.UTC)
    with psycopg.connect(conninfo, options="-c TimeZone=UTC -c DateStyle=ISO") as connection:
        cursor = connection.execute(query, (start, start + dt.timedelta(days=1)))
        names = [d.name for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def lake_rows(pipeline: Pipeline, table: TableSpec, day: str) -> list[dict[str, Any]]:
    """The partition's rows as pyarrow reads them, by primary key; composites' dates as text."""
    asset = raw_asset_key(SOURCE, table).to_user_string()
    key = f"{LAKE_PREFIX}/{asset}/day={day}/part-00000.parquet"
    body = pipeline.endpoint.client().get_object(Bucket=pipeline.bucket, Key=key)["Body"].read()
    rows = composite_dates_as_text(pq.read_table(io.BytesIO(body)).to_pylist())
    return sorted(rows, key=lambda r: r[table.primary_key[0]])


def composite_dates_as_text(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` with the dates in the composite `comp` as text, as `EXPECTED` states them."""
    for row in rows:
        if row.get("comp") is not None:
            row["comp"] = {
                k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row["comp"].items()
            }
    return rows


def test_every_type_and_edge_value_round_trips_exactly(pipeline: Pipeline) -> None:
    create(pipeline, TORTURE_DDL)
    create_rows(pipeline)
    table = torture_spec()
    assert pipeline.materialize(table, partition=DAY).success
    expected = expected_rows(pipeline.conninfo)
    actual = lake_rows(pipeline, table, DAY)
    assert [r[KEY] for r in actual] == [1, 2, 3]
    for want, got in zip(expected, actual, strict=True):
        assert list(got) == list(COLUMNS)
        for name in COLUMNS:
            assert values_equal(want[name], got[name]), (name, want[name], got[name])
    # Spot checks of what the comparison above covers, stated plainly:
    second = actual[1]
    assert second["n_free"] == "123456789012345678901234567890.123456789012345678901"
    assert second["bp"] == "     "
    assert second["d"] == float("inf")
    assert second["js"] == '{"a":1, "a":2}'
    assert second["comp"] == {"street": None, "number": None, "since": None}
    assert actual[2]["comp"] is None
    assert actual[2]["n_free"] == "NaN"
    assert actual[0]["tarr"] == ["x", None, "y z"]
    assert actual[0]["iv"] == {"months": 14, "days": 3, "microseconds": 14706789123}


def test_the_lake_keeps_the_planned_parquet_types(pipeline: Pipeline) -> None:
    create(pipeline, TORTURE_DDL)
    create_rows(pipeline)
    table = torture_spec()
    assert pipeline.materialize(table, partition=DAY).success
    body = pipeline.partition_bytes(table, DAY)
    written = pq.read_schema(io.BytesIO(body))
    assert {field.name: str(field.type) for field in written} == {
        KEY: "int64",
        WHEN: "timestamp[us, tz=UTC]",
        "select": "int16",
        "naïve": "int32",
        "semi;--colon": "int64",
        "n_exact": "decimal128(38, 10)",
        "n_big": "decimal256(50, 5)",
        "n_free": "string",
        "r": "float",
        "d": "double",
        "b": "bool",
        "t": "string",
        "vc": "string",
        "bp": "string",
        "by": "binary",
        "en": "string",
        "dt": "date32[day]",
        "ts": "timestamp[us]",
        "tstz": "timestamp[us, tz=UTC]",
        "tm": "time64[us]",
        "ttz": "string",
        "iv": "struct<months: int32, days: int32, microseconds: int64>",
        "u": "extension<arrow.uuid>",
        "js": "extension<arrow.json>",
        "jsb": "extension<arrow.json>",
        "arr": "list<element: int32>",
        "tarr": "list<element: string>",
        "earr": "list<element: string>",
        "comp": "struct<street: string, number: int32, since: date32[day]>",
        "dom": "decimal128(12, 2)",
    }
    assert [field.name for field in written if not field.nullable] == [KEY, WHEN]
    schema = pl.read_parquet_schema(body)
    assert schema["n_exact"] == pl.Decimal(38, 10)
    assert schema["n_big"] == pl.Decimal(50, 5)
    assert schema[WHEN] == pl.Datetime("us", "UTC")
    assert schema["ts"] == pl.Datetime("us")
    assert schema["tm"] == pl.Time
    assert schema["iv"] == pl.Struct(
        {"months": pl.Int32, "days": pl.Int32, "microseconds": pl.Int64}
    )
    parquet_schema = str(pq.ParquetFile(io.BytesIO(body)).schema)
    assert "u (UUID)" in parquet_schema
    assert "js (JSON)" in parquet_schema
    assert "jsb (JSON)" in parquet_schema


def test_the_direct_arrow_path_and_the_polars_path_write_the_same_file_contents(
    pipeline: Pipeline,
) -> None:
    # Without a transform the driver's batches go straight to Parquet; with one they go
    # through Polars. The lake must not be able to tell which way a partition was written.
    create(pipeline, TORTURE_DDL)
    create_rows(pipeline)
    table = torture_spec()
    assert pipeline.materialize(table, partition=DAY).success
    direct = pq.read_table(io.BytesIO(pipeline.partition_bytes(table, DAY)))
    assert pipeline.materialize(table, partition=DAY, transform=lambda frame: frame).success
    through_polars = pq.read_table(io.BytesIO(pipeline.partition_bytes(table, DAY)))
    assert direct.schema.equals(through_polars.schema, check_metadata=False)
    direct_rows = direct.sort_by(KEY).to_pylist()
    polars_rows = through_polars.sort_by(KEY).to_pylist()
    assert len(direct_rows) == len(polars_rows) == 3
    for one, other in zip(direct_rows, polars_rows, strict=True):
        for name in COLUMNS:
            assert values_equal(one[name], other[name]), (name, one[name], other[name])


def test_each_column_records_its_postgres_type_in_the_file(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    create(pipeline, TORTURE_DDL)
    create_rows(pipeline)
    table = torture_spec(
        tuple(ColumnSpec(c, representation=Representation.TEXT) if c == "u" else c for c in COLUMNS)
    )
    assert pipeline.materialize(table, partition=DAY).success
    body = pipeline.partition_bytes(table, DAY)
    live = dict(
        query(
            pipeline.conninfo,
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0",
            (sql.Identifier(SCHEMA, TABLE).as_string(),),
        )
    )
    labels = ["happy", "sad", "ünïcode mood"]
    # What an Arrow reader sees: each field's metadata.
    schema = pq.read_schema(io.BytesIO(body))
    fields = {name: schema.field(name).metadata or {} for name in COLUMNS}
    for name, metadata in fields.items():
        assert metadata[b"postgres.type"].decode() == live[name], name
        assert (b"postgres.enum_labels" in metadata) == (name in ("en", "earr")), name
    assert json.loads(fields["earr"][b"postgres.enum_labels"]) == labels
    assert fields["u"][b"postgres.as"] == b"text"
    assert live["earr"] == f"{sql.Identifier(SCHEMA).as_string()}.mood[]"
    # What a plain Parquet reader sees: one JSON document in the file's key-value metadata.
    path = tmp_path / "part.parquet"
    path.write_bytes(body)
    [(document,)] = (
        duckdb.connect()
        .execute(
            "SELECT value FROM parquet_kv_metadata(?) WHERE key = 'postgres.columns'", [str(path)]
        )
        .fetchall()
    )
    columns = json.loads(document)
    assert [c["name"] for c in columns] == list(COLUMNS)
    assert all(c["type"] == live[c["name"]] for c in columns)
    assert columns[COLUMNS.index("en")] == {"name": "en", "type": live["en"], "enum_labels": labels}
    assert columns[COLUMNS.index("u")] == {"name": "u", "type": "uuid", "as": "text"}
    # The same bytes on a rerun; through a transform, the columns it passes through keep it.
    assert pipeline.materialize(table, partition=DAY).success
    assert pipeline.partition_bytes(table, DAY) == body
    assert pipeline.materialize(
        table, partition=DAY, transform=lambda f: f.with_columns(pl.lit(1).alias("added"))
    ).success
    transformed = pq.read_schema(io.BytesIO(pipeline.partition_bytes(table, DAY)))
    assert (transformed.field("dom").metadata or {})[b"postgres.type"].decode() == live["dom"]
    assert transformed.field("added").metadata is None
    kv = pq.read_metadata(io.BytesIO(pipeline.partition_bytes(table, DAY))).metadata or {}
    assert [c["name"] for c in json.loads(kv[b"postgres.columns"])] == list(COLUMNS)


# Every element type that maps exactly, with NULL elements, empty arrays and NULL arrays.
ARRAYS_DDL = """
CREATE TYPE stint AS (label text, length interval);
CREATE TABLE arrays (
    id int PRIMARY KEY, created_at timestamptz NOT NULL,
    a_int2 smallint[], a_int8 bigint[], a_real real[], a_double double precision[],
    a_bool boolean[], a_num numeric(12,2)[], a_numfree numeric[], a_numbig numeric(50,5)[],
    a_varchar varchar(5)[], a_char char(3)[], a_bytea bytea[], a_uuid uuid[],
    a_json json[], a_jsonb jsonb[], a_ts timestamp[], a_tstz timestamptz[], a_time time[],
    a_timetz timetz[], a_date date[], a_interval interval[], c_interval stint
);
INSERT INTO arrays VALUES
(1, '2026-10-02 01:00+00', '{1,NULL,-32768}', '{9223372036854775807,NULL}',
 '{1.5,NaN,-Infinity,NULL}', '{Infinity,-0,NULL}', '{true,NULL,false}', '{1.50,NULL,-0.01}',
 '{1.5,NaN,NULL,123456789012345678901234567890.5}',
 '{1.5,NULL}', '{ab,NULL,"x y"}', '{a,NULL," "}', '{"\\\\x00ff",NULL,"\\\\x"}',
 '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}', ARRAY['{"b": 1,  "a": 2}'::json, NULL],
 ARRAY['{"b": 1, "a": 2}'::jsonb, NULL], '{"2026-10-02 12:34:56.123456",NULL}',
 '{"2026-10-02 12:34:56.123456+02",NULL}', '{12:34:56.5,NULL}', '{12:34:56+05:30,NULL}',
 '{2026-10-02,NULL,0001-01-01}', '{"1 year 2 mons 3 days 04:05:06.789123",NULL,"-1 mons 2 us"}',
 ROW('shift', '-2 days 00:00:01')),
(2, '2026-10-02 02:00+00', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
 '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', ROW(NULL, NULL)),
(3, '2026-10-02 03:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"""
ARRAY_COLUMNS = (
    "id", "created_at", "a_int2", "a_int8", "a_real", "a_double", "a_bool", "a_num", "a_numfree",
    "a_numbig", "a_varchar", "a_char", "a_bytea", "a_uuid", "a_json", "a_jsonb", "a_ts", "a_tstz",
    "a_time", "a_timetz", "a_date", "a_interval", "c_interval",
)  # fmt: skip
# Postgres keeps an interval as months, days and microseconds; so does the lake.
INTERVALS = ("a_interval", "c_interval")
# Kept as Postgres' text of each element (see the README's type table), so read back as text[].
ARRAYS_AS_TEXT = ("a_numfree", "a_json", "a_jsonb", "a_timetz")


def test_arrays_of_every_exact_type_and_intervals_in_composites_round_trip(
    pipeline: Pipeline,
) -> None:
    run_sql(pipeline.conninfo, ARRAYS_DDL)
    table = spec(table="arrays", columns=ARRAY_COLUMNS)
    assert pipeline.materialize(table, partition=DAY).success
    select = sql.SQL(", ").join(
        sql.SQL("{}::text[] AS {}").format(sql.Identifier(c), sql.Identifier(c))
        if c in ARRAYS_AS_TEXT
        else sql.Identifier(c)
        for c in ARRAY_COLUMNS
        if c not in INTERVALS
    )
    with psycopg.connect(pipeline.conninfo, options="-c TimeZone=UTC") as connection:
        cursor = connection.execute(sql.SQL("SELECT {} FROM arrays ORDER BY id").format(select))
        names = [c for c in ARRAY_COLUMNS if c not in INTERVALS]
        expected = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    actual = pq.read_table(io.BytesIO(pipeline.partition_bytes(table, DAY))).to_pylist()
    assert [row["id"] for row in actual] == [1, 2, 3]
    for want, got in zip(expected, actual, strict=True):
        for name in want:
            assert values_equal(want[name], got[name]), (name, want[name], got[name])
    first = actual[0]
    assert first["a_interval"] == [
        {"months": 14, "days": 3, "microseconds": 14_706_789_123},
        None,
        {"months": -1, "days": 0, "microseconds": 2},
    ]
    assert first["c_interval"] == {
        "label": "shift",
        "length": {"months": 0, "days": -2, "microseconds": 1_000_000},
    }
    assert actual[1]["a_interval"] == []
    assert actual[1]["c_interval"] == {"label": None, "length": None}
    assert actual[2]["a_interval"] is None
    assert actual[2]["c_interval"] is None
    assert first["a_char"] == ["a  ", None, "   "]
    assert first["a_jsonb"] == ['{"a": 2, "b": 1}', None]
    assert first["a_json"] == ['{"b": 1,  "a": 2}', None]
    assert first["a_numfree"][3] == "123456789012345678901234567890.5"
    assert actual[1]["a_uuid"] == []
    assert actual[2]["a_uuid"] is None


def create_rows(pipeline: Pipeline) -> None:
    insert_torture_rows(pipeline.conninfo)


def insert_torture_rows(conninfo: str) -> None:
    run_sql(conninfo, TORTURE_ROWS.format(table=sql.Identifier(SCHEMA, TABLE).as_string()))


HAZARD_DDL = """
CREATE TABLE {table} (
    {key}   bigint PRIMARY KEY,
    {when}  timestamptz NOT NULL,
    d_inf   date,
    ts_ninf timestamp,
    tz_inf  timestamptz,
    t24     time,
    n_nan   numeric(10, 2),
    arr2d   int[],
    arr_lb  int[],
    darr    date[],
    comp_d  {schema}.span,
    ts_late timestamp,
    tz_max  timestamptz,
    tzarr   timestamptz[],
    comp_ts {schema}.moment
);
"""
SHAPE = "a multi-dimensional array, or one not indexed from 1"
LATEST = "294247-01-10 04:00:54.775807"  # 2^63 - 1 microseconds after 1970
# (column, value, what the refusal says the row holds (only that), the value `as: text`)
HAZARD_ROWS = [
    ("d_inf", "'infinity'", "infinity or -infinity", "infinity"),
    ("ts_ninf", "'-infinity'", "infinity or -infinity", "-infinity"),
    ("tz_inf", "'infinity'", "infinity or -infinity", "infinity"),
    ("t24", "'24:00'", "24:00:00", "24:00:00"),
    ("n_nan", "'NaN'", "NaN", "NaN"),
    ("arr2d", "'{{1,2},{3,4}}'", SHAPE, "{{1,2},{3,4}}"),
    ("arr_lb", "'[0:1]={5,6}'", SHAPE, "[0:1]={5,6}"),
    (
        "darr",
        "'{2026-01-01,infinity}'",
        "an element that is infinity or -infinity",
        "{2026-01-01,infinity}",
    ),
    ("comp_d", "ROW('infinity')", "infinity or -infinity in field at", "(infinity)"),
    # Past int64 microseconds: the driver would wrap them into garbage.
    (
        "ts_late",
        "'294247-01-10 04:00:54.775808'",
        f"a time after {LATEST}",
        "294247-01-10 04:00:54.775808",
    ),
    (
        "tz_max",
        "'294276-12-31 23:59:59.999999+00'",  # the latest Postgres allows
        f"a time after {LATEST}+00",
        "294276-12-31 23:59:59.999999+00",
    ),
    (
        "tzarr",
        "ARRAY['2026-01-01 00:00+00', NULL, '294276-12-31 23:59:59.999999+00']::timestamptz[]",
        f"an element that is a time after {LATEST}+00",
        '{"2026-01-01 00:00:00+00",NULL,"294276-12-31 23:59:59.999999+00"}',
    ),
    (
        "comp_ts",
        "ROW('294247-01-10 04:00:54.775808')",
        f"a time after {LATEST} in field at",
        '("294247-01-10 04:00:54.775808")',
    ),
]


@pytest.fixture
def hazards(pipeline: Pipeline) -> Pipeline:
    run_sql(
        pipeline.conninfo, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)).as_string()
    )
    schema = sql.Identifier(SCHEMA).as_string()
    run_sql(pipeline.conninfo, f"CREATE TYPE {schema}.span AS (at date)")
    run_sql(pipeline.conninfo, f"CREATE TYPE {schema}.moment AS (at timestamp)")
    table = sql.Identifier(SCHEMA, TABLE).as_string()
    run_sql(
        pipeline.conninfo,
        HAZARD_DDL.format(
            schema=schema,
            table=table,
            key=sql.Identifier(KEY).as_string(),
            when=sql.Identifier(WHEN).as_string(),
        ),
    )
    for index, (column, value, _, _) in enumerate(HAZARD_ROWS):
        # Row 10 + i, alone on day i + 1, holds hazard i.
        escaped = value.replace("{", "{{").replace("}", "}}")
        run_sql(
            pipeline.conninfo,
            sql.SQL(
                cast(
                    "LiteralString",
                    f"INSERT INTO {{}} ({{}}, {{}}, {{}}) VALUES (%s, %s, {escaped})",
                )
            )
            .format(
                sql.Identifier(SCHEMA, TABLE),
                sql.Identifier(KEY),
                sql.Identifier(WHEN),
                sql.Identifier(column),
            )
            .as_string(),
            (10 + index, dt.datetime(2026, 10, 1 + index, 6, tzinfo=dt.UTC)),
        )
    return pipeline


HAZARD_COLUMNS = tuple(column for column, *_ in HAZARD_ROWS)


def hazard_spec(**representations: Representation) -> TableSpec:
    return torture_spec(
        (
            KEY,
            WHEN,
            *(ColumnSpec(c, representation=representations.get(c)) for c in HAZARD_COLUMNS),
        ),
        end=dt.datetime(2026, 10, 1 + len(HAZARD_ROWS)),
    )


@pytest.mark.parametrize(("index", "hazard"), list(enumerate(HAZARD_ROWS)))
def test_a_value_without_exact_representation_is_refused_before_publishing(
    hazards: Pipeline, index: int, hazard: tuple[str, str, str, str]
) -> None:
    column, _, values, _ = hazard
    day = f"2026-10-{1 + index:02d}"
    result = hazards.materialize(hazard_spec(), partition=day, raise_on_error=False)
    assert not result.success
    error = failure_text(result)
    [(declared_type,)] = query(
        hazards.conninfo,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attname = %s",
        (sql.Identifier(SCHEMA, TABLE).as_string(), column),
    )
    assert f"{SCHEMA}.{TABLE}.{column} ({declared_type})" in error
    assert f"primary key ({KEY}={10 + index})" in error
    assert f"[{day}]: nothing was published" in error
    # The hazard found, and only it (not every hazard the column's type can have).
    assert f"holds {values}, which no Parquet type holds exactly" in error
    assert "`as: text`" in error
    assert hazards.objects() == {}


def test_as_text_keeps_those_values_exactly_as_postgres_writes_them(hazards: Pipeline) -> None:
    table = hazard_spec(**dict.fromkeys(HAZARD_COLUMNS, Representation.TEXT))
    last = f"2026-10-{len(HAZARD_ROWS):02d}"
    assert hazards.materialize(table, partition_range=("2026-10-01", last)).success
    for index, (column, _, _, text) in enumerate(HAZARD_ROWS):
        rows = lake_rows(hazards, table, f"2026-10-{1 + index:02d}")
        assert [row[column] for row in rows] == [text]


@pytest.mark.parametrize(
    ("pg_type", "value", "text"),
    [
        ("money", "12.34", "$12.34"),
        ("inet", "'10.0.0.1/24'", "10.0.0.1/24"),
        ("int4range", "'[1,5)'", "[1,5)"),
        ("point", "'(1,2)'", "(1,2)"),
        ("tsvector", "'a fat cat'", "'a' 'cat' 'fat'"),
        ("bit(3)", "B'101'", "101"),
        ("int[]", "NULL", None),
    ],
)
def test_types_without_a_mapping_are_refused_unless_declared_as_text(
    pipeline: Pipeline, pg_type: str, value: str, text: str | None
) -> None:
    run_sql(
        pipeline.conninfo,
        f"CREATE TABLE odd (id int PRIMARY KEY, created_at timestamptz NOT NULL, v {pg_type})",
    )
    run_sql(pipeline.conninfo, f"INSERT INTO odd VALUES (1, '2026-10-02 01:00+00', {value})")
    strict = spec(table="odd", columns=("id", "created_at", "v"))
    result = pipeline.materialize(strict, partition=DAY, raise_on_error=False)
    if pg_type == "int[]":
        assert result.success  # a mapped type, for contrast
        return
    assert not result.success
    error = failure_text(result)
    assert f"public.odd.v has type {pg_type.split('(', maxsplit=1)[0]}" in error
    assert f"raw/testsrc/public/odd [{DAY}]: nothing was published" in error
    assert "`as: text`" in error
    assert pipeline.objects() == {}
    as_text = spec(
        table="odd",
        columns=("id", "created_at", ColumnSpec("v", representation=Representation.TEXT)),
    )
    assert pipeline.materialize(as_text, partition=DAY).success
    assert [r["v"] for r in lake_rows(pipeline, as_text, DAY)] == [text]


# Values whose `::text` cast differs from the type's output function (inet adds /128, boolean
# spells `true`, char(n) loses its padding), and others for good measure.
OUTPUT_DDL = """
CREATE TYPE pair AS (a inet, b char(3));
CREATE TABLE printed (
    id int PRIMARY KEY, created_at timestamptz NOT NULL,
    ip inet, net cidr, flag boolean, code char(5), fee money, span int4range,
    period tstzrange, ips inet[], codes char(3)[], blob bytea, at timestamptz, took interval,
    doc tsvector, label name, pair pair, bits varbit
);
INSERT INTO printed VALUES
(1, '2026-10-02 01:00+00', '::ffff:1.2.3.4', '10.1.0.0/16', true, 'ab', 12.34, '[1,5)',
 '[2026-10-02 12:00+02,)', '{::ffff:1.2.3.4,NULL,10.0.0.1/8}', '{a,NULL}', '\\x00ff',
 '2026-10-02 12:00:00.5+02', '1 day 02:00', 'a fat cat', 'abc', ROW('::ffff:1.2.3.4', 'x'), B'101'),
(2, '2026-10-02 02:00+00', NULL, NULL, false, '', -0.5, 'empty', '(,)', '{}', '{}', '\\x',
 NULL, '-1 mons', NULL, '', ROW(NULL, NULL), NULL),
(3, '2026-10-02 03:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL);
"""
PRINTED = (
    "ip", "net", "flag", "code", "fee", "span", "period", "ips", "codes", "blob", "at", "took",
    "doc", "label", "pair", "bits",
)  # fmt: skip


def test_as_text_is_what_the_types_output_function_prints(pipeline: Pipeline) -> None:
    run_sql(pipeline.conninfo, OUTPUT_DDL)
    table = spec(
        table="printed",
        columns=(
            "id",
            "created_at",
            *(ColumnSpec(c, representation=Representation.TEXT) for c in PRINTED),
        ),
    )
    assert pipeline.materialize(table, partition=DAY).success
    lake = pq.read_table(io.BytesIO(pipeline.partition_bytes(table, DAY))).sort_by("id")
    # What a client receives in text format (psql, COPY): the output function's text.
    settings = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c lc_monetary=C"
    with psycopg.connect(pipeline.conninfo, options=settings) as connection:
        names = sql.SQL(", ").join(sql.Identifier(c) for c in PRINTED)
        statement = sql.SQL("SELECT {} FROM printed ORDER BY id").format(names)
        result = connection.pgconn.exec_(statement.as_bytes(connection))
        printed = {
            name: [
                None if (v := result.get_value(row, i)) is None else bytes(v).decode()
                for row in range(result.ntuples)
            ]
            for i, name in enumerate(PRINTED)
        }
        [ip_cast] = connection.execute("SELECT ip::text FROM printed WHERE id = 1").fetchone() or []
    for name in PRINTED:
        assert lake.column(name).to_pylist() == printed[name], name
    assert lake.column("ip").to_pylist()[0] == "::ffff:1.2.3.4"
    assert ip_cast == "::ffff:1.2.3.4/128"  # what a ::text cast would have kept
    assert lake.column("flag").to_pylist() == ["t", "f", None]
    assert lake.column("code").to_pylist()[:2] == ["ab   ", "     "]
    assert lake.column("pair").to_pylist()[:2] == ['(::ffff:1.2.3.4,"x  ")', "(,)"]
    assert lake.column("label").to_pylist() == ["abc", "", None]
    assert lake.column("blob").to_pylist() == ["\\x00ff", "\\x", None]


def test_output_bytes_do_not_depend_on_session_or_client_settings(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(pipeline, TORTURE_DDL)
    create_rows(pipeline)
    # A double whose shortest exact text needs 17 digits: extra_float_digits changes its text.
    run_sql(
        pipeline.conninfo,
        sql.SQL("UPDATE {} SET d = 0.1::float8 + 0.2::float8 WHERE {} = 1")
        .format(sql.Identifier(SCHEMA, TABLE), sql.Identifier(KEY))
        .as_string(),
    )
    text_everything = torture_spec(
        tuple(
            ColumnSpec(c, representation=Representation.TEXT)
            if c in ("ts", "tstz", "iv", "comp", "d", "by")
            else c
            for c in COLUMNS
        )
    )
    [(database,)] = query(pipeline.conninfo, "SELECT current_database()")
    bodies: list[bytes] = []
    for timezone, locale_name, style, server_defaults in (
        ("UTC", "C", "ISO", ()),
        (
            "Asia/Kathmandu",
            "C.utf8",
            "German",
            (
                "TimeZone = 'America/St_Johns'",
                "DateStyle = 'SQL, DMY'",
                "extra_float_digits = 0",
                "bytea_output = 'escape'",
            ),
        ),
    ):
        for setting in server_defaults:
            run_sql(
                pipeline.conninfo,
                sql.SQL("ALTER DATABASE {} SET ").format(sql.Identifier(database)).as_string()
                + setting,
            )
        monkeypatch.setenv("PGTZ", timezone)
        monkeypatch.setenv("TZ", timezone)
        monkeypatch.setenv("LC_ALL", locale_name)
        monkeypatch.setenv("PGDATESTYLE", style)
        monkeypatch.setenv(
            "PGOPTIONS",
            f"-c IntervalStyle=sql_standard -c TimeZone={timezone} -c extra_float_digits=-3"
            " -c bytea_output=escape",
        )
        # The process's own clock zone and locale too, not only the variables.
        time.tzset()
        previous_locale = locale.setlocale(locale.LC_ALL, locale_name)
        try:
            assert pipeline.materialize(text_everything, partition=DAY).success
        finally:
            locale.setlocale(locale.LC_ALL, previous_locale)
            monkeypatch.undo()
            time.tzset()
        bodies.append(pipeline.partition_bytes(text_everything, DAY))
    first, second = (pq.read_table(io.BytesIO(body)) for body in bodies)
    for name in first.column_names:
        assert values_equal(first.column(name).to_pylist(), second.column(name).to_pylist()), name
    assert bodies[0] == bodies[1]
    rows = second.to_pydict()
    first_row = rows[KEY].index(1)  # the UPDATE above moved it within the table
    assert rows["tstz"][first_row] == "2026-10-02 10:34:56.123456+00"
    assert rows["d"][first_row] == "0.30000000000000004"
    assert rows["by"][first_row] == "\\x00ff"
    assert json.dumps(rows["iv"][first_row]) == json.dumps("1 year 2 mons 3 days 04:05:06.789123")


# Every date Postgres holds fits date32; timestamps fit int64 microseconds since 1970 up to
# 294247-01-10 04:00:54.775807 (later ones are refused, see HAZARD_ROWS); intervals keep their
# three fields whatever their size. Python's datetime holds none of the years below.
EDGES_DDL = """
CREATE TYPE edge AS (d date, ts timestamp, tz timestamptz, iv interval);
CREATE TABLE edges (
    id int PRIMARY KEY, created_at timestamptz NOT NULL,
    d date, ts timestamp, tz timestamptz, iv interval,
    d_arr date[], ts_arr timestamp[], tz_arr timestamptz[], iv_arr interval[], comp edge
);
"""
EDGE_VALUES = [
    ("4714-11-24 BC", "4714-11-24 00:00:00 BC", "4714-11-24 00:00:00+00 BC", "3000000 hours"),
    ("0044-03-15 BC", "0044-03-15 12:30:00.000001 BC", "0001-12-31 23:59:59.999999+00 BC",
     "2562047788:00:54.775807"),
    ("10000-01-01", "10000-01-01 00:00:00", "99999-12-31 23:59:59.5+00",
     "-2562047788:00:54.775807"),
    ("5874897-12-31", "294247-01-10 04:00:54.775807", "294247-01-10 04:00:54.775807+00",
     "1 year -2 days 3000000:00:00.000001"),
    ("0001-01-01", "9999-12-31 23:59:59.999999", "1970-01-01 00:00:00+00",
     "-178956970 years -8 mons -2147483648 days"),
]  # fmt: skip
EDGE_COLUMNS = (
    "id", "created_at", "d", "ts", "tz", "iv", "d_arr", "ts_arr", "tz_arr", "iv_arr", "comp",
)  # fmt: skip


def insert_edges(conninfo: str) -> None:
    for index, (d, ts, tz, iv) in enumerate(EDGE_VALUES):
        run_sql(
            conninfo,
            "INSERT INTO edges VALUES (%s, %s, %s::date, %s::timestamp, %s::timestamptz,"
            " %s::interval, ARRAY[%s::date, NULL], ARRAY[NULL, %s::timestamp],"
            " ARRAY[%s::timestamptz], ARRAY[%s::interval, NULL], ROW(%s, %s, %s, %s))",
            (
                index,
                dt.datetime(2026, 10, 2, index, tzinfo=dt.UTC),
                *(d, ts, tz, iv),
                *(d, ts, tz, iv),
                *(d, ts, tz, iv),
            ),
        )
    # Below what the interval input syntax accepts: the smallest time part, by arithmetic.
    run_sql(
        conninfo,
        "INSERT INTO edges (id, created_at, iv, iv_arr, comp)"
        " SELECT 9, '2026-10-02 09:00+00', v, ARRAY[v],"
        " ROW(NULL::date, NULL::timestamp, NULL::timestamptz, v)::edge"
        " FROM (SELECT interval '-2562047788:00:54.775807' - interval '1 microsecond') AS t(v)",
    )


# Postgres' own statement of each value, as integers: days and microseconds since 1970, and
# an interval's months, days and microseconds from extract() (signs included). (extract(epoch)
# rounds at these magnitudes; the interval since 1970 does not.)
DAYS = "({v} - date '1970-01-01')"
SINCE_1970 = "({v} - '1970-01-01 00:00:00+00')"
MICROS = (
    f"(extract(day from {SINCE_1970}) * 86400000000 + extract(hour from {SINCE_1970})"
    f" * 3600000000 + extract(minute from {SINCE_1970}) * 60000000"
    f" + extract(microseconds from {SINCE_1970}))::int8"
)
FIELDS = (
    "CASE WHEN {v} IS NOT NULL THEN"
    " ARRAY[(extract(year from {v}) * 12 + extract(month from {v}))::int8,"
    " extract(day from {v})::int8, (extract(hour from {v}) * 3600000000"
    " + extract(minute from {v}) * 60000000 + extract(microseconds from {v}))::int8] END"
)


def edge_expectations(conninfo: str) -> list[tuple[Any, ...]]:
    def each(template: str, array: str) -> str:
        return (
            f"(SELECT jsonb_agg({template.format(v='u.v')} ORDER BY u.n)"
            f" FROM unnest({array}) WITH ORDINALITY AS u(v, n))"
        )

    expressions = [
        DAYS.format(v="d"),
        MICROS.format(v="ts"),
        MICROS.format(v="tz"),
        FIELDS.format(v="iv"),
        each(DAYS, "d_arr"),
        each(MICROS, "ts_arr"),
        each(MICROS, "tz_arr"),
        each(FIELDS, "iv_arr"),
        DAYS.format(v="(comp).d"),
        MICROS.format(v="(comp).ts"),
        MICROS.format(v="(comp).tz"),
        FIELDS.format(v="(comp).iv"),
    ]
    return [
        tuple(row)
        for row in query(conninfo, f"SELECT id, {', '.join(expressions)} FROM edges ORDER BY id")
    ]


def as_integers(table: pa.Table) -> list[tuple[Any, ...]]:
    """The lake's values as the integers Parquet stores: no Python date or time involved."""

    def integers(array: Any) -> list[Any]:
        kind = array.type
        if pa.types.is_date32(kind):
            return array.cast(pa.int32()).to_pylist()
        if pa.types.is_timestamp(kind):
            return array.cast(pa.int64()).to_pylist()
        if pa.types.is_list(kind):
            lengths = pc.list_value_length(array).to_pylist()
            values = iter(integers(array.flatten()))
            return [None if n is None else [next(values) for _ in range(n)] for n in lengths]
        if kind == INTERVAL_TYPE:
            fields = [array.field(name).to_pylist() for name in ("months", "days", "microseconds")]
            valid = array.is_valid().to_pylist()
            return [list(v) if ok else None for ok, *v in zip(valid, *fields, strict=True)]
        raise AssertionError(kind)

    columns = [integers(table.column(name).combine_chunks()) for name in EDGE_COLUMNS[2:10]]
    comp: Any = table.column("comp").combine_chunks()
    fields = [integers(comp.field(name)) for name in ("d", "ts", "tz", "iv")]
    ids = table.column("id").to_pylist()
    return sorted(zip(ids, *columns, *fields, strict=True))


def test_dates_timestamps_and_intervals_at_every_edge_round_trip_exactly(
    pipeline: Pipeline,
) -> None:
    run_sql(pipeline.conninfo, EDGES_DDL)
    insert_edges(pipeline.conninfo)
    table = revised(spec(table="edges", columns=EDGE_COLUMNS), preview_rows=10)
    assert pipeline.materialize(table, partition=DAY).success
    lake = pq.read_table(io.BytesIO(pipeline.partition_bytes(table, DAY)))
    expected = edge_expectations(pipeline.conninfo)
    assert len(expected) == 6
    assert as_integers(lake) == expected
    # Spot checks of the comparison above, stated plainly.
    assert as_integers(lake)[0][:5] == (
        0,
        -2_440_588,  # days from 1970-01-01 back to 4714-11-24 BC
        -210_866_803_200_000_000,
        -210_866_803_200_000_000,
        [0, 0, 10_800_000_000_000_000],  # 3,000,000 hours
    )
    intervals = dict(zip(lake.column("id").to_pylist(), lake.column("iv").to_pylist(), strict=True))
    assert intervals[2] == {"months": 0, "days": 0, "microseconds": -(2**63 - 1)}
    assert intervals[4] == {"months": -(2**31), "days": -(2**31), "microseconds": 0}
    assert intervals[9] == {"months": 0, "days": 0, "microseconds": -(2**63)}
    # The preview shows what Python's datetime cannot hold, as Postgres would write it.
    preview = pipeline.metadata(table, DAY)["preview"]
    for text in ("4714-11-24 BC", "0044-03-15T12:30:00.000001 BC", "5874897-12-31", "10000-01-01"):
        assert text in preview, text
    # Through a transform (Polars' streaming engine) the values are the same.
    assert pipeline.materialize(table, partition=DAY, transform=lambda frame: frame).success
    through_polars = pq.read_table(io.BytesIO(pipeline.partition_bytes(table, DAY)))
    assert as_integers(through_polars) == expected


def test_an_infinite_interval_is_refused_naming_the_row(pipeline: Pipeline) -> None:
    [(version,)] = query(pipeline.conninfo, "SELECT current_setting('server_version_num')::int")
    if version < 170000:
        pytest.skip("intervals are infinite from Postgres 17 on; this server is older")
    run_sql(pipeline.conninfo, EDGES_DDL)
    run_sql(
        pipeline.conninfo,
        "INSERT INTO edges (id, created_at, iv_arr) VALUES (7, '2026-10-02 01:00+00',"
        " ARRAY['1 day', '-infinity']::interval[])",
    )
    table = spec(table="edges", columns=("id", "created_at", "iv", "iv_arr"))
    result = pipeline.materialize(table, partition=DAY, raise_on_error=False)
    assert not result.success
    error = failure_text(result)
    assert "public.edges.iv_arr (interval[]): the row with primary key (id=7) holds an element" in (
        error
    )
    assert "that is infinity or -infinity" in error
    assert pipeline.objects() == {}


NARROW_NUMERIC_DDL = """
CREATE DOMAIN {schema}.cents AS numeric(18, 2);
CREATE TABLE {table} (
    {key}    bigint PRIMARY KEY,
    {when}   timestamptz NOT NULL,
    n18_4    numeric(18, 4),
    n18_0    numeric(18, 0),
    n1_0     numeric(1, 0),
    n4_4     numeric(4, 4),
    n12_2    numeric(12, 2),
    cents    {schema}.cents,
    a12_2    numeric(12, 2)[]
);
INSERT INTO {table} VALUES
(1, '2026-10-02 01:00+00', 99999999999999.9999, 999999999999999999, 9, 0.9999,
 9999999999.99, 9999999999999999.99, '{{1.10,NULL,-2.05}}'),
(2, '2026-10-02 02:00+00', -99999999999999.9999, -999999999999999999, -9, -0.9999,
 -9999999999.99, -9999999999999999.99, '{{}}'),
(3, '2026-10-02 03:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
(4, '2026-10-02 04:00+00', -0.0001, 0, 0, 0.0001, -0.01, 0.01, '{{0}}'),
(5, '2026-10-02 05:00+00', 12345.6789, -1, 1, -0.5, 123.45, 1, '{{NULL}}');
"""
NARROW_NUMERICS = ("n18_4", "n18_0", "n1_0", "n4_4", "n12_2", "cents", "a12_2")


def test_numerics_of_up_to_18_digits_read_as_scaled_integers_stay_exact(
    pipeline: Pipeline,
) -> None:
    create(pipeline, NARROW_NUMERIC_DDL)
    table = torture_spec(columns=(KEY, WHEN, *NARROW_NUMERICS))
    assert pipeline.materialize(table, partition=DAY).success
    lake = pq.read_table(io.BytesIO(pipeline.partition_bytes(table, DAY))).sort_by(KEY)
    assert {name: str(lake.schema.field(name).type) for name in NARROW_NUMERICS} == {
        "n18_4": "decimal128(18, 4)",
        "n18_0": "decimal128(18, 0)",
        "n1_0": "decimal128(1, 0)",
        "n4_4": "decimal128(4, 4)",
        "n12_2": "decimal128(12, 2)",
        "cents": "decimal128(18, 2)",
        "a12_2": "list<element: decimal128(12, 2)>",
    }
    # Postgres' own text of each value, against the lake's decimals written back as text.
    texts = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(name)) for name in NARROW_NUMERICS
    )
    query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        texts, sql.Identifier(SCHEMA, TABLE), sql.Identifier(KEY)
    )
    with psycopg.connect(pipeline.conninfo) as connection:
        source = connection.execute(query).fetchall()
    for name_index, name in enumerate(NARROW_NUMERICS[:-1]):
        written = [None if v is None else str(v) for v in lake.column(name).to_pylist()]
        assert written == [row[name_index] for row in source], name
    arrays = lake.column("a12_2").to_pylist()
    assert arrays[0] == [Decimal("1.10"), None, Decimal("-2.05")]
    assert arrays[1:] == [[], None, [Decimal("0.00")], [None]]
