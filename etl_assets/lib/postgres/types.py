"""The type plan: every declared column's Postgres type, read from the catalog, mapped to Arrow.

A plan is made inside the read's snapshot before a row is read. Each column either maps to an
Arrow type that holds every value exactly, or the load is refused with an error that names the
column and its type: a value is never silently altered.

Some types hold values that no Arrow type can (infinite dates, timestamps past what 64-bit
microseconds since 1970 hold, `time '24:00'`, a NaN in a `numeric(p,s)`, multi-dimensional
arrays): for those the plan carries *hazards*, predicates the server evaluates on every row of
those columns only, so the reader can refuse such a row, naming its primary key and the hazard
found, before anything is published. A column declared `as: text` is read as Postgres' own text
output instead (the type's output function, as psql and COPY print it), which holds every value
of every type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import LiteralString

import pyarrow as pa
from psycopg import sql

from etl_assets.lib.arrow_types import INTERVAL_TYPE
from etl_assets.lib.errors import SchemaDriftError, UnsupportedColumnError
from etl_assets.lib.postgres.catalog import CatalogColumn, CatalogType
from etl_assets.lib.postgres.sql import BoundKind, Relation
from etl_assets.lib.table.contract import LiveColumn, contract_differences
from etl_assets.lib.table.spec import ColumnSpec, Representation

RESERVED_PREFIX = "__etl_assets_"
"""Select aliases the reader adds start with this; a source column may not."""
HAZARD_ALIAS = f"{RESERVED_PREFIX}unrepresentable"


POSTGRES_TYPE_KEY = b"postgres.type"
"""Arrow field metadata: the column's Postgres type, as `format_type()` prints it."""
POSTGRES_ENUM_LABELS_KEY = b"postgres.enum_labels"
"""Arrow field metadata: an enum's (or enum array's) labels in their order, as a JSON list."""
POSTGRES_AS_KEY = b"postgres.as"
"""Arrow field metadata: the column's declared `as` (`text`), when it has one."""
POSTGRES_COLUMNS_KEY = b"postgres.columns"
"""Parquet key-value metadata: every column's Postgres origin, as one JSON list."""


def postgres_columns(schema: pa.Schema) -> bytes | None:
    """The `POSTGRES_COLUMNS_KEY` document for the fields of `schema` that carry an origin.

    `[{"name": ..., "type": ..., "enum_labels": [...], "as": "text"}, ...]`, in column order,
    for readers that see a Parquet file's key-value metadata but not Arrow's field metadata
    (DuckDB's `parquet_kv_metadata`, for one). None when no field has one.
    """
    columns: list[dict[str, object]] = []
    for arrow_field in schema:
        metadata = arrow_field.metadata or {}
        if POSTGRES_TYPE_KEY not in metadata:
            continue
        entry: dict[str, object] = {
            "name": arrow_field.name,
            "type": metadata[POSTGRES_TYPE_KEY].decode(),
        }
        if POSTGRES_ENUM_LABELS_KEY in metadata:
            entry["enum_labels"] = json.loads(metadata[POSTGRES_ENUM_LABELS_KEY])
        if POSTGRES_AS_KEY in metadata:
            entry["as"] = metadata[POSTGRES_AS_KEY].decode()
        columns.append(entry)
    return _json(columns) if columns else None


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class ReadKind(StrEnum):
    """How a column's Arrow array is built from what the reader selects."""

    DIRECT = "direct"
    """One selected value, converted to the planned type."""
    INTERVAL = "interval"
    """An interval: Postgres' binary form (`interval_send`), split into its three fields."""
    COMPOSITE = "composite"
    """A composite: one selected value per field plus a validity flag, built into a struct."""
    SCALED_DECIMAL = "scaled_decimal"
    """A `numeric(p <= 18, s)`: selected as the int8 `value * 10^s` (the driver decodes int8
    several times faster than numeric) and rebuilt exactly as decimal128(p, s)."""


@dataclass(frozen=True)
class Hazard:
    """Values of a column that no Arrow type holds, as a predicate the server evaluates."""

    predicate: sql.Composable
    """True for such a value; for a hazard of an array's elements, true for such an element
    `u.v` of `elements_of`."""
    values: str
    """What such values are, for the error message (e.g. "infinity or -infinity")."""
    elements_of: sql.Composable | None = None
    """For a hazard of an array's elements: the array. The hazards of one array are tested in
    one pass over its elements (see `hazard_flag`)."""


