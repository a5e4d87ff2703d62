"""Lake schemas as Iceberg tables: the mapping, its refusals, schema evolution; and every type of
the torture tables through a real Iceberg table (a SQL catalog in Postgres, data files on S3),
read back value for value by pyiceberg and by DuckDB's iceberg extension."""

from __future__ import annotations

import datetime as dt
import io
import math
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema, assign_fresh_schema_ids
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

from etl_assets.devstack.postgres import ServerAddress, create_database
from etl_assets.devstack.s3 import S3Endpoint
from etl_assets.lib.arrow_types import INTERVAL_TYPE
from etl_assets.lib.errors import PartitionWriteError, SchemaDriftError, UnsupportedColumnError
from etl_assets.lib.lake.iceberg_types import (
    PARQUET_FIELD_ID_KEY,
    PARTITION_DOC,
    AddedColumn,
    IcebergLayout,
    iceberg_layout,
    schema_changes,
    to_file_batch,
)
from etl_assets.lib.lake.parquet import ParquetSettings, write_batches
from etl_assets.lib.postgres.read import TableExtract
from etl_assets.lib.postgres.session import ConnectionSettings
from etl_assets.lib.postgres.types import POSTGRES_AS_KEY, POSTGRES_TYPE_KEY
from etl_assets.lib.table.spec import ColumnSpec, Representation, TableSpec
from etl_assets.lib.table.windows import PartitionWindow
from etl_assets_tests.integration.test_types import (
    ARRAY_COLUMNS,
    ARRAYS_DDL,
    COLUMNS,
    EDGE_COLUMNS,
    EDGES_DDL,
    KEY,
    TORTURE_DDL,
    WHEN,
    create_in,
    insert_edges,
    insert_torture_rows,
    torture_spec,
)
from etl_assets_tests.support import duckdb_on_s3, run_sql, spec

# --- The mapping ------------------------------------------------------------------------------


def lake_field(
    name: str, arrow_type: pa.DataType, postgres: str, *, nullable: bool = True
) -> pa.Field[Any]:
    return pa.field(
        name, arrow_type, nullable=nullable, metadata={POSTGRES_TYPE_KEY: postgres.encode()}
    )


COMPOSITE = pa.struct([("street", pa.string()), ("number", pa.int32()), ("since", pa.date32())])
# One column of each type the type plan makes, with what it must become in Iceberg.
PLANNED: list[tuple[pa.Field[Any], IcebergType]] = [
    (lake_field("id", pa.int64(), "bigint", nullable=False), LongType()),
    (lake_field("i2", pa.int16(), "smallint"), IntegerType()),
    (lake_field("i4", pa.int32(), "integer"), IntegerType()),
    (lake_field("r", pa.float32(), "real"), FloatType()),
    (lake_field("d", pa.float64(), "double precision"), DoubleType()),
    (lake_field("n", pa.decimal128(12, 2), "numeric(12,2)"), DecimalType(12, 2)),
    (lake_field("n38", pa.decimal128(38, 10), "numeric(38,10)"), DecimalType(38, 10)),
    (lake_field("n_free", pa.string(), "numeric"), StringType()),
    (lake_field("b", pa.bool_(), "boolean"), BooleanType()),
    (lake_field("t", pa.string(), "character varying(10)"), StringType()),
    (lake_field("by", pa.binary(), "bytea"), BinaryType()),
    (lake_field("dt", pa.date32(), "date"), DateType()),
    (lake_field("tm", pa.time64("us"), "time without time zone"), TimeType()),
    (lake_field("ts", pa.timestamp("us"), "timestamp without time zone"), TimestampType()),
    (
        lake_field("tz", pa.timestamp("us", tz="UTC"), "timestamp with time zone", nullable=False),
        TimestamptzType(),
    ),
    (lake_field("u", pa.uuid(), "uuid"), UUIDType()),
    (lake_field("js", pa.json_(pa.string()), "jsonb"), StringType()),
    (
        lake_field("iv", INTERVAL_TYPE, "interval"),
        StructType(
            NestedField(-1, "months", IntegerType()),
            NestedField(-1, "days", IntegerType()),
            NestedField(-1, "microseconds", LongType()),
        ),
    ),
    (
        lake_field("arr", pa.list_(pa.int32()), "integer[]"),
        ListType(-1, IntegerType(), element_required=False),
    ),
    (
        lake_field("jarr", pa.list_(pa.json_(pa.string())), "json[]"),
        ListType(-1, StringType(), element_required=False),
    ),
    (
        lake_field("comp", COMPOSITE, "shop.address"),
        StructType(
            NestedField(-1, "street", StringType()),
            NestedField(-1, "number", IntegerType()),
            NestedField(-1, "since", DateType()),
        ),
    ),
]
LAKE = pa.schema([f for f, _ in PLANNED])


def without_ids(iceberg_type: IcebergType) -> str:
    """The type as a string with every field id and doc left out."""
    if isinstance(iceberg_type, ListType):
        required = "required" if iceberg_type.element_required else "optional"
        return f"list<{required} {without_ids(iceberg_type.element_type)}>"
    if isinstance(iceberg_type, StructType):
        fields = ", ".join(
            f"{f.name}: {'required' if f.required else 'optional'} {without_ids(f.field_type)}"
            for f in iceberg_type.fields
        )
        return f"struct<{fields}>"
    return str(iceberg_type)


