"""Reading the lake back as an outside reader would, and comparing it with the source.

Independent of the code under test on purpose: the source is read with psycopg (not ADBC) and
the lake with `pyarrow.dataset` and hive partitioning, or, for an Iceberg table, with
pyiceberg's own scan of the table as its catalog has it (not the IO manager).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from psycopg import sql
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo, Reference
from pyiceberg.expressions.literals import literal

from etl_assets.components.table_assets import table_partitions
from etl_assets.devstack.s3 import S3Endpoint
from etl_assets.lib.lake.iceberg_names import table_identifier
from etl_assets.lib.table.spec import LakeFormat, TableSpec


def lake_filesystem(endpoint: S3Endpoint) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem on the endpoint."""
    url = urlparse(endpoint.url)
    return pafs.S3FileSystem(
        access_key=endpoint.access_key,
        secret_key=endpoint.secret_key,
        region=endpoint.region,
        endpoint_override=url.netloc,
        scheme="https" if url.scheme == "https" else "http",
    )


def read_lake_partition(
    endpoint: S3Endpoint, dataset_path: str, partition_name: str, key: str
) -> pa.Table:
    """One partition of a hive dataset (`bucket/prefix/...`), without the hive column."""
    dataset = ds.dataset(
        dataset_path,
        format="parquet",
        filesystem=lake_filesystem(endpoint),
        partitioning=ds.partitioning(pa.schema([(partition_name, pa.string())]), flavor="hive"),
    )
    table = dataset.to_table(filter=ds.field(partition_name) == key)
    return table.drop_columns([partition_name])


def read_iceberg_partition(
    catalog: Catalog, identifier: tuple[str, str], column: str, key: str
) -> pa.Table:
    """One partition of an Iceberg table as the catalog has it now, without the partition column.

    Iceberg keeps JSON as text; a column whose field doc (its Postgres type) is json or jsonb
    is read back as Arrow JSON, as the plain layout's files have it.
    """
    table = catalog.load_table(identifier)
    rows = table.scan(row_filter=EqualTo(term=Reference(column), value=literal(key))).to_arrow()
    rows = rows.drop_columns([column])
    for field in table.schema().fields:
        if field.doc in _JSON_TYPES and pa.types.is_string(rows.schema.field(field.name).type):
            index = rows.schema.get_field_index(field.name)
            rows = rows.set_column(index, field.name, rows[index].cast(pa.json_()))
    return rows


_JSON_TYPES = ("json", "jsonb")


