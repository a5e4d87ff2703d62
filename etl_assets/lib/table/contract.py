"""The column contract of a table: declared columns compared with the live catalog.

A declared type is compared with the live catalog's `format_type()` output before a row is
read. Declarations may use Postgres' common aliases (`int8`, `timestamptz`, `varchar(20)`, ...);
both sides are brought to `format_type()`'s canonical spelling first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from etl_assets.lib.table.spec import ColumnSpec

_ALIASES = {
    "int": "integer",
    "int4": "integer",
    "int2": "smallint",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "float": "double precision",
    "bool": "boolean",
    "decimal": "numeric",
    "varchar": "character varying",
    "char": "character",
    "bpchar": "character",
    "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "timetz": "time with time zone",
    "time": "time without time zone",
    "varbit": "bit varying",
}
_TYPE = re.compile(
    r"^(?P<base>[^\[(]+?)\s*(?P<args>\([^)]*\))?\s*(?P<zone>with(?:out)? time zone)?"
    r"\s*(?P<array>(\[\s*\])*)$"
)


def canonical_type(declared: str) -> str:
    """A type name in `format_type()`'s spelling: `timestamptz` -> `timestamp with time zone`."""
    text = " ".join(declared.strip().lower().split())
    match = _TYPE.match(text)
    if match is None:
        return text
    base = match["base"].strip()
    args = (match["args"] or "").replace(" ", "")
    zone = match["zone"]
    dimensions = (match["array"] or "").count("[")
    if zone:
        base = f"{base} {zone}"
    base = _ALIASES.get(base, base)
    if args and base in (
        "timestamp with time zone",
        "timestamp without time zone",
        "time with time zone",
        "time without time zone",
    ):
        # format_type writes the precision after the base word: timestamp(3) with time zone
        word, _, rest = base.partition(" ")
        return f"{word}{args} {rest}" + "[]" * dimensions
    return f"{base}{args}" + "[]" * dimensions


@dataclass(frozen=True)
class LiveColumn:
    """What the catalog says about one column, for the contract comparison."""

    name: str
    pg_type: str
    nullable: bool


def contract_differences(declared: Sequence[ColumnSpec], live: Sequence[LiveColumn]) -> list[str]:
    """Each way the live table breaks the declared contract, as a readable line (empty: none).

    A declared column missing from the table, a type that differs and a nullability that
    differs each break the contract. Columns the table has but the contract does not declare
    are not differences: they are never read.
    """
    by_name = {c.name: c for c in live}
    declared_names = {c.name for c in declared}
    undeclared = [c.name for c in live if c.name not in declared_names]
    lines: list[str] = []
    for column in declared:
        current = by_name.get(column.name)
        if current is None:
            hint = f" (renamed? undeclared columns: {', '.join(undeclared)})" if undeclared else ""
            lines.append(f"{column.name}: declared, but the table has no such column{hint}")
            continue
        if column.pg_type is not None and canonical_type(column.pg_type) != canonical_type(
            current.pg_type
        ):
            lines.append(
                f"{column.name}: declared type {column.pg_type}, live type {current.pg_type}"
            )
        if column.nullable is not None and column.nullable != current.nullable:
            lines.append(
                f"{column.name}: declared {_nullability(column.nullable)}, "
                f"live {_nullability(current.nullable)}"
            )
    return lines


def _nullability(nullable: bool) -> str:
    return "nullable" if nullable else "NOT NULL"