def test_each_lake_type_maps_to_the_iceberg_type_that_holds_it_exactly() -> None:
    layout = iceberg_layout(LAKE, "day", table="shop.orders")
    fields = layout.schema.fields
    assert [f.name for f in fields] == [*LAKE.names, "day"]
    for (lake, wanted), got in zip(PLANNED, fields, strict=False):
        assert without_ids(got.field_type) == without_ids(wanted), lake.name
        assert got.required == (not lake.nullable), lake.name
        assert got.doc == (lake.metadata or {})[POSTGRES_TYPE_KEY].decode(), lake.name
    # Lists keep NULL elements and composites NULL fields: both are optional.
    arr = layout.schema.find_field("arr").field_type
    assert isinstance(arr, ListType)
    assert not arr.element_required


def test_the_partition_column_comes_last_a_required_string_with_an_identity_spec() -> None:
    layout = iceberg_layout(LAKE, "week", table="shop.orders")
    last = layout.schema.fields[-1]
    assert (last.name, last.field_type, last.required) == ("week", StringType(), True)
    assert last.doc == PARTITION_DOC
    assert layout.partition_column == "week"
    [partition] = layout.partition_spec.fields
    assert partition.source_id == last.field_id
    assert partition.name == "week"
    assert partition.transform == IdentityTransform()


def test_field_ids_are_those_a_new_table_gets_and_the_data_file_carries_them_at_every_depth() -> (
    None
):
    layout = iceberg_layout(LAKE, "day", table="shop.orders")
    # What create_table does to a schema: the layout's ids survive it unchanged.
    assert assign_fresh_schema_ids(layout.schema) == layout.schema
    ids_in_file: dict[str, int] = {}

    def collect(path: str, field: pa.Field[Any]) -> None:
        ids_in_file[path] = int((field.metadata or {})[PARQUET_FIELD_ID_KEY])
        if isinstance(field.type, pa.ListType):
            collect(f"{path}.element", field.type.value_field)
        elif isinstance(field.type, pa.StructType):
            for i in range(field.type.num_fields):
                child = field.type.field(i)
                collect(f"{path}.{child.name}", child)

    for file_field in layout.file_schema:
        collect(file_field.name, file_field)
    assert ids_in_file == {name: layout.schema.find_field(name).field_id for name in ids_in_file}
    # Every field of the schema, each id once.
    assert sorted(ids_in_file.values()) == list(range(1, layout.schema.highest_field_id + 1))


def test_the_data_file_schema_keeps_the_postgres_types_and_stores_what_pyiceberg_reads() -> None:
    layout = iceberg_layout(LAKE, "day", table="shop.orders")
    file_schema = layout.file_schema
    assert file_schema.names == [*LAKE.names, "day"]
    for lake in LAKE:
        metadata = file_schema.field(lake.name).metadata or {}
        assert metadata[POSTGRES_TYPE_KEY] == (lake.metadata or {})[POSTGRES_TYPE_KEY]
    types = {f.name: str(f.type) for f in file_schema}
    assert types["i2"] == "int32"  # widened: Iceberg's int is 32 bits
    assert types["js"] == "string"  # the JSON text, without Arrow's extension type
    assert types["u"] == "extension<arrow.uuid>"  # a Parquet UUID, as Iceberg's spec stores it
    assert types["tz"] == "timestamp[us, tz=UTC]"
    assert types["jarr"] == "list<element: string>"
    assert file_schema.field("day").nullable is False
    assert file_schema.field("id").nullable is False


def test_a_column_read_as_text_says_so_in_its_doc() -> None:
    column = pa.field(
        "u", pa.string(), metadata={POSTGRES_TYPE_KEY: b"uuid", POSTGRES_AS_KEY: b"text"}
    )
    layout = iceberg_layout(pa.schema([column]), "day", table="shop.orders")
    assert layout.schema.find_field("u").field_type == StringType()
    assert layout.schema.find_field("u").doc == "uuid, read as text"


@pytest.mark.parametrize(
    ("arrow_type", "postgres", "found"),
    [
        (pa.decimal256(50, 5), "numeric(50,5)", "a decimal of precision 50"),
        (pa.list_(pa.decimal256(39, 0)), "numeric(39,0)[]", "precision 39; Iceberg's decimals"),
        (
            pa.struct([("amount", pa.decimal256(76, 2))]),
            "shop.money_pair",
            "in its field amount",
        ),
    ],
)
def test_a_decimal_wider_than_38_digits_is_refused_naming_the_column_and_the_way_out(
    arrow_type: pa.DataType, postgres: str, found: str
) -> None:
    schema = pa.schema(
        [lake_field("id", pa.int64(), "bigint"), lake_field("x", arrow_type, postgres)]
    )
    with pytest.raises(UnsupportedColumnError) as refused:
        iceberg_layout(schema, "day", table="shop.orders")
    message = str(refused.value)
    assert f"shop.orders.x has Postgres type {postgres}" in message
    assert found in message
    assert "Declare the column with `as: text`" in message