@dataclass(frozen=True)
class ColumnPlan:
    """How one column is read and what Arrow type carries it."""

    name: str
    declared_type: str
    nullable: bool
    arrow_type: pa.DataType
    selects: tuple[sql.Composable, ...]
    """The expressions selected for this column (one, or one per field plus validity)."""
    kind: ReadKind = ReadKind.DIRECT
    hazards: tuple[Hazard, ...] = ()
    enum_labels: tuple[str, ...] = ()
    representation: Representation | None = None

    @property
    def field_metadata(self) -> dict[bytes, bytes]:
        """What the lake's field records of the column's origin (see `POSTGRES_TYPE_KEY`)."""
        metadata = {POSTGRES_TYPE_KEY: self.declared_type.encode()}
        if self.enum_labels:
            metadata[POSTGRES_ENUM_LABELS_KEY] = _json(list(self.enum_labels))
        if self.representation is not None:
            metadata[POSTGRES_AS_KEY] = self.representation.value.encode()
        return metadata

    @property
    def frame_type(self) -> pa.DataType:
        """The type in Polars frames, where it differs from the lake's (Polars has no decimal256).

        Decimals wider than 38 digits travel as their exact text and become decimal256 again
        when written.
        """
        return frame_type(self.arrow_type)


@dataclass(frozen=True)
class TablePlan:
    """The plan of every column read, in the declared order."""

    relation: Relation
    columns: tuple[ColumnPlan, ...]
    partition_bound: BoundKind
    undeclared_columns: tuple[str, ...] = field(default=())
    """Live columns not in the declaration: not read, reported so drift is visible."""
    unique_index: str | None = None
    """A unique index guaranteeing the declared primary key's uniqueness, if the table has one."""
    primary_key_not_null: bool = False
    """Whether every primary key column is NOT NULL in the catalog."""

    @property
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of the rows as read (before any transform).

        Each field's metadata records the column's Postgres type (and enum labels, and `as`).
        """
        return pa.schema(
            [
                pa.field(c.name, c.arrow_type, nullable=c.nullable, metadata=c.field_metadata)
                for c in self.columns
            ]
        )

    @property
    def frame_schema(self) -> pa.Schema:
        """The Arrow schema of the frames the transform sees."""
        return pa.schema(
            [pa.field(c.name, c.frame_type, nullable=c.nullable) for c in self.columns]
        )

    @property
    def hazards(self) -> list[tuple[ColumnPlan, Hazard]]:
        """Every hazard of every column."""
        return [(column, hazard) for column in self.columns for hazard in column.hazards]

    @property
    def select_list(self) -> list[sql.Composable]:
        """Everything the reader selects: each column's expressions, then the hazard flag.

        The flag is NULL for a row without hazards, else the position in `hazards` of the
        first one found (see `hazard_flag`).
        """
        items = [item for column in self.columns for item in column.selects]
        if self.hazards:
            items.append(
                sql.SQL("{flag} AS {alias}").format(
                    flag=hazard_flag([hazard for _, hazard in self.hazards]),
                    alias=sql.Identifier(HAZARD_ALIAS),
                )
            )
        return items

    def column(self, name: str) -> ColumnPlan:
        """The plan of the column called `name`."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


def hazard_flag(hazards: Sequence[Hazard]) -> sql.Composable:
    """An int expression: NULL, or the position in `hazards` of the first one the row has.

    Row hazards are one `WHEN` each. Consecutive hazards of one array's elements share one
    pass over the elements; which of them was found is worked out only for a flagged row.
    """
    cases: list[sql.Composable] = []
    position = 0
    while position < len(hazards):
        hazard = hazards[position]
        if hazard.elements_of is None:
            cases.append(sql.SQL("WHEN {} THEN {}").format(hazard.predicate, sql.Literal(position)))
            position += 1
            continue
        group = [hazard]
        while (
            position + len(group) < len(hazards)
            and hazards[position + len(group)].elements_of == hazard.elements_of
        ):
            group.append(hazards[position + len(group)])
        predicates = [h.predicate for h in group]
        if len(group) == 1:
            found: sql.Composable = sql.Literal(position)
        else:
            which = sql.SQL(" ").join(
                sql.SQL("WHEN {} THEN {}").format(p, sql.Literal(position + i))
                for i, p in enumerate(predicates)
            )
            found = sql.SQL("(SELECT min(CASE {} END) FROM unnest({}) AS u(v))").format(
                which, hazard.elements_of
            )
        either = sql.SQL(" OR ").join(sql.SQL("({})").format(p) for p in predicates)
        any_element = sql.SQL("EXISTS (SELECT 1 FROM unnest({}) AS u(v) WHERE {})").format(
            hazard.elements_of, either
        )
        cases.append(sql.SQL("WHEN {} THEN {}").format(any_element, found))
        position += len(group)
    return sql.SQL("CASE {} END").format(sql.SQL(" ").join(cases))


