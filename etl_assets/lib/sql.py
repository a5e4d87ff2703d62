"""SQL for reading one table's windows, composed with `psycopg.sql` so identifiers are quoted.

Every statement is rendered to text with its values as quoted literals. The window bounds must
be literals, not bind parameters: the ADBC driver streams a query through `COPY ... TO STDOUT`
only when it has no parameters; with parameters it buffers the whole result in memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from psycopg import sql

from etl_assets.lib.windows import PartitionWindow


class BoundKind(StrEnum):
    """How a partition column compares with a window's bounds."""

    TIMESTAMPTZ = "timestamptz"
    """An instant: compared with the bounds as instants (their offsets included)."""
    TIMESTAMP = "timestamp"
    """A wall-clock time without zone: read as local time in the table's timezone."""
    DATE = "date"
    """A calendar date in the table's timezone; only for daily and coarser grains."""


@dataclass(frozen=True)
class Relation:
    """A schema-qualified table or view."""

    schema: str
    table: str

    def identifier(self) -> sql.Identifier:
        """The quoted `"schema"."table"`."""
        return sql.Identifier(self.schema, self.table)


def render(statement: sql.Composable) -> str:
    """The statement as text, literals quoted by psycopg's default adapters."""
    return statement.as_string()


def bound_literals(window: PartitionWindow, kind: BoundKind) -> tuple[sql.Literal, sql.Literal]:
    """The window's `[start, end)` as literals of the partition column's type."""
    start: dt.datetime | dt.date
    end: dt.datetime | dt.date
    if kind is BoundKind.TIMESTAMPTZ:
        start, end = window.start, window.end
    elif kind is BoundKind.TIMESTAMP:
        for bound in (window.start, window.end):
            if not is_unambiguous_wall_time(bound):
                raise ValueError(
                    f"window {window.key!r} starts or ends at {bound.isoformat()}, a wall-clock "
                    "time that a daylight-saving change repeats or skips, so a timestamp "
                    "without time zone cannot say which side a row is on; use a timestamptz "
                    "partition column, a daily or coarser grain, or the UTC timezone"
                )
        start, end = window.start.replace(tzinfo=None), window.end.replace(tzinfo=None)
    else:
        if any(
            (b.hour, b.minute, b.second, b.microsecond) != (0, 0, 0, 0)
            for b in (window.start, window.end)
        ):
            raise ValueError(
                f"window {window.key!r} does not start and end at midnight, so a date column "
                "cannot express it; use a daily or coarser grain"
            )
        start, end = window.start.date(), window.end.date()
    return sql.Literal(start), sql.Literal(end)


def is_unambiguous_wall_time(moment: dt.datetime) -> bool:
    """Whether `moment`'s local wall-clock time occurs exactly once in its timezone."""
    wall = moment.replace(tzinfo=None)
    offsets = {wall.replace(fold=fold).replace(tzinfo=moment.tzinfo).utcoffset() for fold in (0, 1)}
    return len(offsets) == 1


def window_predicate(column: str, window: PartitionWindow, kind: BoundKind) -> sql.Composed:
    """`column >= start AND column < end`: adjacent windows never share a row, and tile time."""
    start, end = bound_literals(window, kind)
    return sql.SQL("{col} >= {start} AND {col} < {end}").format(
        col=sql.Identifier(column), start=start, end=end
    )


def select_window(
    relation: Relation,
    select_list: Sequence[sql.Composable],
    partition_column: str,
    window: PartitionWindow,
    kind: BoundKind,
) -> str:
    """The statement that reads one window: only the planned columns, in the planned order."""
    return render(
        sql.SQL("SELECT {columns} FROM {relation} WHERE {predicate}").format(
            columns=sql.SQL(", ").join(select_list),
            relation=relation.identifier(),
            predicate=window_predicate(partition_column, window, kind),
        )
    )


def count_window(
    relation: Relation, partition_column: str, window: PartitionWindow, kind: BoundKind
) -> str:
    """`count(*)` of one window; run in the read's snapshot it is the exact expected row count."""
    return render(
        sql.SQL("SELECT count(*) FROM {relation} WHERE {predicate}").format(
            relation=relation.identifier(),
            predicate=window_predicate(partition_column, window, kind),
        )
    )


def count_null_partition_rows(relation: Relation, partition_column: str) -> str:
    """How many rows belong to no window because their partition column is NULL."""
    return render(
        sql.SQL("SELECT count(*) FROM {relation} WHERE {col} IS NULL").format(
            relation=relation.identifier(), col=sql.Identifier(partition_column)
        )
    )


def begin_snapshot() -> str:
    """Open the one read-only snapshot that the counts and the reads of a load share."""
    return "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