@pytest.mark.parametrize(
    "arrow_type",
    [
        pa.timestamp("ns"),
        pa.time64("ns"),
        pa.duration("us"),
        pa.month_day_nano_interval(),
        pa.null(),
        pa.uint64(),
        pa.date64(),
        pa.map_(pa.string(), pa.int32()),
        pa.bool8(),
    ],
    ids=str,
)
def test_a_transform_output_iceberg_cannot_hold_exactly_is_refused(arrow_type: pa.DataType) -> None:
    # A column a transform made has no Postgres type: the way out is a cast in the transform.
    schema = pa.schema([pa.field("made", arrow_type)])
    with pytest.raises(UnsupportedColumnError, match=r"^shop\.orders\.made: an Iceberg table"):
        iceberg_layout(schema, "day", table="shop.orders")


def test_transform_outputs_map_to_the_iceberg_types_that_hold_them() -> None:
    schema = pa.schema(
        [
            ("text", pa.large_string()),
            ("view", pa.string_view()),
            ("bytes", pa.large_binary()),
            ("small", pa.uint16()),
            ("wide", pa.uint32()),
            ("half", pa.float16()),
            ("label", pa.dictionary(pa.int32(), pa.string())),
            ("local", pa.timestamp("ms", tz="Europe/Paris")),
            ("seconds", pa.time32("s")),
            ("tags", pa.large_list(pa.large_string())),
            ("pair", pa.list_(pa.int64(), 2)),
            ("digest", pa.binary(32)),
        ]
    )
    layout = iceberg_layout(schema, "day", table="curated.daily")
    assert [str(f.field_type) for f in layout.schema.fields] == [
        "string", "string", "binary", "int", "long", "float", "string", "timestamptz", "time",
        "list<string>", "list<long>", "fixed[32]", "string",
    ]  # fmt: skip


def test_a_column_named_like_the_partition_column_is_refused() -> None:
    schema = pa.schema([lake_field("day", pa.date32(), "date")])
    with pytest.raises(PartitionWriteError, match=r"shop\.orders: the table has a column `day`"):
        iceberg_layout(schema, "day", table="shop.orders")


def test_table_properties_keep_counts_only_for_dates_and_timestamps_and_bounds_of_the_key() -> None:
    layout = iceberg_layout(LAKE, "day", table="shop.orders")
    assert layout.table_properties == {
        "write.metadata.metrics.column.dt": "counts",
        "write.metadata.metrics.column.ts": "counts",
        "write.metadata.metrics.column.tz": "counts",
        "write.metadata.metrics.column.day": "full",
    }


# --- Batches into data files ------------------------------------------------------------------


def lake_batch() -> pa.RecordBatch:
    """Three rows in the lake schema, as the reader yields them (extension arrays included)."""
    ref = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    columns: dict[str, pa.Array[Any]] = {
        "id": pa.array([1, 2, 3], pa.int64()),
        "i2": pa.array([-32768, None, 32767], pa.int16()),
        "i4": pa.array([1, 2, None], pa.int32()),
        "r": pa.array([1.5, float("nan"), None], pa.float32()),
        "d": pa.array([float("-inf"), -0.0, None], pa.float64()),
        "n": pa.array([None, None, None], pa.decimal128(12, 2)),
        "n38": pa.array([None, None, None], pa.decimal128(38, 10)),
        "n_free": pa.array(["NaN", None, "1.5"]),
        "b": pa.array([True, None, False]),
        "t": pa.array(["a", "", None]),
        "by": pa.array([b"\x00", None, b""]),
        "dt": pa.array([-2_440_588, None, 2_145_031_948], pa.int32()).cast(pa.date32()),
        "tm": pa.array([0, None, 86_399_999_999], pa.int64()).cast(pa.time64("us")),
        "ts": pa.array([-(2**62), None, 2**63 - 1], pa.int64()).cast(pa.timestamp("us")),
        "tz": pa.array([0, 1, 2], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "u": pa.ExtensionArray.from_storage(
            pa.uuid(), pa.array([ref.bytes, None, bytes(16)], pa.binary(16))
        ),
        "js": pa.ExtensionArray.from_storage(
            pa.json_(pa.string()), pa.array(['{"a":1, "a":2}', "null", None])
        ),
        "iv": pa.array([{"months": 1, "days": 2, "microseconds": 3}, None, None], INTERVAL_TYPE),
        "arr": pa.array([[1, None], [], None], pa.list_(pa.int32())),
        "jarr": pa.ListArray.from_arrays(
            pa.array([0, 2, 2, 2], pa.int32()),
            pa.ExtensionArray.from_storage(pa.json_(pa.string()), pa.array(['{"x":1}', None])),
            mask=pa.array([False, True, False]),
        ),
        "comp": pa.array([{"street": "Main", "number": 42, "since": None}, {}, None], COMPOSITE),
    }
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=LAKE)


def buffer_addresses(array: pa.Array[Any]) -> list[int]:
    return [b.address for b in array.buffers() if b is not None]


