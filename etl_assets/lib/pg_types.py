"""The type plan: every declared column's Postgres type, read from the catalog, mapped to Arrow.

A plan is made inside the read's snapshot before a row is read. Each column either maps to an
Arrow type that holds every value exactly, or the load is refused with an error that names the
column and its type: a value is never silently altered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from psycopg import sql

from etl_assets.lib.sql import BoundKind, Relation, render


class UnsupportedColumnError(ValueError):
    """A declared column whose type has no exact Arrow representation (yet)."""


class ContractError(ValueError):
    """The live table does not have what the declaration expects."""


@dataclass(frozen=True)
class CatalogType:
    """One row of `pg_type` as the planner needs it."""

    oid: int
    name: str
    kind: str
    """`typtype`: b base, d domain, e enum, c composite, r range, m multirange, p pseudo."""
    category: str
    """`typcategory`: A array, N numeric, S string, D datetime, U user-defined, ..."""
    element_oid: int
    base_oid: int
    base_typmod: int
    enum_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class CatalogColumn:
    """One column of the live table."""

    name: str
    position: int
    declared_type: str
    """`format_type()` of the column, e.g. `numeric(12,2)` or `sales.order_status[]`."""
    type_oid: int
    typmod: int
    not_null: bool


@dataclass(frozen=True)
class ColumnPlan:
    """How one column is read and what Arrow type carries it."""

    name: str
    declared_type: str
    nullable: bool
    arrow_type: pa.DataType
    select: sql.Composable
    enum_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class TablePlan:
    """The plan of every column read, in the declared order."""

    relation: Relation
    columns: tuple[ColumnPlan, ...]
    partition_bound: BoundKind
    undeclared_columns: tuple[str, ...] = field(default=())
    """Live columns not in the declaration: not read, reported so drift is visible."""

    @property
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of the rows as read (before any transform)."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns]
        )

    @property
    def select_list(self) -> list[sql.Composable]:
        """The expressions that read each column, in order."""
        return [c.select for c in self.columns]

    def column(self, name: str) -> ColumnPlan:
        """The plan of the column called `name`."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


def columns_query(relation: Relation) -> str:
    """The live columns of a table, in table order, with their declared types."""
    return render(
        sql.SQL(
            "SELECT a.attname::text, a.attnum::int4, format_type(a.atttypid, a.atttypmod)::text,"
            " a.atttypid::int8, a.atttypmod::int4, a.attnotnull"
            " FROM pg_catalog.pg_attribute a"
            " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = {schema} AND c.relname = {table}"
            " AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
            " AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum"
        ).format(schema=sql.Literal(relation.schema), table=sql.Literal(relation.table))
    )


def types_query(oids: Iterable[int]) -> str:
    """`pg_type` rows (and enum labels) for the given type oids."""
    oid_list = sorted(set(oids))
    return render(
        sql.SQL(
            "SELECT t.oid::int8, t.typname::text, t.typtype::text, t.typcategory::text,"
            " t.typelem::int8, t.typbasetype::int8, t.typtypmod::int4,"
            " ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e"
            "       WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)"
            " FROM pg_catalog.pg_type t WHERE t.oid::int8 = ANY({oids})"
        ).format(oids=sql.Literal(oid_list))
    )


def catalog_type_from_row(row: Sequence[object]) -> CatalogType:
    """Build a `CatalogType` from a row of `types_query`."""
    oid, name, kind, category, element_oid, base_oid, base_typmod, labels = row
    return CatalogType(
        oid=int(str(oid)),
        name=str(name),
        kind=str(kind),
        category=str(category),
        element_oid=int(str(element_oid)),
        base_oid=int(str(base_oid)),
        base_typmod=int(str(base_typmod)),
        enum_labels=tuple(str(label) for label in _as_sequence(labels)),
    )


def catalog_column_from_row(row: Sequence[object]) -> CatalogColumn:
    """Build a `CatalogColumn` from a row of `columns_query`."""
    name, position, declared_type, type_oid, typmod, not_null = row
    return CatalogColumn(
        name=str(name),
        position=int(str(position)),
        declared_type=str(declared_type),
        type_oid=int(str(type_oid)),
        typmod=int(str(typmod)),
        not_null=bool(not_null),
    )


def _as_sequence(value: object) -> Sequence[object]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return value  # pyright: ignore[reportUnknownVariableType]
    raise TypeError(f"expected a list, got {type(value).__name__}")


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
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "json": pa.json_(pa.string()),
    "jsonb": pa.json_(pa.string()),
    "uuid": pa.uuid(),
}

_TEXT = sql.SQL("text")

_PARTITION_BOUNDS: Mapping[str, BoundKind] = {
    "timestamptz": BoundKind.TIMESTAMPTZ,
    "timestamp": BoundKind.TIMESTAMP,
    "date": BoundKind.DATE,
}