_SCALARS: Mapping[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "bytea": pa.binary(),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "json": pa.json_(pa.string()),
    "jsonb": pa.json_(pa.string()),
    "uuid": pa.uuid(),
}

# Types read as Postgres' text output by design: it is exact, and Arrow has no type for them.
_AS_TEXT_BY_DESIGN: Mapping[str, str] = {
    "timetz": "time with a UTC offset",
}

_PARTITION_BOUNDS: Mapping[str, BoundKind] = {
    "timestamptz": BoundKind.TIMESTAMPTZ,
    "timestamp": BoundKind.TIMESTAMP,
    "date": BoundKind.DATE,
}

_INT8_MAX_PRECISION = 18
"""Every `numeric(18, s)` value times 10^s is below 10^18 < 2^63."""
_DECIMAL128_MAX_PRECISION = 38
_DECIMAL256_MAX_PRECISION = 76
_TEXT = sql.SQL("text")


def frame_type(arrow_type: pa.DataType) -> pa.DataType:
    """`arrow_type` with every decimal256 replaced by string (see `ColumnPlan.frame_type`)."""
    if isinstance(arrow_type, pa.Decimal256Type):
        return pa.string()
    if isinstance(arrow_type, pa.ListType):
        return pa.list_(frame_type(arrow_type.value_type))
    if isinstance(arrow_type, pa.StructType):
        return pa.struct(
            [
                pa.field(f.name, frame_type(f.type), nullable=f.nullable)
                for f in (arrow_type.field(i) for i in range(arrow_type.num_fields))
            ]
        )
    return arrow_type


def numeric_precision_scale(typmod: int) -> tuple[int, int] | None:
    """`(precision, scale)` of a `numeric(p,s)` typmod, or None for unconstrained numeric."""
    if typmod < 0:
        return None
    packed = typmod - 4
    precision = (packed >> 16) & 0xFFFF
    scale = packed & 0xFFFF
    # Postgres 15+ allows a negative scale, stored as an 11-bit two's complement.
    if scale & 0x400:
        scale -= 0x800
    return precision, scale


@dataclass(frozen=True)
class _ValueHazard:
    """Values of one type that no Arrow type holds."""

    values: str
    """What they are, for the error message."""
    test: Callable[[sql.Composable], sql.Composable]
    """The predicate, over an expression of the type."""


_INFINITE = _ValueHazard("infinity or -infinity", lambda e: sql.SQL("NOT isfinite({})").format(e))

# Arrow and Parquet timestamps are 64-bit microseconds since 1970; Postgres' go on to the
# year 294276 (it counts from 2000). Its earliest, 4714-11-24 BC, fits.
_LATEST_TIMESTAMP = "294247-01-10 04:00:54.775807"


def _after(type_name: LiteralString, latest: str) -> _ValueHazard:
    return _ValueHazard(
        f"a time after {latest}",
        lambda e: sql.SQL("{} > {}::{}").format(e, sql.Literal(latest), sql.SQL(type_name)),
    )


_VALUE_HAZARDS: Mapping[str, tuple[_ValueHazard, ...]] = {
    "date": (_INFINITE,),
    "timestamp": (_INFINITE, _after("timestamp", _LATEST_TIMESTAMP)),
    "timestamptz": (_INFINITE, _after("timestamptz", f"{_LATEST_TIMESTAMP}+00")),
    "time": (_ValueHazard("24:00:00", lambda e: sql.SQL("{} = '24:00:00'::time").format(e)),),
    # Postgres 17 has infinite intervals; before it, isfinite() is true for every interval.
    "interval": (_INFINITE,),
}
_NAN = _ValueHazard("NaN", lambda e: sql.SQL("{} = 'NaN'::numeric").format(e))