def test_a_batch_becomes_the_data_file_schema_without_copying_what_it_can_reuse() -> None:
    layout = iceberg_layout(LAKE, "day", table="shop.orders")
    batch = lake_batch()
    converted = to_file_batch(batch, layout, partition_key="2026-10-02")
    assert converted.schema == layout.file_schema
    assert converted.column("day").to_pylist() == ["2026-10-02"] * 3
    # The same buffers: extension arrays as their storage, lists and structs re-typed in place.
    for name in ("u", "js", "arr", "jarr", "comp", "iv", "id", "ts", "n_free"):
        assert buffer_addresses(converted.column(name)) == buffer_addresses(batch.column(name))
    # A smallint is widened, value for value.
    assert converted.column("i2").to_pylist() == batch.column("i2").to_pylist()
    assert converted.column("i2").type == pa.int32()
    for name in LAKE.names:
        assert canonical(converted.column(name)) == canonical(batch.column(name)), name


def test_the_same_rows_make_a_data_file_of_the_same_bytes() -> None:
    layout = iceberg_layout(LAKE, "day", table="shop.orders")
    files: list[bytes] = []
    for _ in range(2):
        sink = io.BytesIO()
        batch = to_file_batch(lake_batch(), layout, partition_key="2026-10-02")
        write_batches([batch], layout.file_schema, sink, ParquetSettings())
        files.append(sink.getvalue())
    assert files[0] == files[1]
    # The Postgres types are in the file too, as for the Parquet lake.
    metadata = pq.read_metadata(io.BytesIO(files[0])).metadata or {}
    assert b"postgres.columns" in metadata


def test_a_sliced_batch_keeps_exactly_its_own_rows() -> None:
    layout = iceberg_layout(LAKE, "day", table="shop.orders")
    batch = lake_batch().slice(1, 2)
    converted = to_file_batch(batch, layout, partition_key="k")
    assert converted.num_rows == 2
    for name in LAKE.names:
        assert canonical(converted.column(name)) == canonical(batch.column(name)), name


def test_transform_outputs_are_converted_exactly() -> None:
    schema = pa.schema(
        [
            ("tags", pa.large_list(pa.large_string())),
            ("label", pa.dictionary(pa.int32(), pa.string())),
            ("local", pa.timestamp("ms", tz="Europe/Paris")),
            ("pair", pa.list_(pa.int16(), 2)),
            ("seconds", pa.time32("s")),
        ]
    )
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array([["a", None], None, []], pa.large_list(pa.large_string())),
            pa.array(["x", None, "x"]).dictionary_encode(),
            pa.array([1_700_000_000_123, None, -1], pa.int64()).cast(
                pa.timestamp("ms", tz="Europe/Paris")
            ),
            pa.array([[1, 2], None, [3, None]], pa.list_(pa.int16(), 2)),
            pa.array([0, 86_399, None], pa.int32()).cast(pa.time32("s")),
        ],
        schema=schema,
    ).slice(1)
    converted = to_file_batch(
        batch, iceberg_layout(schema, "day", table="curated.daily"), partition_key="k"
    )
    assert converted.column("tags").to_pylist() == [None, []]
    assert converted.column("label").to_pylist() == [None, "x"]
    assert converted.column("local").cast(pa.int64()).to_pylist() == [None, -1000]
    assert converted.column("pair").to_pylist() == [None, [3, None]]
    assert converted.column("seconds").cast(pa.int64()).to_pylist() == [86_399_000_000, None]


# --- Schema evolution -------------------------------------------------------------------------


def planned(*fields: pa.Field[Any]) -> Schema:
    return iceberg_layout(pa.schema(fields), "day", table="shop.orders").schema


V1 = (
    lake_field("id", pa.int64(), "bigint", nullable=False),
    lake_field("qty", pa.int32(), "integer"),
    lake_field("price", pa.decimal128(10, 2), "numeric(10,2)"),
    lake_field("ratio", pa.float32(), "real", nullable=False),
    lake_field("comp", COMPOSITE, "shop.address"),
    lake_field("tags", pa.list_(pa.int32()), "integer[]"),
)


def test_the_changes_of_an_unchanged_schema_are_empty() -> None:
    assert schema_changes(planned(*V1), planned(*V1), table="shop.orders").empty


def test_declared_columns_are_added_and_types_widened_as_iceberg_allows() -> None:
    wider_comp = pa.struct([*COMPOSITE, ("floor", pa.int16())])
    v2 = (
        V1[0],
        lake_field("qty", pa.int64(), "bigint"),
        lake_field("note", pa.string(), "text", nullable=False),
        lake_field("price", pa.decimal128(14, 2), "numeric(14,2)"),
        lake_field("ratio", pa.float64(), "double precision"),
        lake_field("comp", wider_comp, "shop.address"),
        lake_field("tags", pa.list_(pa.int64()), "bigint[]"),
    )
    changes = schema_changes(planned(*V1), planned(*v2), table="shop.orders")
    assert not changes.empty
    assert changes.additions == (
        AddedColumn(("note",), StringType(), "text", after=("qty",)),
        AddedColumn(("comp", "floor"), IntegerType(), None, after=("comp", "since")),
    )
    assert changes.promotions == (
        (("qty",), LongType()),
        (("price",), DecimalType(14, 2)),
        (("ratio",), DoubleType()),
        (("tags", "element"), LongType()),
    )
    assert changes.made_optional == (("ratio",),)
    assert changes.docs == (
        (("qty",), "bigint"),
        (("price",), "numeric(14,2)"),
        (("ratio",), "double precision"),
        (("tags",), "bigint[]"),
    )
    assert "add note (string)" in changes.summary
    assert "widen qty to long" in changes.summary