def read_source_window(
    conninfo: str,
    *,
    schema: str,
    table: str,
    columns: Sequence[str],
    partition_column: str,
    start: dt.datetime,
    end: dt.datetime,
    order_by: Sequence[str],
) -> list[dict[str, Any]]:
    """The rows of `[start, end)` read with psycopg; a naive column compares in local time."""
    with psycopg.connect(conninfo, options="-c TimeZone=UTC") as connection:
        data_type = connection.execute(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s AND column_name = %s",
            (schema, table, partition_column),
        ).fetchone()
        if data_type is None:
            raise ValueError(f"{schema}.{table} has no column {partition_column}")
        bounds: tuple[object, object]
        if data_type[0] == "timestamp without time zone":
            bounds = (start.replace(tzinfo=None), end.replace(tzinfo=None))
        elif data_type[0] == "date":
            bounds = (start.date(), end.date())
        else:
            bounds = (start, end)
        query = sql.SQL(
            "SELECT {columns} FROM {table} WHERE {col} >= %s AND {col} < %s ORDER BY {order}"
        ).format(
            columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            table=sql.Identifier(schema, table),
            col=sql.Identifier(partition_column),
            order=sql.SQL(", ").join(sql.Identifier(c) for c in order_by),
        )
        cursor = connection.execute(query, bounds)
        names = [d.name for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def lake_rows(table: pa.Table, order_by: Sequence[str]) -> list[dict[str, Any]]:
    """The table's rows as Python values comparable with psycopg's, sorted by `order_by`."""
    json_columns = {f.name for f in table.schema if isinstance(f.type, pa.JsonType)}
    rows = table.to_pylist()
    for row in rows:
        for name in json_columns:
            if row[name] is not None:
                row[name] = json.loads(row[name])
    return sorted(rows, key=lambda r: tuple(_sort_key(r[c]) for c in order_by))


def _sort_key(value: object) -> tuple[bool, object]:
    return (value is None, value if value is not None else 0)


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing lake rows with source rows."""

    source_rows: int
    lake_rows: int
    compared_columns: tuple[str, ...]
    only_in_source: tuple[str, ...]
    only_in_lake: tuple[str, ...]
    first_difference: str | None

    @property
    def equal(self) -> bool:
        """Same number of rows and every shared value equal."""
        return self.first_difference is None

    def describe(self) -> str:
        """A short human summary."""
        if not self.equal:
            return f"MISMATCH: {self.first_difference}"
        changes = []
        if self.only_in_source:
            changes.append(f"drops {', '.join(self.only_in_source)}")
        if self.only_in_lake:
            changes.append(f"adds {', '.join(self.only_in_lake)}")
        extra = f" (the transform {' and '.join(changes)})" if changes else ""
        rows = f"{self.source_rows} row{'' if self.source_rows == 1 else 's'}"
        return f"equal: {rows} x {len(self.compared_columns)} cols{extra}"


def compare_rows(source: Sequence[dict[str, Any]], lake: Sequence[dict[str, Any]]) -> Comparison:
    """Compare row by row (both sorted the same way) on the columns both sides have."""
    source_columns = list(source[0]) if source else []
    lake_columns = list(lake[0]) if lake else []
    shared = tuple(c for c in source_columns if c in lake_columns) if source and lake else ()
    difference = None
    if len(source) != len(lake):
        difference = f"{len(source)} source rows, {len(lake)} lake rows"
    else:
        for index, (expected, actual) in enumerate(zip(source, lake, strict=True)):
            for column in shared:
                if not values_equal(expected[column], actual[column]):
                    difference = (
                        f"row {index} column {column}: source {expected[column]!r}, "
                        f"lake {actual[column]!r}"
                    )
                    break
            if difference:
                break
    return Comparison(
        source_rows=len(source),
        lake_rows=len(lake),
        compared_columns=shared,
        only_in_source=tuple(c for c in source_columns if c not in lake_columns),
        only_in_lake=tuple(c for c in lake_columns if c not in source_columns),
        first_difference=difference,
    )


def values_equal(expected: object, actual: object) -> bool:
    """Exact equality, with the representation differences of the two readers removed."""
    if isinstance(expected, memoryview):
        expected = expected.tobytes()
    if isinstance(expected, Decimal) and isinstance(actual, Decimal):
        # Same value and same scale: 1.50 and 1.5 are different numerics.
        return expected == actual and expected.as_tuple().exponent == actual.as_tuple().exponent
    if (
        isinstance(expected, dt.datetime)
        and isinstance(actual, dt.datetime)
        and (expected.tzinfo is None) != (actual.tzinfo is None)
    ):
        return False
    if isinstance(expected, float) and isinstance(actual, float) and math.isnan(expected):
        return math.isnan(actual)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(
            values_equal(e, a) for e, a in zip(expected, actual, strict=True)
        )
    return (type(expected) is type(actual) and expected == actual) or (
        expected is None and actual is None
    )


def compare_table_partition(
    conninfo: str,
    endpoint: S3Endpoint,
    lake_prefix: str,
    *,
    asset: str,
    table: TableSpec,
    key: str,
    catalog: Catalog | None = None,
) -> Comparison:
    """One published partition of the raw asset `asset` against its source window.

    Each is read independently. `lake_prefix` is `bucket/prefix`; the dataset is the asset's
    key path (`raw/<source>/<schema>/<table>`) under it, or, for a table declared
    `format: iceberg`, the asset's table in `catalog`.
    """
    window = table_partitions(table).time_window_for_partition_key(key)
    source = read_source_window(
        conninfo,
        schema=table.table_schema,
        table=table.table,
        columns=table.read_columns,
        partition_column=table.partition_column,
        start=window.start,
        end=window.end,
        order_by=table.primary_key,
    )
    if table.lake_format is LakeFormat.ICEBERG:
        if catalog is None:
            raise ValueError(f"{asset} is an Iceberg table: its catalog is needed to read it")
        identifier = table_identifier(asset.split("/"))
        lake = read_iceberg_partition(catalog, identifier, table.hive_partition_name, key)
    else:
        dataset = f"{lake_prefix}/{asset}"
        lake = read_lake_partition(endpoint, dataset, table.hive_partition_name, key)
    return compare_rows(source, lake_rows(lake, table.primary_key))