@dataclass(frozen=True)
class _Scalar:
    arrow_type: pa.DataType
    cast: sql.Composable | None = None
    kind: ReadKind = ReadKind.DIRECT
    hazards: tuple[_ValueHazard, ...] = ()
    """The values of the type no Arrow type holds."""
    send: sql.Composable | None = None
    """A function selecting the value in Postgres' binary form (bytea), decoded by the reader."""
    scale: int | None = None
    """For a decimal that fits int8 once scaled: its scale (a column of it is read as
    `ReadKind.SCALED_DECIMAL`; array elements and composite fields are read as they are)."""

    def select(self, expression: sql.Composable) -> sql.Composable:
        """What the reader selects for a value of this type."""
        if self.send is not None:
            return sql.SQL("{}({})").format(self.send, expression)
        return expression if self.cast is None else _cast(expression, self.cast)

    def select_elements(self, array: sql.Composable) -> sql.Composable:
        """What the reader selects for a one-dimensional array of this type."""
        if self.send is not None:
            # Each element in binary form, in order; a NULL array stays NULL.
            return sql.SQL(
                "CASE WHEN {a} IS NULL THEN NULL ELSE ARRAY(SELECT {f}(u.v) FROM unnest({a})"
                " WITH ORDINALITY AS u(v, n) ORDER BY u.n) END"
            ).format(a=array, f=self.send)
        return array if self.cast is None else _cast(array, sql.SQL("{}[]").format(self.cast))