def test_every_change_iceberg_cannot_make_is_refused_naming_each_column_and_both_types() -> None:
    v2 = (
        V1[0],
        lake_field("qty", pa.int16(), "smallint"),  # unchanged in Iceberg (int): fine
        lake_field("price", pa.decimal128(12, 3), "numeric(12,3)"),  # another scale
        lake_field("ratio", pa.string(), "text", nullable=False),  # another type
        lake_field("comp", pa.struct([("street", pa.string())]), "shop.address"),  # fields gone
        # "tags" no longer declared
    )
    with pytest.raises(SchemaDriftError) as refused:
        schema_changes(planned(*V1), planned(*v2), table="shop.orders")
    message = str(refused.value)
    assert message.startswith("the Iceberg table shop.orders cannot take the declared columns")
    assert "price: decimal(10, 2) (numeric(10,2)) in the table, decimal(12, 3) (numeric(12,3))" in (
        message
    )
    assert "ratio: float (real) in the table, string (text) declared" in message
    assert "comp.number: int in the table, no longer declared" in message
    assert "comp.since: date in the table, no longer declared" in message
    assert "tags: list<int> (integer[]) in the table, no longer declared" in message
    assert "qty" not in message
    narrowed = (V1[0], lake_field("qty", pa.int64(), "bigint"))
    with pytest.raises(SchemaDriftError, match=r"qty: long \(bigint\) in the table, int"):
        schema_changes(planned(*narrowed), planned(V1[0], V1[1]), table="shop.orders")


def test_a_not_null_column_the_table_has_as_optional_needs_no_change() -> None:
    optional = (V1[0], lake_field("qty", pa.int32(), "integer"))
    required = (V1[0], lake_field("qty", pa.int32(), "integer", nullable=False))
    assert schema_changes(planned(*optional), planned(*required), table="shop.orders").empty


@pytest.fixture
def local_catalog(tmp_path: Path) -> Generator[SqlCatalog]:
    """pyiceberg's SQL catalog in a SQLite file, its tables under `tmp_path` (no service)."""
    catalog = SqlCatalog(
        "local", uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=f"file://{tmp_path}"
    )
    catalog.create_namespace("shop")
    yield catalog
    catalog.engine.dispose()


def create_table(catalog: SqlCatalog, name: str, layout: IcebergLayout) -> Table:
    return catalog.create_table(
        name,
        schema=layout.schema,
        partition_spec=layout.partition_spec,
        properties=layout.table_properties,
    )


def test_applied_changes_give_the_table_the_planned_columns_in_the_planned_order(
    local_catalog: SqlCatalog,
) -> None:
    v1 = iceberg_layout(pa.schema(V1), "day", table="shop.orders")
    table = create_table(local_catalog, "shop.orders", v1)
    assert table.schema() == v1.schema
    v2 = iceberg_layout(
        pa.schema(
            [
                lake_field("note", pa.string(), "text"),
                V1[0],
                lake_field("qty", pa.int64(), "bigint"),
                lake_field("added", pa.list_(COMPOSITE), "shop.address[]", nullable=False),
                *V1[2:4],
                lake_field("comp", pa.struct([*COMPOSITE, ("floor", pa.int16())]), "shop.address"),
                lake_field("tags", pa.list_(pa.int64()), "bigint[]"),
            ]
        ),
        "day",
        table="shop.orders",
    )
    changes = schema_changes(table.schema(), v2.schema, table="shop.orders")
    with table.update_schema() as update:
        changes.apply(update)
    current = table.schema()
    assert [f.name for f in current.fields] == [f.name for f in v2.schema.fields]
    assert schema_changes(current, v2.schema, table="shop.orders").empty
    assert without_ids(current.as_struct()) == without_ids(
        StructType(*[f if f.name != "added" else _optional(f) for f in v2.schema.fields])
    )
    # The old columns keep their ids; the new ones get the table's next ones.
    for name in ("id", "qty", "comp", "day"):
        assert current.find_field(name).field_id == v1.schema.find_field(name).field_id
    assert current.find_field("comp.floor").field_id > v1.schema.highest_field_id
    # Files then carry the table's ids, not the ones a new table would get.
    bound = v2.for_table(current, table="shop.orders")
    assert bound.schema.find_field("added").field_id == current.find_field("added").field_id
    assert bound.schema.find_field("added").required  # the file holds no NULL
    file_ids = {f.name: int((f.metadata or {})[PARQUET_FIELD_ID_KEY]) for f in bound.file_schema}
    assert file_ids == {f.name: f.field_id for f in current.fields}
    assert file_ids != {f.name: f.field_id for f in v2.schema.fields}


def _optional(field: NestedField) -> NestedField:
    return NestedField(field.field_id, field.name, field.field_type, required=False, doc=field.doc)


def test_a_layout_cannot_be_bound_to_a_table_that_lacks_its_changes(
    local_catalog: SqlCatalog,
) -> None:
    v1 = iceberg_layout(pa.schema(V1), "day", table="shop.orders")
    table = create_table(local_catalog, "shop.orders", v1)
    v2 = iceberg_layout(
        pa.schema([*V1, lake_field("note", pa.string(), "text")]), "day", table="shop.orders"
    )
    with pytest.raises(
        SchemaDriftError, match=r"shop\.orders lacks changes its files need: add note"
    ):
        v2.for_table(table.schema(), table="shop.orders")


