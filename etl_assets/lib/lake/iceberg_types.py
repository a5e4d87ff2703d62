"""The lake's Arrow schema as an Iceberg table: its schema, its data files' schema, its evolution.

A table's Iceberg schema is its lake schema (the type plan's `TablePlan.arrow_schema`, or a
transform's output) plus one column, the partition key: a non-null string named like the plain
lake's partition directories (`day`, `hour`, ...). The partition spec is identity on it, because
windows are cut in the table's own timezone and Iceberg's day and hour transforms are UTC-only.

Every column maps to an Iceberg type that holds each of its values exactly, or `iceberg_layout`
refuses it, naming the column, its Postgres type and the way out:

    Arrow (lake)                          Iceberg           Arrow in the data file
    int16, int32 (uint8, uint16)          int               int32 (widened, exact)
    int64 (uint32)                        long              int64
    float32 (float16), float64            float, double     float32, float64 (NaN, ±Inf kept)
    decimal, precision <= 38              decimal(P,S)      decimal128(P,S)
    decimal, precision > 38               refused: Iceberg has no wider decimal (`as: text`)
    bool                                  boolean           bool
    string, large_string, arrow.json      string            string (JSON text kept verbatim)
    binary, large_binary                  binary            binary
    fixed_size_binary(L)                  fixed(L)          fixed_size_binary(L)
    date32                                date              date32 (every Postgres date)
    time32, time64[us]                    time              time64[us]
    timestamp[s|ms|us]                    timestamp         timestamp[us]
    timestamp[s|ms|us, tz]                timestamptz       timestamp[us, UTC] (the same instants)
    arrow.uuid                            uuid              arrow.uuid (Parquet UUID)
    list, large_list, fixed_size_list     list (elements optional)
    struct (an interval, a composite)     struct (fields optional)
    dictionary                            its values' type  decoded to the values' type

Nanosecond times and timestamps, durations, Arrow intervals, null-typed columns, maps and other
extension types are refused: Iceberg v2 has no exact type for them. Each Iceberg field's `doc`
is the column's Postgres type (as `format_type()` prints it), so a catalog shows it.

Data files carry Iceberg field ids (`PARQUET:field_id`, also on list elements and struct fields).
The Iceberg spec resolves a data file's columns by field id; files without ids are read through
the table's name mapping (`schema.name-mapping.default`), a fallback for imported files that each
engine implements on its own terms and that every writer evolving the table must keep current
(a column added to the schema but not to the mapping reads as NULL from new files). With ids, a
file stays readable whatever later renames or reorders the table's columns, and pyiceberg's
`add_files` checks each file's ids, types and nullability against the table before committing.
The price is that a file must carry the *table's* ids: create or load the table, apply
`schema_changes`, then write files with `layout.for_table(table.schema(), table=...)`. A table
created from `layout.schema` gets the same ids, assigned the same way; `for_table` takes them
from the catalog anyway (a REST catalog may assign its own).

pyiceberg's `add_files` computes each file's column bounds by converting Parquet statistics to
Python values, which fails for dates and timestamps outside Python's years 1 to 9999 (Postgres
holds 4714 BC to 5874897 AD); `IcebergLayout.table_properties` sets those columns' metrics to
counts only, and the partition key's to full, since `add_files` reads each file's partition value
from its bounds. For the same reason a file with no rows cannot be added (it has no bounds): a
window without rows is only deleted from the table.

Readers: DuckDB reads every value exactly; pyiceberg (0.12) reads a NULL list of structs (an
`interval[]`) as an empty list, although the file holds the NULL (apache/iceberg-python#3833).
docs/types.md says which engines read which Iceberg type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema, assign_fresh_schema_ids
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FixedType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    PrimitiveType,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

from etl_assets.lib.arrow_types import AnyArray, AnyField, child_types, rebuild_container
from etl_assets.lib.errors import PartitionWriteError, SchemaDriftError, UnsupportedColumnError
from etl_assets.lib.postgres.types import POSTGRES_AS_KEY, POSTGRES_TYPE_KEY

if TYPE_CHECKING:
    from pyiceberg.table.update.schema import UpdateSchema

PARQUET_FIELD_ID_KEY = b"PARQUET:field_id"
"""Arrow field metadata that pyarrow writes as the Parquet field id."""
METRICS_COLUMN_PREFIX = "write.metadata.metrics.column."
"""Iceberg table property: the metrics kept for one column of each data file."""
PARTITION_FIELD_ID = 1000
"""The partition field's id in the spec (Iceberg numbers partition fields from 1000)."""
PARTITION_DOC = "the Dagster partition key of the row's window"
_MAX_DECIMAL_PRECISION = 38
_MICROSECOND_UNITS = ("s", "ms", "us")


