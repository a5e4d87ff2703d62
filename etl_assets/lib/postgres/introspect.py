"""What `etl-assets introspect` reports about a database.

Tables, columns with their planned Parquet types, and a ready-to-paste YAML entry (the
contract) for one table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
from psycopg import sql

from etl_assets.lib.errors import UnsupportedColumnError
from etl_assets.lib.postgres.catalog import CatalogColumn, CatalogType
from etl_assets.lib.postgres.sql import Relation, render
from etl_assets.lib.postgres.types import Planner
from etl_assets.lib.table.spec import Representation
from etl_assets.lib.table.windows import Grain

TABLES_QUERY = """
SELECT n.nspname::text, c.relname::text, c.relkind::text, c.reltuples::int8
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY 1, 2
"""

_PARTITION_TYPES = {"timestamptz": 0, "timestamp": 1, "date": 2}
_RELATION_KINDS = {"r": "table", "p": "partitioned", "v": "view", "m": "matview", "f": "foreign"}
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def relation_kind(relkind: str) -> str:
    """`pg_class.relkind` in words."""
    return _RELATION_KINDS.get(relkind, relkind)


def describe_estimate(relkind: str, reltuples: int) -> str:
    """The planner's row estimate of a relation, as the listing shows it.

    Postgres 14 and later keep -1 in `reltuples` until the relation is first vacuumed or
    analyzed: that is "unknown", not 0. A view stores no rows and has no estimate.
    """
    if relkind == "v":
        return "n/a (view)"
    if reltuples < 0:
        return "unknown (not analyzed)"
    return f"{reltuples:,}"


def primary_key_query(relation: Relation) -> str:
    """The table's primary key columns, in key order."""
    return render(
        sql.SQL(
            "SELECT a.attname::text FROM pg_catalog.pg_index i"
            " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true"
            " JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
            " WHERE i.indisprimary AND i.indrelid = to_regclass({name})"
            " ORDER BY k.n"
        ).format(name=sql.Literal(_regclass_text(relation)))
    )


def indexed_columns_query(relation: Relation) -> str:
    """Columns that lead an index (window reads on them can use it)."""
    return render(
        sql.SQL(
            "SELECT DISTINCT a.attname::text FROM pg_catalog.pg_index i"
            " JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
            " WHERE i.indrelid = to_regclass({name})"
        ).format(name=sql.Literal(_regclass_text(relation)))
    )


def _regclass_text(relation: Relation) -> str:
    return sql.Identifier(relation.schema, relation.table).as_string()


@dataclass(frozen=True)
class ColumnReport:
    """One column as introspect shows it."""

    name: str
    pg_type: str
    nullable: bool
    parquet: str
    """The planned Arrow/Parquet type, or why the column needs `as: text`."""
    needs_text: bool


@dataclass(frozen=True)
class TableReport:
    """One table as introspect shows it."""

    relation: Relation
    columns: tuple[ColumnReport, ...]
    primary_key: tuple[str, ...]
    partition_candidates: tuple[str, ...]


def report_table(
    relation: Relation,
    columns: Sequence[CatalogColumn],
    types: dict[int, CatalogType],
    primary_key: Sequence[str],
    indexed: Sequence[str],
) -> TableReport:
    """Plan every column as the reader would, and rank the partition-column candidates.

    Candidates are the timestamptz, timestamp and date columns: NOT NULL ones first (a row
    whose partition column is NULL belongs to no window), then those leading an index (a
    window's read can use it), then timestamptz before timestamp before date.
    """
    planner = Planner(relation, types)
    reports: list[ColumnReport] = []
    candidates: list[tuple[int, int, int, str]] = []
    for column in columns:
        try:
            plan = planner.plan_column(column)
            parquet, needs_text = _describe(plan.arrow_type), False
            if plan.hazards:
                parquet += " (refuses " + "; ".join(h.values for h in plan.hazards) + ")"
        except UnsupportedColumnError:
            parquet, needs_text = "no exact mapping: declared `as: text`", True
        reports.append(
            ColumnReport(
                column.name, column.declared_type, not column.not_null, parquet, needs_text
            )
        )
        base, _ = planner.resolve_domain(column.type_oid, column.typmod)
        if base.name in _PARTITION_TYPES:
            candidates.append(
                (
                    0 if column.not_null else 1,
                    0 if column.name in indexed else 1,
                    _PARTITION_TYPES[base.name],
                    column.name,
                )
            )
    return TableReport(
        relation=relation,
        columns=tuple(reports),
        primary_key=tuple(primary_key),
        partition_candidates=tuple(name for *_, name in sorted(candidates)),
    )


def _describe(arrow_type: pa.DataType) -> str:
    if arrow_type == pa.uuid():
        return "UUID (fixed_size_binary(16))"
    if isinstance(arrow_type, pa.JsonType):
        return "JSON (string)"
    return str(arrow_type)


def yaml_scalar(value: str) -> str:
    """`value` as a YAML scalar: plain when safe, else a JSON (= YAML double-quoted) string."""
    if _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value, ensure_ascii=False)


def yaml_entry(
    report: TableReport,
    *,
    columns: Sequence[str] | None = None,
    partition_column: str | None = None,
    grain: Grain = Grain.DAILY,
    start: str = "2026-01-01",
    timezone: str = "UTC",
) -> str:
    """A `tables:` entry declaring the table, ready to paste into a defs.yaml."""
    chosen = [c for c in report.columns if columns is None or c.name in columns]
    missing = sorted(set(columns or ()) - {c.name for c in report.columns})
    if missing:
        name = f"{report.relation.schema}.{report.relation.table}"
        raise ValueError(f"{name} has no column(s) {', '.join(missing)}")
    partition = partition_column or (
        report.partition_candidates[0] if report.partition_candidates else None
    )
    if partition is None:
        raise ValueError(
            f"{report.relation.schema}.{report.relation.table} has no timestamptz, timestamp or "
            "date column to partition by"
        )
    key = list(report.primary_key) or [chosen[0].name]
    lines = [
        f"- schema: {yaml_scalar(report.relation.schema)}",
        f"  table: {yaml_scalar(report.relation.table)}",
        f"  partition_column: {yaml_scalar(partition)}",
        f"  grain: {grain.value}",
        f"  start: {json.dumps(start)}",
        f"  timezone: {yaml_scalar(timezone)}",
        f"  primary_key: [{', '.join(yaml_scalar(k) for k in key)}]",
        "  columns:",
    ]
    if not report.primary_key:
        lines.insert(6, "  # no PRIMARY KEY constraint: check that this column identifies a row")
    names = {c.name for c in chosen}
    if grain.hive_name in names:
        # The lake's <name>=<key> directories must not share a name with a column.
        hive = next(
            n
            for n in (f"{grain.hive_name}_partition", f"{grain.hive_name}_key", "window_key")
            if n not in names
        )
        lines.insert(4, f"  partition_name: {hive}")
    for column in chosen:
        fields = [
            f"name: {yaml_scalar(column.name)}",
            f"type: {yaml_scalar(column.pg_type)}",
            f"nullable: {'true' if column.nullable else 'false'}",
        ]
        if column.needs_text:
            fields.append(f"as: {Representation.TEXT.value}")
        lines.append(f"    - {{{', '.join(fields)}}}")
    return "\n".join(lines) + "\n"