class Planner:
    """Maps catalog types to Arrow types for one table, resolving domains to their base type."""

    def __init__(self, relation: Relation, types: Mapping[int, CatalogType]) -> None:
        self._relation = relation
        self._types = types

    def plan_column(self, column: CatalogColumn, spec: ColumnSpec | None = None) -> ColumnPlan:
        """The plan for one column, or `UnsupportedColumnError` naming it and the way out."""
        if column.name.startswith(RESERVED_PREFIX):
            raise UnsupportedColumnError(
                f"{self._where(column)}: column names starting with {RESERVED_PREFIX} are "
                "reserved for the reader"
            )
        expression = sql.Identifier(column.name)
        representation = spec.representation if spec else None
        base, typmod = self.resolve_domain(column.type_oid, column.typmod)
        labels = base.enum_labels or self._element_labels(base)
        if representation is Representation.TEXT:
            return ColumnPlan(
                name=column.name,
                declared_type=column.declared_type,
                nullable=not column.not_null,
                arrow_type=pa.string(),
                selects=(_aliased(output_text(expression), column.name),),
                enum_labels=labels,
                representation=representation,
            )
        if base.kind == "c":
            return self._plan_composite(column, base, expression)
        scalar, select, hazards = self._plan_value(column, base, typmod, expression)
        if scalar.scale is not None:
            # NaN is refused by its hazard flag; NULLIF keeps the cast from failing first.
            select = sql.SQL("(NULLIF({}, 'NaN') * {})::int8").format(
                expression, sql.Literal(10**scalar.scale)
            )
        return ColumnPlan(
            name=column.name,
            declared_type=column.declared_type,
            nullable=not column.not_null,
            arrow_type=scalar.arrow_type,
            selects=(_aliased(select, column.name),),
            kind=ReadKind.SCALED_DECIMAL if scalar.scale is not None else scalar.kind,
            hazards=hazards,
            enum_labels=labels,
        )

    def partition_bound(self, column: CatalogColumn) -> BoundKind:
        """How the partition column compares with window bounds; refuses other types."""
        base, _ = self.resolve_domain(column.type_oid, column.typmod)
        kind = _PARTITION_BOUNDS.get(base.name)
        if kind is None:
            raise SchemaDriftError(
                f"{self._where(column)}: partition column type {column.declared_type} cannot "
                "hold a time window; use a timestamptz, timestamp or date column"
            )
        return kind

    def resolve_domain(self, oid: int, typmod: int) -> tuple[CatalogType, int]:
        """The base type (and its typmod) under any stack of domains."""
        current = self._types[oid]
        while current.kind == "d":
            if current.base_typmod >= 0:
                typmod = current.base_typmod
            current = self._types[current.base_oid]
        return current, typmod

    def _plan_value(
        self, column: CatalogColumn, base: CatalogType, typmod: int, expression: sql.Composable
    ) -> tuple[_Scalar, sql.Composable, tuple[Hazard, ...]]:
        """The value's type, what the reader selects for it, and its hazards."""
        if base.category == "A":
            element, element_typmod = self.resolve_domain(base.element_oid, typmod)
            if element.category == "A" or element.kind == "c":
                raise self._unsupported(column, f"arrays of {element.name}")
            scalar = self._scalar(element, element_typmod, column)
            shape = sql.SQL("(array_ndims({e}) > 1 OR array_lower({e}, 1) <> 1)").format(
                e=expression
            )
            array_hazards = [Hazard(shape, "a multi-dimensional array, or one not indexed from 1")]
            array_hazards += [
                Hazard(h.test(sql.SQL("u.v")), f"an element that is {h.values}", expression)
                for h in scalar.hazards
            ]
            return (
                _Scalar(pa.list_(scalar.arrow_type)),
                scalar.select_elements(expression),
                tuple(array_hazards),
            )
        scalar = self._scalar(base, typmod, column)
        hazards = tuple(Hazard(h.test(expression), h.values) for h in scalar.hazards)
        return scalar, scalar.select(expression), hazards

    def _plan_composite(
        self, column: CatalogColumn, base: CatalogType, expression: sql.Composable
    ) -> ColumnPlan:
        fields: list[pa.Field[pa.DataType]] = []
        selects: list[sql.Composable] = []
        hazards: list[Hazard] = []
        for index, member in enumerate(base.fields):
            member_base, member_typmod = self.resolve_domain(member.type_oid, member.typmod)
            if member_base.kind == "c":
                raise self._unsupported(column, "composites nested in composites")
            member_expression = sql.SQL("({}).{}").format(expression, sql.Identifier(member.name))
            scalar, select, member_hazards = self._plan_value(
                column, member_base, member_typmod, member_expression
            )
            selects.append(_aliased(select, f"{RESERVED_PREFIX}{column.name}.{index}"))
            fields.append(pa.field(member.name, scalar.arrow_type))
            hazards += [
                Hazard(h.predicate, f"{h.values} in field {member.name}", h.elements_of)
                for h in member_hazards
            ]
        # A NULL composite and a composite whose fields are all NULL are different values.
        validity = sql.SQL("num_nulls({}) = 0").format(expression)
        selects.append(_aliased(validity, f"{RESERVED_PREFIX}{column.name}.valid"))
        return ColumnPlan(
            name=column.name,
            declared_type=column.declared_type,
            nullable=not column.not_null,
            arrow_type=pa.struct(fields),
            selects=tuple(selects),
            kind=ReadKind.COMPOSITE,
            hazards=tuple(hazards),
        )

    def _element_labels(self, base: CatalogType) -> tuple[str, ...]:
        if base.category != "A":
            return ()
        element, _ = self.resolve_domain(base.element_oid, -1)
        return element.enum_labels

    def _scalar(self, base: CatalogType, typmod: int, column: CatalogColumn) -> _Scalar:
        if base.kind == "e":
            # Enum values arrive as text; the label set goes to metadata.
            return _Scalar(pa.string(), _TEXT)
        if base.name == "numeric":
            return _numeric(typmod)
        if base.name == "interval":
            # The driver's month_day_nano cannot hold a time part past 2^63 nanoseconds
            # (about 292 years); Postgres' binary form holds every interval.
            return _Scalar(
                INTERVAL_TYPE,
                kind=ReadKind.INTERVAL,
                hazards=_VALUE_HAZARDS["interval"],
                send=sql.SQL("interval_send"),
            )
        if base.name in _AS_TEXT_BY_DESIGN:
            return _Scalar(pa.string(), _TEXT)
        arrow_type = _SCALARS.get(base.name)
        if arrow_type is None:
            raise self._unsupported(column, f"type {base.name}")
        return _Scalar(arrow_type, hazards=_VALUE_HAZARDS.get(base.name, ()))

    def _unsupported(self, column: CatalogColumn, what: str) -> UnsupportedColumnError:
        return UnsupportedColumnError(
            f"{self._where(column)} has type {column.declared_type}: {what} has no exact "
            "Parquet mapping. Declare the column with `as: text` to keep Postgres' text form "
            "of every value, or leave it out of `columns`"
        )

    def _where(self, column: CatalogColumn) -> str:
        return f"{self._relation.schema}.{self._relation.table}.{column.name}"


def _numeric(typmod: int) -> _Scalar:
    precision_scale = numeric_precision_scale(typmod)
    # Unconstrained numeric has no fixed scale: Postgres' exact decimal text is kept (the
    # driver's own rendering would spell NaN "nan").
    if precision_scale is None:
        return _Scalar(pa.string(), _TEXT)
    precision, scale = precision_scale
    if scale < 0 or scale > precision or precision > _DECIMAL256_MAX_PRECISION:
        return _Scalar(pa.string(), _TEXT)
    # A constrained numeric cannot hold ±Infinity, but it can hold NaN.
    if precision <= _INT8_MAX_PRECISION:
        return _Scalar(pa.decimal128(precision, scale), hazards=(_NAN,), scale=scale)
    if precision <= _DECIMAL128_MAX_PRECISION:
        return _Scalar(pa.decimal128(precision, scale), hazards=(_NAN,))
    # Read as Postgres' exact text: the frame carries it as a string (see frame_type).
    return _Scalar(pa.decimal256(precision, scale), _TEXT, hazards=(_NAN,))


