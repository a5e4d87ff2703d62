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

from etl_assets.lib.table.windows import PartitionWindow


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


WINDOW_ORDINAL = "__etl_assets_window"
"""The column that says which part (window, or pages of one) of a read a row belongs to."""


@dataclass(frozen=True)
class PageRange:
    """Heap pages `[first, end)` of a plain table (`end` None: to the table's end).

    A scan limited to them (a TID range scan) returns their rows in the same order as a
    sequential scan of the whole table does, so consecutive ranges read one after another give
    the rows of one sequential scan.
    """

    first: int
    end: int | None

    def predicate(self) -> sql.Composed:
        """`ctid >= '(first,0)' AND ctid < '(end,0)'` (without the upper bound at the end)."""
        lower = sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({self.first},0)"))
        if self.end is None:
            return sql.Composed([lower])
        upper = sql.SQL("ctid < {}::tid").format(sql.Literal(f"({self.end},0)"))
        return sql.SQL(" AND ").join([lower, upper])


@dataclass(frozen=True)
class ReadPart:
    """One statement branch of a read: a window, or a range of heap pages of one window."""

    ordinal: int
    """The part's place in the read: rows are handed to the writer in this order."""
    position: int
    """The position of the part's window in the load."""
    window: PartitionWindow
    pages: PageRange | None = None


def window_parts(windows: Sequence[PartitionWindow]) -> list[ReadPart]:
    """One part per window, in order."""
    return [ReadPart(position, position, window) for position, window in enumerate(windows)]


def select_windows(
    relation: Relation,
    select_list: Sequence[sql.Composable],
    partition_column: str,
    parts: Sequence[ReadPart],
    kind: BoundKind,
) -> str:
    """One statement reading several parts in order, each row tagged with its part's ordinal.

    A `UNION ALL` of one read per part (an index range, or a range of heap pages): Postgres
    runs the branches in order (the reader disables parallel plans), so rows arrive grouped by
    part without any sort.
    """
    branches = [
        sql.SQL("SELECT {ordinal} AS {alias}, {columns} FROM {relation} WHERE {predicate}").format(
            ordinal=sql.Literal(part.ordinal),
            alias=sql.Identifier(WINDOW_ORDINAL),
            columns=sql.SQL(", ").join(select_list),
            relation=relation.identifier(),
            predicate=part_predicate(partition_column, part, kind),
        )
        for part in parts
    ]
    return render(sql.SQL(" UNION ALL ").join(branches))


def part_predicate(partition_column: str, part: ReadPart, kind: BoundKind) -> sql.Composed:
    """The part's window predicate, limited to its heap pages if it has a range of them."""
    window = window_predicate(partition_column, part.window, kind)
    if part.pages is None:
        return window
    return sql.SQL(" AND ").join([window, part.pages.predicate()])


def explain_json(statement: str) -> str:
    """`EXPLAIN (FORMAT JSON)` of a statement, to learn the plan the server would choose."""
    return "EXPLAIN (FORMAT JSON) " + statement


def heap_facts(relation: Relation) -> str:
    """The relation's kind, its heap's size and block size in bytes, the server's version."""
    statement = sql.SQL(
        "SELECT c.relkind::text, pg_relation_size(c.oid),"
        " current_setting('block_size')::int8, current_setting('server_version_num')::int"
        " FROM pg_class c WHERE c.oid = {}::regclass"
    ).format(sql.Literal(relation.identifier().as_string()))
    return render(statement)


def window_stats(
    relation: Relation,
    partition_column: str,
    windows: Sequence[PartitionWindow],
    kind: BoundKind,
    fingerprint: Sequence[sql.Composable],
) -> str:
    """Per window, in order: its position, `count(*)`, and the fingerprint aggregates."""
    branches = [
        sql.SQL(
            "SELECT {ordinal}, count(*), {aggregates} FROM {relation} WHERE {predicate}"
        ).format(
            ordinal=sql.Literal(position),
            aggregates=sql.SQL(", ").join(fingerprint),
            relation=relation.identifier(),
            predicate=window_predicate(partition_column, window, kind),
        )
        for position, window in enumerate(windows)
    ]
    return render(sql.SQL(" UNION ALL ").join(branches) + sql.SQL(" ORDER BY 1"))


