"""What the Postgres catalog says about a table: its columns, their types, its unique indexes.

Read in the load's own snapshot before a row is read; the type plan (`types.py`) is made from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from psycopg import sql

from etl_assets.lib.postgres.sql import Relation, render


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
    fields: tuple[CompositeField, ...] = ()
    """For a composite: its attributes, in order."""


@dataclass(frozen=True)
class CompositeField:
    """One attribute of a composite type."""

    name: str
    type_oid: int
    typmod: int


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
    """`pg_type` rows (with enum labels and composite attributes) for the given type oids."""
    oid_list = sorted(set(oids))
    return render(
        sql.SQL(
            "SELECT t.oid::int8, t.typname::text, t.typtype::text, t.typcategory::text,"
            " t.typelem::int8, t.typbasetype::int8, t.typtypmod::int4,"
            " ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e"
            "       WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder),"
            " ARRAY(SELECT a.attname::text || ':' || a.atttypid::text || ':' || a.atttypmod::text"
            "       FROM pg_catalog.pg_attribute a"
            "       WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped"
            "       ORDER BY a.attnum)"
            " FROM pg_catalog.pg_type t WHERE t.oid::int8 = ANY({oids})"
        ).format(oids=sql.Literal(oid_list))
    )


def unique_indexes_query(relation: Relation) -> str:
    """Names and column lists of the table's unique, non-partial, non-expression indexes."""
    return render(
        sql.SQL(
            "SELECT ic.relname::text,"
            " ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)"
            "       JOIN pg_catalog.pg_attribute a"
            "         ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n)"
            " FROM pg_catalog.pg_index i"
            " JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid"
            " JOIN pg_catalog.pg_class c ON c.oid = i.indrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = {schema} AND c.relname = {table}"
            " AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL"
        ).format(schema=sql.Literal(relation.schema), table=sql.Literal(relation.table))
    )


def catalog_type_from_row(row: Sequence[object]) -> CatalogType:
    """Build a `CatalogType` from a row of `types_query`."""
    oid, name, kind, category, element_oid, base_oid, base_typmod, labels, fields = row
    parsed_fields: list[CompositeField] = []
    for entry in _as_sequence(fields):
        field_name, type_oid, typmod = str(entry).rsplit(":", 2)
        parsed_fields.append(CompositeField(field_name, int(type_oid), int(typmod)))
    return CatalogType(
        oid=int(str(oid)),
        name=str(name),
        kind=str(kind),
        category=str(category),
        element_oid=int(str(element_oid)),
        base_oid=int(str(base_oid)),
        base_typmod=int(str(base_typmod)),
        enum_labels=tuple(str(label) for label in _as_sequence(labels)),
        fields=tuple(parsed_fields),
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


def referenced_type_oids(types: Iterable[CatalogType]) -> set[int]:
    """Type oids that the given types refer to (domain bases, array elements, composite fields)."""
    referenced: set[int] = set()
    for catalog_type in types:
        if catalog_type.kind == "d":
            referenced.add(catalog_type.base_oid)
        if catalog_type.element_oid:
            referenced.add(catalog_type.element_oid)
        referenced.update(f.type_oid for f in catalog_type.fields)
    return referenced


def _as_sequence(value: object) -> Sequence[object]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return value
    raise TypeError(f"expected a list, got {type(value).__name__}")


@dataclass(frozen=True)
class TableCatalog:
    """The catalog's description of one table."""

    relation: Relation
    columns: Sequence[CatalogColumn]
    types: Mapping[int, CatalogType]
    unique_indexes: Sequence[tuple[str, Sequence[str]]]