# --- Reading it back ---------------------------------------------------------------------------


def canonical(column: pa.Array[Any] | pa.ChunkedArray[Any]) -> list[Any]:
    """Each value as the plain data it is, whatever Arrow type a reader chose to carry it in.

    Dates, times and timestamps become the integers Parquet stores (Python's datetime holds
    none of the extreme ones), floats keep NaN and the sign of zero, UUIDs become their text
    (DuckDB returns them so), JSON its text.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = array.type
    if isinstance(array, pa.ExtensionArray):
        if isinstance(kind, pa.UuidType):
            return [
                None if v is None else str(uuid.UUID(bytes=v)) for v in array.storage.to_pylist()
            ]
        return canonical(array.storage)
    if isinstance(array, pa.ListArray | pa.LargeListArray | pa.StructArray):
        return nested(array)
    if pa.types.is_date32(kind) or pa.types.is_timestamp(kind) or pa.types.is_time64(kind):
        return array.view(pa.int32() if pa.types.is_date32(kind) else pa.int64()).to_pylist()
    if pa.types.is_floating(kind):
        return [
            None if v is None else "NaN" if math.isnan(v) else (v, math.copysign(1.0, v))
            for v in array.to_pylist()
        ]
    return array.to_pylist()


def nested(array: pa.ListArray | pa.LargeListArray | pa.StructArray) -> list[Any]:
    if isinstance(array, pa.StructArray):
        kind = array.type
        names = [kind.field(i).name for i in range(kind.num_fields)]
        fields = [canonical(array.field(i)) for i in range(len(names))]
        valid = array.is_valid().to_pylist()
        return [
            dict(zip(names, values, strict=True)) if ok else None
            for ok, *values in zip(valid, *fields, strict=True)
        ]
    lengths = pc.list_value_length(array).to_pylist()
    values = iter(canonical(array.flatten()))
    return [None if n is None else [next(values) for _ in range(n)] for n in lengths]


@pytest.fixture
def iceberg_catalog(
    pg_server: ServerAddress, s3_endpoint: S3Endpoint, bucket: str
) -> Generator[SqlCatalog]:
    """pyiceberg's SQL catalog in a fresh Postgres database, its warehouse in `bucket`."""
    name = f"iceberg_{uuid.uuid4().hex[:12]}"
    create_database(pg_server, name)
    catalog = SqlCatalog(
        "lake",
        uri=pg_server.url(name, driver="postgresql+psycopg2"),
        warehouse=f"s3://{bucket}/warehouse",
        **{
            "s3.endpoint": s3_endpoint.url,
            "s3.access-key-id": s3_endpoint.access_key,
            "s3.secret-access-key": s3_endpoint.secret_key,
            "s3.region": s3_endpoint.region,
        },
    )
    catalog.create_namespace("raw")
    yield catalog
    catalog.engine.dispose()


DAY = PartitionWindow(
    "2026-10-02",
    dt.datetime(2026, 10, 2, tzinfo=dt.UTC),
    dt.datetime(2026, 10, 3, tzinfo=dt.UTC),
)
NEXT_DAY = PartitionWindow("2026-10-03", DAY.end, dt.datetime(2026, 10, 4, tzinfo=dt.UTC))


def lake_rows(
    conninfo: str, table: TableSpec, window: PartitionWindow
) -> tuple[pa.Schema, pa.Table]:
    """The window's rows as the reader yields them for the lake: its schema and its rows."""
    extract = TableExtract(table, (window,), ConnectionSettings(conninfo=conninfo), "iceberg/test")
    with extract.open() as opened:
        [read] = list(opened.partitions)
        schema = opened.plan.arrow_schema
        return schema, pa.Table.from_batches(list(read.lake_batches()), schema=schema)


def publish(
    iceberg: SqlCatalog,
    endpoint: S3Endpoint,
    bucket: str,
    name: str,
    *,
    layout: IcebergLayout,
    rows: pa.Table,
    window: PartitionWindow,
) -> str:
    """One data file of `rows`, written to S3 and committed to the table `name`; its path."""
    batches = (to_file_batch(b, layout, partition_key=window.key) for b in rows.to_batches())
    sink = io.BytesIO()
    write_batches(batches, layout.file_schema, sink, ParquetSettings())
    key = f"data/{name}/{window.key}/{uuid.uuid4().hex}.parquet"
    endpoint.client().put_object(Bucket=bucket, Key=key, Body=sink.getvalue())
    path = f"s3://{bucket}/{key}"
    table = iceberg.load_table(name)
    with table.transaction() as transaction:
        transaction.add_files([path])
    return path


def read_back(
    iceberg: SqlCatalog, endpoint: S3Endpoint, name: str, key: str
) -> Iterator[tuple[str, pa.Table]]:
    """The table as pyiceberg reads it, then as DuckDB's iceberg extension reads it."""
    table = iceberg.load_table(name)
    yield "pyiceberg", table.scan().to_arrow().sort_by(key)
    duck = duckdb_on_s3(endpoint, "avro", "iceberg")
    yield (
        "duckdb",
        duck.execute("SELECT * FROM iceberg_scan(?)", [table.metadata_location])
        .to_arrow_table()
        .sort_by(key),
    )