_DECIMAL128_MAX_PRECISION = 38
_DECIMAL256_MAX_PRECISION = 76


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


class Planner:
    """Maps catalog types to Arrow types for one table, resolving domains to their base type."""

    def __init__(self, relation: Relation, types: Mapping[int, CatalogType]) -> None:
        self._relation = relation
        self._types = types

    def plan_column(self, column: CatalogColumn) -> ColumnPlan:
        """The plan for one column, or `UnsupportedColumnError` naming it."""
        base, typmod = self.resolve_domain(column.type_oid, column.typmod)
        arrow_type, cast_to = self._arrow_type(base, typmod, column)
        select: sql.Composable = sql.Identifier(column.name)
        if cast_to is not None:
            select = sql.SQL("{col}::{type} AS {alias}").format(
                col=sql.Identifier(column.name),
                type=cast_to,
                alias=sql.Identifier(column.name),
            )
        labels = base.enum_labels or self._element_labels(base)
        return ColumnPlan(
            name=column.name,
            declared_type=column.declared_type,
            nullable=not column.not_null,
            arrow_type=arrow_type,
            select=select,
            enum_labels=labels,
        )

    def partition_bound(self, column: CatalogColumn) -> BoundKind:
        """How the partition column compares with window bounds; refuses other types."""
        base, _ = self.resolve_domain(column.type_oid, column.typmod)
        kind = _PARTITION_BOUNDS.get(base.name)
        if kind is None:
            raise ContractError(
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

    def _element_labels(self, base: CatalogType) -> tuple[str, ...]:
        if base.category != "A":
            return ()
        element, _ = self.resolve_domain(base.element_oid, -1)
        return element.enum_labels

    def _arrow_type(
        self, base: CatalogType, typmod: int, column: CatalogColumn
    ) -> tuple[pa.DataType, sql.Composable | None]:
        if base.category == "A":
            element, element_typmod = self.resolve_domain(base.element_oid, typmod)
            if element.category == "A":
                raise self._unsupported(column, "arrays of arrays")
            element_type, element_cast = self._scalar(element, element_typmod, column)
            cast = sql.SQL("{}[]").format(element_cast) if element_cast else None
            return pa.list_(element_type), cast
        return self._scalar(base, typmod, column)

    def _scalar(
        self, base: CatalogType, typmod: int, column: CatalogColumn
    ) -> tuple[pa.DataType, sql.Composable | None]:
        if base.kind == "e":
            # Enum values arrive as text; the label set goes to metadata.
            return pa.string(), _TEXT
        if base.name == "numeric":
            return _numeric_arrow_type(typmod), None
        arrow_type = _SCALARS.get(base.name)
        if arrow_type is None:
            raise self._unsupported(column, f"type {base.name}")
        return arrow_type, None

    def _unsupported(self, column: CatalogColumn, what: str) -> UnsupportedColumnError:
        return UnsupportedColumnError(
            f"{self._where(column)} has type {column.declared_type}: {what} has no exact "
            "Parquet mapping; leave the column out of `columns` or cast it in a view"
        )

    def _where(self, column: CatalogColumn) -> str:
        return f"{self._relation.schema}.{self._relation.table}.{column.name}"


def _numeric_arrow_type(typmod: int) -> pa.DataType:
    precision_scale = numeric_precision_scale(typmod)
    if precision_scale is None:
        # Unconstrained numeric has no fixed scale: its exact decimal text is kept.
        return pa.string()
    precision, scale = precision_scale
    if scale < 0 or scale > precision:
        return pa.string()
    if precision <= _DECIMAL128_MAX_PRECISION:
        return pa.decimal128(precision, scale)
    if precision <= _DECIMAL256_MAX_PRECISION:
        return pa.decimal256(precision, scale)
    return pa.string()


def plan_table(
    relation: Relation,
    live_columns: Sequence[CatalogColumn],
    types: Mapping[int, CatalogType],
    declared_columns: Sequence[str],
    partition_column: str,
) -> TablePlan:
    """Plan the declared columns against the live table, or raise naming what is wrong."""
    if not live_columns:
        raise ContractError(
            f"table {relation.schema}.{relation.table} does not exist or is not visible to the "
            "connecting role"
        )
    by_name = {c.name: c for c in live_columns}
    missing = [name for name in [*declared_columns, partition_column] if name not in by_name]
    if missing:
        raise ContractError(
            f"{relation.schema}.{relation.table} has no column(s) {', '.join(missing)}; "
            f"its columns are {', '.join(by_name)}"
        )
    planner = Planner(relation, types)
    plans = tuple(planner.plan_column(by_name[name]) for name in declared_columns)
    declared = set(declared_columns) | {partition_column}
    return TablePlan(
        relation=relation,
        columns=plans,
        partition_bound=planner.partition_bound(by_name[partition_column]),
        undeclared_columns=tuple(c.name for c in live_columns if c.name not in declared),
    )