def output_text(expression: sql.Composable) -> sql.Composable:
    """The value as its type's output function writes it (what psql and COPY print).

    A `::text` cast can differ: inet's adds the netmask, boolean's spells `true`, char(n)'s
    drops the padding. `format('%s', ...)` calls the output function, but writes NULL as '',
    so NULL is kept apart: with `IS DISTINCT FROM NULL`, which (unlike `IS NULL`) is false for
    a composite whose fields are all NULL.
    """
    return sql.SQL("CASE WHEN {e} IS DISTINCT FROM NULL THEN format('%s', {e}) END").format(
        e=expression
    )


def _cast(expression: sql.Composable, to: sql.Composable) -> sql.Composable:
    return sql.SQL("({})::{}").format(expression, to)


def _aliased(expression: sql.Composable, alias: str) -> sql.Composable:
    return sql.SQL("{} AS {}").format(expression, sql.Identifier(alias))


def partition_column_bound(
    relation: Relation,
    live_columns: Sequence[CatalogColumn],
    types: Mapping[int, CatalogType],
    partition_column: str,
) -> BoundKind:
    """How the live partition column compares with window bounds, the rest left unplanned.

    What a change's partition value means does not depend on the other columns' contract.
    """
    for column in live_columns:
        if column.name == partition_column:
            return Planner(relation, types).partition_bound(column)
    raise SchemaDriftError(
        f"table {relation.schema}.{relation.table} has no column {partition_column!r} (or is not "
        "visible to the connecting role)"
    )


def plan_table(
    relation: Relation,
    live_columns: Sequence[CatalogColumn],
    types: Mapping[int, CatalogType],
    declared: Sequence[ColumnSpec],
    partition_column: str,
    *,
    primary_key: Sequence[str] = (),
    unique_indexes: Sequence[tuple[str, Sequence[str]]] = (),
) -> TablePlan:
    """Plan the declared columns against the live table, or raise naming what is wrong.

    The live table must honour the declared contract (see `contract_differences`); every
    declared column must have an exact mapping or a chosen representation.
    """
    if not live_columns:
        raise SchemaDriftError(
            f"table {relation.schema}.{relation.table} does not exist or is not visible to the "
            "connecting role"
        )
    by_name = {c.name: c for c in live_columns}
    differences = contract_differences(
        declared,
        [LiveColumn(c.name, c.declared_type, not c.not_null) for c in live_columns],
    )
    if partition_column not in by_name:
        differences.append(f"{partition_column}: the partition column does not exist")
    if differences:
        raise SchemaDriftError(
            f"the live table {relation.schema}.{relation.table} does not match its contract:\n"
            + "\n".join(f"  - {line}" for line in differences)
            + "\nUpdate the table's `columns` in its defs.yaml (`etl-assets introspect` prints "
            "the live contract), or fix the table."
        )
    planner = Planner(relation, types)
    plans = tuple(planner.plan_column(by_name[spec.name], spec) for spec in declared)
    for spec, column_plan in zip(declared, plans, strict=True):
        bounded = spec.checks.min is not None or spec.checks.max is not None
        if bounded and column_plan.frame_type != column_plan.arrow_type:
            raise UnsupportedColumnError(
                f"{relation.schema}.{relation.table}.{spec.name} ({column_plan.declared_type}): "
                "min/max checks need a type Polars can compare; numeric wider than 38 digits "
                "is carried as text"
            )
    declared_names = {spec.name for spec in declared} | {partition_column}
    key = set(primary_key)
    enforced = next((name for name, columns in unique_indexes if key and set(columns) <= key), None)
    return TablePlan(
        relation=relation,
        columns=plans,
        partition_bound=planner.partition_bound(by_name[partition_column]),
        undeclared_columns=tuple(c.name for c in live_columns if c.name not in declared_names),
        unique_index=enforced,
        primary_key_not_null=bool(key) and all(by_name[c].not_null for c in key if c in by_name),
    )