@dataclass(frozen=True)
class IcebergLayout:
    """One table's Iceberg schema and the Arrow schema its data files are written in."""

    schema: Schema
    """The Iceberg schema, field ids assigned, the partition column last."""
    file_schema: pa.Schema
    """The Arrow schema data files are written in: the Iceberg field ids on every field."""
    partition_column: str

    @property
    def partition_spec(self) -> PartitionSpec:
        """Identity on the partition column."""
        [source] = [f for f in self.schema.fields if f.name == self.partition_column]
        return PartitionSpec(
            PartitionField(
                source_id=source.field_id,
                field_id=PARTITION_FIELD_ID,
                transform=IdentityTransform(),
                name=self.partition_column,
            )
        )

    @property
    def table_properties(self) -> dict[str, str]:
        """The table properties `add_files` needs to register every file of this layout.

        Set them when the table is created, and again with each schema change (they only
        name columns, so setting them twice changes nothing).
        """
        properties = {
            f"{METRICS_COLUMN_PREFIX}{f.name}": "counts"
            for f in self.schema.fields
            if isinstance(f.field_type, DateType | TimestampType | TimestamptzType)
        }
        properties[f"{METRICS_COLUMN_PREFIX}{self.partition_column}"] = "full"
        return properties

    def for_table(self, current: Schema, *, table: str) -> IcebergLayout:
        """This layout with the field ids of the Iceberg table `table`, whose schema is `current`.

        `current` must already hold every planned column (apply `schema_changes` first); the
        data files then carry the table's ids, and each column its planned type and nullability.
        """
        changes = schema_changes(current, self.schema, table=table)
        if not changes.empty:
            raise SchemaDriftError(
                f"the Iceberg table {table} lacks changes its files need: "
                + "; ".join(changes.summary)
                + ". Apply `schema_changes(...)` to the table before writing its files"
            )
        in_table = {f.name: f for f in current.fields}
        schema = Schema(*[_with_ids_of(f, in_table[f.name]) for f in self.schema.fields])
        return IcebergLayout(
            schema=schema,
            file_schema=_file_schema(schema, _origins(self.file_schema)),
            partition_column=self.partition_column,
        )


def iceberg_layout(lake_schema: pa.Schema, partition_column: str, *, table: str) -> IcebergLayout:
    """The Iceberg layout of a table whose rows have `lake_schema`.

    Every column maps to an Iceberg type that holds each of its values exactly, or this raises
    `UnsupportedColumnError` naming `table.column`, its Postgres type and the way out.
    """
    if partition_column in lake_schema.names:
        raise PartitionWriteError(
            f"{table}: the table has a column `{partition_column}`, the name of its Iceberg "
            "partition column (the Dagster partition key). Rename the column, or set a different "
            "`partition_name`"
        )
    fields: list[NestedField] = []
    for lake_field in lake_schema:
        origin = _origin(lake_field)
        try:
            field_type = _iceberg_type(lake_field.type)
        except _UnmappableError as refusal:
            raise _unsupported(table, lake_field.name, origin, refusal) from None
        fields.append(
            NestedField(
                field_id=-1,
                name=lake_field.name,
                field_type=field_type,
                required=not lake_field.nullable,
                doc=_doc(lake_field),
            )
        )
    fields.append(NestedField(-1, partition_column, StringType(), required=True, doc=PARTITION_DOC))
    # The ids `create_table` would assign: top-level fields first, then nested ones in order.
    schema = assign_fresh_schema_ids(Schema(*fields))
    return IcebergLayout(
        schema=schema,
        file_schema=_file_schema(schema, _origins(lake_schema)),
        partition_column=partition_column,
    )