@dataclass(frozen=True)
class Case:
    """One torture table: how to create it, and its declaration."""

    create: Callable[[str], None]
    table: TableSpec
    key: str


def torture(conninfo: str) -> None:
    create_in(conninfo, TORTURE_DDL)
    insert_torture_rows(conninfo)


def edges(conninfo: str) -> None:
    run_sql(conninfo, EDGES_DDL)
    insert_edges(conninfo)


def as_text(columns: tuple[str, ...], *names: str) -> tuple[str | ColumnSpec, ...]:
    return tuple(
        ColumnSpec(c, representation=Representation.TEXT) if c in names else c for c in columns
    )


CASES = {
    "torture": Case(torture, torture_spec(as_text(COLUMNS, "n_big")), KEY),
    "arrays": Case(
        lambda conninfo: run_sql(conninfo, ARRAYS_DDL),
        spec(table="arrays", columns=as_text(ARRAY_COLUMNS, "a_numbig")),
        "id",
    ),
    "edges": Case(edges, spec(table="edges", columns=EDGE_COLUMNS), "id"),
}


def published(
    case: Case, source_db: str, iceberg: SqlCatalog, endpoint: S3Endpoint, bucket: str
) -> tuple[pa.Table, Table]:
    """The case's rows of DAY as the reader yields them, and the Iceberg table holding them."""
    case.create(source_db)
    lake_schema, rows = lake_rows(source_db, case.table, DAY)
    assert rows.num_rows >= 3
    layout = iceberg_layout(lake_schema, "day", table=case.table.qualified_name)
    table = create_table(iceberg, "raw.t", layout)
    layout = layout.for_table(table.schema(), table="raw.t")
    publish(iceberg, endpoint, bucket, "raw.t", layout=layout, rows=rows, window=DAY)
    return rows, iceberg.load_table("raw.t")


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_every_type_reads_back_from_an_iceberg_table_value_for_value(
    case: Case, source_db: str, iceberg_catalog: SqlCatalog, s3_endpoint: S3Endpoint, bucket: str
) -> None:
    rows, _ = published(case, source_db, iceberg_catalog, s3_endpoint, bucket)
    expected = rows.sort_by(case.key)
    for reader, got in read_back(iceberg_catalog, s3_endpoint, "raw.t", case.key):
        assert got.column_names == [*rows.column_names, "day"], reader
        for name in rows.column_names:
            want, have = canonical(expected.column(name)), canonical(got.column(name))
            if reader == "pyiceberg" and name in LISTS_OF_STRUCTS:
                # pyiceberg rebuilds a list of structs without its validity: a NULL list reads
                # as [] (apache/iceberg-python#3833). The file holds the NULL; DuckDB reads it.
                assert None in want, name
                want = [[] if value is None else value for value in want]
            assert have == want, (reader, name, want, have)
        assert set(got.column("day").to_pylist()) == {DAY.key}, reader


# The Iceberg type table of docs/types.md: for a row (found by its first cell), the torture
# table's columns of that type.
ICEBERG_TYPE_ROWS = {
    "`smallint`, `integer`, `bigint`": ("select", "naïve", "semi;--colon"),
    "`real`, `double precision`": ("r", "d"),
    "`numeric(p,s)`, p ≤ 38": ("n_exact", "dom"),
    "`numeric` (unconstrained)": ("n_free",),
    "`boolean`": ("b",),
    "`text`, `varchar(n)`, `char(n)`, enums": ("t", "vc", "bp", "en"),
    "`bytea`": ("by",),
    "`date`": ("dt",),
    "`time`": ("tm",),
    "`timetz`": ("ttz",),
    "`timestamp`": ("ts",),
    "`timestamptz`": ("tstz", WHEN),
    "`interval`": ("iv",),
    "`uuid`": ("u",),
    "`json`, `jsonb`": ("js", "jsb"),
    "1-D arrays": ("arr", "tarr", "earr"),
    "composite types": ("comp",),
}