def fingerprint_aggregates(
    change_column: str | None, hashed_columns: Sequence[str]
) -> list[sql.Composable]:
    """The newest change (NULL without a change column) and an order-independent row hash.

    The hash is the sum of a 64-bit hash of each row's `hashed_columns` (the primary key, or
    every declared column), so it changes when a row appears, disappears or changes those
    columns, whatever order the rows are in.
    """
    newest: sql.Composable = (
        sql.SQL("max({})::text").format(sql.Identifier(change_column))
        if change_column
        else sql.SQL("NULL::text")
    )
    row = sql.SQL("ROW({})::text").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in hashed_columns)
    )
    digest = sql.SQL("coalesce(sum(hashtextextended({}, 0)::numeric), 0)::text").format(row)
    return [newest, digest]


def count_null_partition_rows(relation: Relation, partition_column: str) -> str:
    """How many rows belong to no window because their partition column is NULL."""
    return render(
        sql.SQL("SELECT count(*) FROM {relation} WHERE {col} IS NULL").format(
            relation=relation.identifier(), col=sql.Identifier(partition_column)
        )
    )


def changed_windows(
    relation: Relation,
    *,
    partition_column: str,
    kind: BoundKind,
    unit: str,
    timezone: str,
    change_column: str,
    since: dt.datetime | None,
    until: dt.datetime,
) -> str:
    """The windows (as local `date_trunc` starts) holding rows changed in `[since, until)`.

    An index on the change column serves the range; the result has one row per touched window
    with the oldest and newest change in it.
    """
    column = sql.Identifier(partition_column)
    local: sql.Composable
    if kind is BoundKind.TIMESTAMPTZ:
        local = sql.SQL("{} AT TIME ZONE {}").format(column, sql.Literal(timezone))
    elif kind is BoundKind.DATE:
        local = sql.SQL("{}::timestamp").format(column)
    else:
        local = column
    change = sql.Identifier(change_column)
    lower = (
        sql.SQL("{} >= {} AND ").format(change, sql.Literal(since))
        if since is not None
        else sql.SQL("")
    )
    return render(
        sql.SQL(
            "SELECT date_trunc({unit}, {local}) AS window_start, min({change}), max({change}),"
            " count(*) FROM {relation} WHERE {lower}{change} < {until} AND {column} IS NOT NULL"
            " GROUP BY 1 ORDER BY 1"
        ).format(
            unit=sql.Literal(unit),
            local=local,
            change=change,
            relation=relation.identifier(),
            lower=lower,
            until=sql.Literal(until),
            column=column,
        )
    )


SOURCE_CLOCK = """
SELECT now(),
       (SELECT min(a.xact_start) FROM pg_catalog.pg_stat_activity a
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
           AND a.backend_type NOT IN ('autovacuum worker', 'walsender')
           AND a.xact_start IS NOT NULL
           AND coalesce(a.application_name, '') NOT LIKE 'raw/%'
           AND coalesce(a.application_name, '') NOT LIKE 'etl-assets %'),
       (SELECT count(*) FROM pg_catalog.pg_stat_activity a
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
           AND a.backend_type = 'client backend' AND a.state IS NULL),
       (SELECT count(*) FROM pg_catalog.pg_prepared_xacts p
         WHERE p.database = current_database())
"""
"""The server's time; the start of the oldest transaction that could still commit rows (any
backend but autovacuum and WAL senders, and other than etl_assets' own read-only sessions); how
many sessions the role cannot see into; and how many prepared transactions wait to commit.

Transaction start, not `backend_xmin`: a transaction gets its xid at its first write, so one
that began before a window's end but has not written yet holds no xmin, while its `now()` (which
stamps its rows) is already in the past."""


def begin_snapshot() -> str:
    """Open the one read-only snapshot that the counts and the reads of a load share."""
    return "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


def set_snapshot(snapshot_id: str) -> sql.Composed:
    """Adopt a snapshot another session exported (must follow BEGIN ... REPEATABLE READ)."""
    return sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id))
