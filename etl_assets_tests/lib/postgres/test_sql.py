import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from psycopg import sql

from etl_assets.lib.postgres.sql import (
    BoundKind,
    PageRange,
    ReadPart,
    Relation,
    begin_snapshot,
    changed_windows,
    count_null_partition_rows,
    fingerprint_aggregates,
    is_unambiguous_wall_time,
    render,
    select_windows,
    window_parts,
    window_predicate,
    window_stats,
)
from etl_assets.lib.table.windows import PartitionWindow

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
DAY = PartitionWindow(
    "2026-10-02", dt.datetime(2026, 10, 2, tzinfo=UTC), dt.datetime(2026, 10, 3, tzinfo=UTC)
)


def test_timestamptz_windows_compare_instants() -> None:
    assert render(window_predicate("created_at", DAY, BoundKind.TIMESTAMPTZ)) == (
        "\"created_at\" >= '2026-10-02 00:00:00+00:00'::timestamptz"
        " AND \"created_at\" < '2026-10-03 00:00:00+00:00'::timestamptz"
    )


def test_timestamp_windows_compare_wall_clock_time_in_the_tables_timezone() -> None:
    window = PartitionWindow(
        "2026-10-25",
        dt.datetime(2026, 10, 25, tzinfo=BERLIN),
        dt.datetime(2026, 10, 26, tzinfo=BERLIN),
    )
    assert render(window_predicate("ts", window, BoundKind.TIMESTAMP)) == (
        "\"ts\" >= '2026-10-25 00:00:00'::timestamp AND \"ts\" < '2026-10-26 00:00:00'::timestamp"
    )


def test_date_windows_compare_dates_and_refuse_hours() -> None:
    assert render(window_predicate("d", DAY, BoundKind.DATE)) == (
        "\"d\" >= '2026-10-02'::date AND \"d\" < '2026-10-03'::date"
    )
    hour = PartitionWindow("h", DAY.start, DAY.start + dt.timedelta(hours=1))
    with pytest.raises(ValueError, match="date column"):
        window_predicate("d", hour, BoundKind.DATE)


def test_the_repeated_hour_of_a_dst_change_cannot_bound_a_naive_column() -> None:
    first_two_am = dt.datetime(2026, 10, 25, 2, tzinfo=BERLIN)
    assert not is_unambiguous_wall_time(first_two_am)
    assert is_unambiguous_wall_time(dt.datetime(2026, 10, 25, 3, tzinfo=BERLIN))
    assert is_unambiguous_wall_time(dt.datetime(2026, 10, 25, 2, tzinfo=UTC))
    window = PartitionWindow("2026-10-25T02", first_two_am, first_two_am + dt.timedelta(hours=1))
    with pytest.raises(ValueError, match="repeats or skips"):
        window_predicate("ts", window, BoundKind.TIMESTAMP)
    # The same window is fine for a timestamptz column.
    assert "timestamptz" in render(window_predicate("ts", window, BoundKind.TIMESTAMPTZ))


@pytest.mark.parametrize(
    ("schema", "table", "column", "quoted"),
    [
        ("sales", "orders", "placed_at", '"sales"."orders"'),
        ('we"ird', "Mixed Case", "a;b--c", '"we""ird"."Mixed Case"'),
        ("données", "tablé; DROP TABLE x; --", "col", '"données"."tablé; DROP TABLE x; --"'),
    ],
)
def test_identifiers_are_always_quoted(schema: str, table: str, column: str, quoted: str) -> None:
    statement = select_windows(
        Relation(schema, table),
        [sql.Identifier(column)],
        column,
        window_parts([DAY]),
        BoundKind.TIMESTAMPTZ,
    )
    assert statement.startswith(
        f'SELECT 0 AS "__etl_assets_window", {sql.Identifier(column).as_string()} FROM {quoted} '
    )
    stats = window_stats(
        Relation(schema, table), column, [DAY], BoundKind.TIMESTAMPTZ, [sql.SQL("1")]
    )
    assert stats.startswith(f"SELECT 0, count(*), 1 FROM {quoted} WHERE ")
    assert count_null_partition_rows(Relation(schema, table), column).endswith(
        f"{sql.Identifier(column).as_string()} IS NULL"
    )


def test_the_snapshot_is_repeatable_read_and_read_only() -> None:
    assert begin_snapshot() == "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


NEXT_DAY = PartitionWindow("2026-10-03", DAY.end, DAY.end + dt.timedelta(days=1))


def test_several_windows_are_one_statement_in_window_order() -> None:
    statement = select_windows(
        Relation("s", "t"),
        [sql.Identifier("a")],
        "ts",
        window_parts([DAY, NEXT_DAY]),
        BoundKind.TIMESTAMPTZ,
    )
    first, second = statement.split(" UNION ALL ")
    assert first.startswith('SELECT 0 AS "__etl_assets_window"')
    assert second.startswith('SELECT 1 AS "__etl_assets_window"')
    assert "'2026-10-03 00:00:00+00:00'::timestamptz" in second


def test_page_ranges_limit_a_window_to_its_heap_pages() -> None:
    parts = [ReadPart(3, 0, DAY, PageRange(0, 128)), ReadPart(4, 0, DAY, PageRange(128, None))]
    first, last = select_windows(
        Relation("s", "t"), [sql.Identifier("a")], "ts", parts, BoundKind.TIMESTAMPTZ
    ).split(" UNION ALL ")
    assert first.startswith('SELECT 3 AS "__etl_assets_window"')
    assert first.endswith("AND ctid >= '(0,0)'::tid AND ctid < '(128,0)'::tid")
    assert last.endswith("< '2026-10-03 00:00:00+00:00'::timestamptz AND ctid >= '(128,0)'::tid")


def test_fingerprints_hash_rows_whatever_their_order() -> None:
    newest, digest = fingerprint_aggregates("updated_at", ["id", "Line No"])
    assert render(newest) == 'max("updated_at")::text'
    assert render(digest) == (
        'coalesce(sum(hashtextextended(ROW("id", "Line No")::text, 0)::numeric), 0)::text'
    )
    assert render(fingerprint_aggregates(None, ["id"])[0]) == "NULL::text"


def test_changes_are_bucketed_by_local_window_start_in_an_index_range() -> None:
    statement = changed_windows(
        Relation("s", "t"),
        partition_column="placed_at",
        kind=BoundKind.TIMESTAMPTZ,
        unit="day",
        timezone="Europe/Berlin",
        change_column="updated_at",
        since=DAY.start,
        until=DAY.end,
    )
    assert "date_trunc('day', \"placed_at\" AT TIME ZONE 'Europe/Berlin')" in statement
    assert "\"updated_at\" >= '2026-10-02 00:00:00+00:00'::timestamptz AND" in statement
    assert "\"updated_at\" < '2026-10-03 00:00:00+00:00'::timestamptz" in statement