def iceberg_type_row(first_cell: str) -> list[str]:
    """The cells of the Iceberg type table's row that starts with `first_cell`."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "types.md").read_text()
    section = doc[doc.index("## Iceberg") :]
    table = section[section.index("| Postgres type |") :]
    [row] = [
        line
        for line in table[: table.index("\n\n")].splitlines()
        if line.startswith(f"| {first_cell}")
    ]
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def test_the_iceberg_type_table_says_what_each_column_becomes_and_duckdb_reads_it_as(
    source_db: str, iceberg_catalog: SqlCatalog, s3_endpoint: S3Endpoint, bucket: str
) -> None:
    _, table = published(CASES["torture"], source_db, iceberg_catalog, s3_endpoint, bucket)
    duck = duckdb_on_s3(s3_endpoint, "avro", "iceberg")
    described = duck.execute("DESCRIBE SELECT * FROM iceberg_scan(?)", [table.metadata_location])
    duck_types = {name: kind for name, kind, *_ in described.fetchall()}
    covered = [c for columns in ICEBERG_TYPE_ROWS.values() for c in columns]
    assert sorted(covered) == sorted(c for c in COLUMNS if c not in (KEY, "n_big"))
    # n_big, numeric(50,5), is read `as: text` here: the table says it is refused otherwise.
    _, refused, *_ = iceberg_type_row("`numeric(p,s)`, 38 < p ≤ 76")
    assert refused.startswith("refused")
    assert "`as: text`" in refused
    for first_cell, columns in ICEBERG_TYPE_ROWS.items():
        _, iceberg_cell, duckdb_cell, *_ = iceberg_type_row(first_cell)
        for column in columns:
            iceberg_type = str(table.schema().find_field(column).field_type)
            assert f"`{iceberg_type.partition('<')[0].partition('(')[0]}" in iceberg_cell, column
            duck_type = duck_types[column]
            word = "T[]" if duck_type.endswith("[]") else duck_type.partition("(")[0]
            assert duckdb_cell.startswith("yes"), first_cell
            assert f"`{word}" in duckdb_cell, (column, duck_type)


LISTS_OF_STRUCTS = ("a_interval",)
"""The torture columns whose type is a list of structs (`interval[]`)."""


def test_a_numeric_wider_than_38_digits_is_refused_until_declared_as_text(source_db: str) -> None:
    torture(source_db)
    lake_schema, _ = lake_rows(source_db, torture_spec(), DAY)
    with pytest.raises(UnsupportedColumnError) as refused:
        iceberg_layout(lake_schema, "day", table="raw.t")
    assert "raw.t.n_big has Postgres type numeric(50,5)" in str(refused.value)
    assert "`as: text`" in str(refused.value)


EVOLVING = """
CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, qty integer,
                     label text);
INSERT INTO events
SELECT g, timestamptz '2026-10-02 00:00+00' + g * interval '5 hours', g * 10, 'e' || g
FROM generate_series(0, 9) g;
"""


def test_a_column_added_and_a_type_widened_later_read_as_null_and_wider_from_the_old_file(
    source_db: str, iceberg_catalog: SqlCatalog, s3_endpoint: S3Endpoint, bucket: str
) -> None:
    run_sql(source_db, EVOLVING)
    v1 = spec(columns=("id", "created_at", "qty", "label"))
    schema1, rows1 = lake_rows(source_db, v1, DAY)
    layout1 = iceberg_layout(schema1, "day", table="public.events")
    table = create_table(iceberg_catalog, "raw.events", layout1)
    bound1 = layout1.for_table(table.schema(), table="raw.events")
    old_file = publish(
        iceberg_catalog, s3_endpoint, bucket, "raw.events", layout=bound1, rows=rows1, window=DAY
    )
    old_key = old_file.removeprefix(f"s3://{bucket}/")
    old_etag = s3_endpoint.client().head_object(Bucket=bucket, Key=old_key)["ETag"]
    # The source widens a column and gains one; the declaration follows.
    run_sql(
        source_db,
        "ALTER TABLE events ALTER qty TYPE bigint, ADD COLUMN note text NOT NULL DEFAULT 'new';"
        " UPDATE events SET qty = qty + 3000000000 WHERE created_at >= '2026-10-03+00'",
    )
    v2 = spec(columns=("id", "created_at", "qty", "note", "label"))
    schema2, rows2 = lake_rows(source_db, v2, NEXT_DAY)
    layout2 = iceberg_layout(schema2, "day", table="public.events")
    changes = schema_changes(table.schema(), layout2.schema, table="raw.events")
    assert changes.promotions == ((("qty",), LongType()),)
    assert [a.path for a in changes.additions] == [("note",)]
    with table.transaction() as transaction:
        with transaction.update_schema() as update:
            changes.apply(update)
        transaction.set_properties(layout2.table_properties)
    table = iceberg_catalog.load_table("raw.events")
    assert table.schema().column_names == ["id", "created_at", "qty", "note", "label", "day"]
    bound2 = layout2.for_table(table.schema(), table="raw.events")
    publish(
        iceberg_catalog,
        s3_endpoint,
        bucket,
        "raw.events",
        layout=bound2,
        rows=rows2,
        window=NEXT_DAY,
    )
    first_day = {r["id"]: r["qty"] for r in rows1.to_pylist()}
    second_day = {r["id"]: r["qty"] for r in rows2.to_pylist()}
    assert max(second_day.values()) > 2**31
    for reader, got in read_back(iceberg_catalog, s3_endpoint, "raw.events", "id"):
        assert got.schema.field("qty").type == pa.int64(), reader
        rows = got.to_pylist()
        old = [r for r in rows if r["day"] == DAY.key]
        new = [r for r in rows if r["day"] == NEXT_DAY.key]
        assert {r["id"]: r["qty"] for r in old} == first_day, reader
        assert {r["id"]: r["qty"] for r in new} == second_day, reader
        assert {r["note"] for r in old} == {None}, reader
        assert {r["note"] for r in new} == {"new"}, reader
    # The old file was not rewritten: the same object, still one of the table's two files.
    assert s3_endpoint.client().head_object(Bucket=bucket, Key=old_key)["ETag"] == old_etag
    scan = iceberg_catalog.load_table("raw.events").scan()
    files = {task.file.file_path for task in scan.plan_files()}
    assert len(files) == 2
    assert old_file in files