def to_file_batch(
    batch: pa.RecordBatch, layout: IcebergLayout, *, partition_key: str
) -> pa.RecordBatch:
    """`batch` (in the lake schema) in the data file's schema, with the partition key added.

    Columns are matched by name. Arrays whose layout already matches are reused without copying
    (extension arrays as their storage, lists and structs under the file's field ids); the rest
    are converted exactly (a smallint widened, a dictionary decoded) or the conversion raises.
    """
    arrays: list[AnyArray] = []
    for file_field in layout.file_schema:
        if file_field.name == layout.partition_column:
            arrays.append(pa.repeat(pa.scalar(partition_key, pa.string()), batch.num_rows))
        else:
            arrays.append(_to_file_array(batch.column(file_field.name), file_field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=layout.file_schema)


@dataclass(frozen=True)
class AddedColumn:
    """A column (or struct field) declared since the table was created; old files read NULL."""

    path: tuple[str, ...]
    field_type: IcebergType
    doc: str | None
    after: tuple[str, ...] | None
    """The column it follows in the planned schema (None: it comes first)."""


@dataclass(frozen=True)
class SchemaChanges:
    """What turns a table's current Iceberg schema into the planned one, without rewriting."""

    additions: tuple[AddedColumn, ...] = ()
    promotions: tuple[tuple[tuple[str, ...], PrimitiveType], ...] = ()
    """Columns widened as Iceberg allows (int to long, float to double, a wider decimal)."""
    made_optional: tuple[tuple[str, ...], ...] = ()
    """Required columns now declared nullable."""
    docs: tuple[tuple[tuple[str, ...], str], ...] = ()
    """Columns whose Postgres type (the field's doc) changed without changing the Iceberg type."""

    @property
    def empty(self) -> bool:
        """Whether the table's schema is already what the plan needs."""
        return not (self.additions or self.promotions or self.made_optional or self.docs)

    @property
    def summary(self) -> tuple[str, ...]:
        """Each change in words, for logs and metadata."""
        lines = [f"add {_dotted(a.path)} ({a.field_type})" for a in self.additions]
        lines += [f"widen {_dotted(path)} to {to}" for path, to in self.promotions]
        lines += [f"make {_dotted(path)} optional" for path in self.made_optional]
        lines += [f"describe {_dotted(path)} as {doc}" for path, doc in self.docs]
        return tuple(lines)

    def apply(self, update: UpdateSchema) -> None:
        """Stage every change on `update` (e.g. `with table.update_schema() as update:`)."""
        for path, to in self.promotions:
            update.update_column(path, field_type=to)
        for path, doc in self.docs:
            update.update_column(path, doc=doc)
        for path in self.made_optional:
            update.make_column_optional(path)
        for added in self.additions:
            update.add_column(added.path, added.field_type, doc=added.doc, required=False)
        # Moved once all are added, so a column may follow one added before it.
        for added in self.additions:
            if added.after is None:
                update.move_first(added.path)
            else:
                update.move_after(added.path, added.after)


def schema_changes(current: Schema, planned: Schema, *, table: str) -> SchemaChanges:
    """What turns `current` (the table's schema) into `planned`, or `SchemaDriftError`.

    Columns (and struct fields) declared since are added, old files reading them as NULL; types
    are widened as Iceberg allows (int to long, float to double, a decimal to more digits of the
    same scale) and required columns declared nullable made optional. Anything else (a column or
    struct field no longer declared, any other type change, list elements the table has as NOT
    NULL) is refused, naming every such column with both types. A column declared NOT NULL
    that the table has as optional stays optional: older files may lack it, and the table's
    readers lose nothing.
    """
    diff = _Diff()
    diff.struct((), current.as_struct(), planned.as_struct())
    if diff.problems:
        raise SchemaDriftError(
            f"the Iceberg table {table} cannot take the declared columns without changing what "
            "it holds:\n"
            + "\n".join(f"  - {problem}" for problem in diff.problems)
            + "\nDeclare these columns as the table has them, or publish to a new Iceberg table "
            "(its old data stays in the old one)"
        )
    return SchemaChanges(
        additions=tuple(diff.additions),
        promotions=tuple(diff.promotions),
        made_optional=tuple(diff.made_optional),
        docs=tuple(diff.docs),
    )


# --- Arrow to Iceberg -------------------------------------------------------------------------


class _UnmappableError(Exception):
    """A type with no exact Iceberg type; the message says why."""


def _iceberg_type(arrow_type: pa.DataType) -> IcebergType:
    """The Iceberg type (ids -1) that holds every value of `arrow_type` exactly."""
    if isinstance(arrow_type, pa.DictionaryType):
        return _iceberg_type(arrow_type.value_type)
    if isinstance(arrow_type, pa.UuidType):
        return UUIDType()
    if isinstance(arrow_type, pa.JsonType):
        return StringType()
    if isinstance(arrow_type, pa.BaseExtensionType):
        raise _UnmappableError(f"the Arrow extension type {arrow_type.extension_name}")
    if isinstance(arrow_type, pa.ListType | pa.LargeListType | pa.FixedSizeListType):
        return ListType(-1, _element_type(arrow_type.value_type), element_required=False)
    if isinstance(arrow_type, pa.StructType):
        return StructType(
            *[
                NestedField(-1, child.name, _child_type(child), required=False)
                for child in (arrow_type.field(i) for i in range(arrow_type.num_fields))
            ]
        )
    return _primitive(arrow_type)


def _element_type(arrow_type: pa.DataType) -> IcebergType:
    try:
        return _iceberg_type(arrow_type)
    except _UnmappableError as refusal:
        raise _UnmappableError(f"{refusal} in its elements") from None


def _child_type(child: AnyField) -> IcebergType:
    try:
        return _iceberg_type(child.type)
    except _UnmappableError as refusal:
        raise _UnmappableError(f"{refusal} in its field {child.name}") from None


_INTEGERS: Mapping[pa.DataType, PrimitiveType] = {
    pa.int8(): IntegerType(),
    pa.int16(): IntegerType(),
    pa.int32(): IntegerType(),
    pa.uint8(): IntegerType(),
    pa.uint16(): IntegerType(),
    pa.int64(): LongType(),
    pa.uint32(): LongType(),
}


def _is_text(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    )


def _is_bytes(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_binary_view(arrow_type)
    )


_SIMPLE: tuple[tuple[Callable[[pa.DataType], bool], PrimitiveType], ...] = (
    (pa.types.is_float16, FloatType()),
    (pa.types.is_float32, FloatType()),
    (pa.types.is_float64, DoubleType()),
    (pa.types.is_boolean, BooleanType()),
    (_is_text, StringType()),
    (_is_bytes, BinaryType()),
    (pa.types.is_date32, DateType()),
)


def _primitive(arrow_type: pa.DataType) -> PrimitiveType:
    if arrow_type in _INTEGERS:
        return _INTEGERS[arrow_type]
    for matches, iceberg_type in _SIMPLE:
        if matches(arrow_type):
            return iceberg_type
    if isinstance(
        arrow_type, pa.Decimal32Type | pa.Decimal64Type | pa.Decimal128Type | pa.Decimal256Type
    ):
        if arrow_type.precision > _MAX_DECIMAL_PRECISION:
            raise _UnmappableError(
                f"a decimal of precision {arrow_type.precision}; Iceberg's decimals hold at most "
                f"{_MAX_DECIMAL_PRECISION} digits"
            )
        return DecimalType(arrow_type.precision, arrow_type.scale)
    # After the decimals: pyarrow's decimal types are fixed-size binary types too.
    if isinstance(arrow_type, pa.FixedSizeBinaryType):
        return FixedType(arrow_type.byte_width)
    return _temporal(arrow_type)


def _temporal(arrow_type: pa.DataType) -> PrimitiveType:
    if isinstance(arrow_type, pa.Time32Type) or (
        isinstance(arrow_type, pa.Time64Type) and arrow_type.unit == "us"
    ):
        return TimeType()
    if isinstance(arrow_type, pa.TimestampType) and arrow_type.unit in _MICROSECOND_UNITS:
        return TimestampType() if arrow_type.tz is None else TimestamptzType()
    if isinstance(arrow_type, pa.Time64Type | pa.TimestampType):
        raise _UnmappableError(
            f"{arrow_type}: Iceberg v2 keeps times and timestamps in microseconds, and a "
            "nanosecond could be lost"
        )
    raise _UnmappableError(f"the Arrow type {arrow_type}")


def _origin(lake_field: AnyField) -> str | None:
    """The column's Postgres type, when the lake schema records one."""
    metadata = lake_field.metadata or {}
    declared = metadata.get(POSTGRES_TYPE_KEY)
    return declared.decode() if declared is not None else None


def _doc(lake_field: AnyField) -> str | None:
    declared = _origin(lake_field)
    representation = (lake_field.metadata or {}).get(POSTGRES_AS_KEY)
    if declared is None or representation is None:
        return declared
    return f"{declared}, read as {representation.decode()}"


def _unsupported(
    table: str, column: str, origin: str | None, refusal: _UnmappableError
) -> UnsupportedColumnError:
    if origin is None:
        return UnsupportedColumnError(
            f"{table}.{column}: an Iceberg table cannot hold {refusal} exactly. Cast the column "
            "in the transform to a type Iceberg holds (a string keeps every value)"
        )
    return UnsupportedColumnError(
        f"{table}.{column} has Postgres type {origin}: an Iceberg table cannot hold {refusal} "
        "exactly. Declare the column with `as: text` to keep Postgres' text form of every "
        "value, or leave it out of `columns`"
    )


# --- Iceberg to the data file's Arrow schema ----------------------------------------------------


def _origins(schema: pa.Schema) -> dict[str, dict[bytes, bytes]]:
    """Each top-level field's Postgres metadata (what `write_batches` records in the file)."""
    return {
        f.name: {k: v for k, v in (f.metadata or {}).items() if k.startswith(b"postgres.")}
        for f in schema
    }


def _file_schema(schema: Schema, origins: Mapping[str, Mapping[bytes, bytes]]) -> pa.Schema:
    return pa.schema(
        [_file_field(f, origins.get(f.name, {})) for f in schema.fields],
    )


def _file_field(iceberg_field: NestedField, extra: Mapping[bytes, bytes] = {}) -> AnyField:
    metadata = {**extra, PARQUET_FIELD_ID_KEY: str(iceberg_field.field_id).encode()}
    return pa.field(
        iceberg_field.name,
        _file_type(iceberg_field.field_type),
        nullable=not iceberg_field.required,
        metadata=metadata,
    )


_FILE_PRIMITIVES: Mapping[type[IcebergType], pa.DataType] = {
    BooleanType: pa.bool_(),
    IntegerType: pa.int32(),
    LongType: pa.int64(),
    FloatType: pa.float32(),
    DoubleType: pa.float64(),
    StringType: pa.string(),
    BinaryType: pa.binary(),
    DateType: pa.date32(),
    TimeType: pa.time64("us"),
    TimestampType: pa.timestamp("us"),
    TimestamptzType: pa.timestamp("us", tz="UTC"),
    UUIDType: pa.uuid(),
}


def _file_type(iceberg_type: IcebergType) -> pa.DataType:
    """The Arrow type a data file stores an Iceberg type in (what pyiceberg reads it as)."""
    if isinstance(iceberg_type, ListType):
        return pa.list_(_file_field(iceberg_type.element_field))
    if isinstance(iceberg_type, StructType):
        return pa.struct([_file_field(f) for f in iceberg_type.fields])
    if isinstance(iceberg_type, DecimalType):
        return pa.decimal128(iceberg_type.precision, iceberg_type.scale)
    if isinstance(iceberg_type, FixedType):
        return pa.binary(len(iceberg_type))
    return _FILE_PRIMITIVES[type(iceberg_type)]


def _with_ids_of(planned: NestedField, current: NestedField) -> NestedField:
    """`planned` with the field ids of `current` (the same column in the table), at any depth."""
    return NestedField(
        field_id=current.field_id,
        name=planned.name,
        field_type=_type_with_ids_of(planned.field_type, current.field_type),
        required=planned.required,
        doc=planned.doc,
    )


def _type_with_ids_of(planned: IcebergType, current: IcebergType) -> IcebergType:
    if isinstance(planned, ListType) and isinstance(current, ListType):
        return ListType(
            current.element_id,
            _type_with_ids_of(planned.element_type, current.element_type),
            element_required=planned.element_required,
        )
    if isinstance(planned, StructType) and isinstance(current, StructType):
        by_name = {f.name: f for f in current.fields}
        return StructType(*[_with_ids_of(f, by_name[f.name]) for f in planned.fields])
    return planned


# --- Batches into the data file's schema --------------------------------------------------------


def _to_file_array(array: AnyArray, target: pa.DataType) -> AnyArray:
    """`array` as type `target`: a view when the layout is the same, else an exact conversion."""
    if isinstance(array, pa.ExtensionArray) and not isinstance(target, pa.BaseExtensionType):
        array = array.storage
    if _same_layout(array.type, target):
        return array.view(target)
    if isinstance(array, pa.FixedSizeListArray):
        array = pc.cast(array, pa.list_(array.type.value_field))
    rebuilt = rebuild_container(array, target, _to_file_array)
    if rebuilt is not None:
        return rebuilt
    if isinstance(array, pa.DictionaryArray):
        array = array.dictionary_decode()
    return pc.cast(array, target, safe=True)


def _same_layout(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether `source` arrays are `target` arrays but for field names and metadata."""
    if isinstance(target, pa.BaseExtensionType):
        return source == target
    if isinstance(source, pa.BaseExtensionType):
        return _same_layout(source.storage_type, target)
    if pa.types.is_nested(source):
        children = child_types(source, target)
        return children is not None and all(_same_layout(s, t) for s, t in children)
    return source == target


# --- Schema evolution ---------------------------------------------------------------------------


def _promotes(current: PrimitiveType, planned: PrimitiveType) -> bool:
    """Whether Iceberg reads a `current` column's old files as `planned` (and allows the change)."""
    if isinstance(current, IntegerType):
        return isinstance(planned, LongType)
    if isinstance(current, FloatType):
        return isinstance(planned, DoubleType)
    if isinstance(current, DecimalType) and isinstance(planned, DecimalType):
        return planned.scale == current.scale and planned.precision > current.precision
    return False


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _described(iceberg_field: NestedField) -> str:
    """The field's Iceberg type, and its Postgres type where the doc records it."""
    if iceberg_field.doc and iceberg_field.doc != PARTITION_DOC:
        return f"{iceberg_field.field_type} ({iceberg_field.doc})"
    return str(iceberg_field.field_type)


class _Diff:
    """The walk of the current schema against the planned one."""

    def __init__(self) -> None:
        self.additions: list[AddedColumn] = []
        self.promotions: list[tuple[tuple[str, ...], PrimitiveType]] = []
        self.made_optional: list[tuple[str, ...]] = []
        self.docs: list[tuple[tuple[str, ...], str]] = []
        self.problems: list[str] = []

    def struct(self, path: tuple[str, ...], current: StructType, planned: StructType) -> None:
        current_by_name = {f.name: f for f in current.fields}
        planned_names = {f.name for f in planned.fields}
        for gone in current.fields:
            if gone.name not in planned_names:
                self.problems.append(
                    f"{_dotted((*path, gone.name))}: {_described(gone)} in the table, no longer "
                    "declared (Iceberg would read it as NULL from then on)"
                )
        previous: tuple[str, ...] | None = None
        for wanted in planned.fields:
            where = (*path, wanted.name)
            existing = current_by_name.get(wanted.name)
            if existing is None:
                self.additions.append(
                    AddedColumn(where, wanted.field_type, wanted.doc, after=previous)
                )
            else:
                self.field(where, existing, wanted)
            previous = where

    def field(self, path: tuple[str, ...], current: NestedField, planned: NestedField) -> None:
        if current.required and not planned.required:
            self.made_optional.append(path)
        if planned.doc is not None and planned.doc != current.doc:
            self.docs.append((path, planned.doc))
        self.type(path, current, planned)

    def type(self, path: tuple[str, ...], current: NestedField, planned: NestedField) -> None:
        have, want = current.field_type, planned.field_type
        if isinstance(have, StructType) and isinstance(want, StructType):
            self.struct(path, have, want)
        elif isinstance(have, ListType) and isinstance(want, ListType):
            if have.element_required and not want.element_required:
                self.problems.append(
                    f"{_dotted(path)}: its elements are NOT NULL in the table, nullable declared"
                )
            self.type((*path, "element"), have.element_field, want.element_field)
        elif have == want:
            return
        elif (
            isinstance(have, PrimitiveType)
            and isinstance(want, PrimitiveType)
            and _promotes(have, want)
        ):
            self.promotions.append((path, want))
        else:
            self.problems.append(
                f"{_dotted(path)}: {_described(current)} in the table, {_described(planned)} "
                "declared (Iceberg changes a type only from int to long, from float to double, "
                "or to a decimal of the same scale and more digits)"
            )
