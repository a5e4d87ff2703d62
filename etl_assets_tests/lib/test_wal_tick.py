"""One tick of a WAL sensor: exactly the touched windows, drained over ticks, repeatable."""

import datetime as dt

import pytest

from etl_assets.lib.postgres.wal import ChangeKind, WalChange, WalRelation
from etl_assets.lib.wal_tick import (
    TouchedWindow,
    WalCursor,
    plan_wal_tick,
    summarize_changes,
)

ORDERS = WalRelation(1, "shop", "orders", ("id", "day"), "f")
NOTES = WalRelation(2, "shop", "notes", ("id", "day"), "f")


def change(
    kind: ChangeKind,
    old: str | None,
    new: str | None,
    relation: WalRelation = ORDERS,
    lsn: int = 100,
) -> WalChange:
    return WalChange(
        kind,
        relation,
        None if old is None else ("1", old),
        None if new is None else ("1", new),
        lsn,
    )


def days(change: WalChange) -> list[str]:
    return [d for d in (change.value("day", change.old), change.value("day", change.new)) if d]


def test_every_window_a_change_touches_is_named_once_in_order() -> None:
    changes = [
        change(ChangeKind.UPDATE, "2026-10-03", "2026-10-01"),  # moved: both windows
        change(ChangeKind.INSERT, None, "2026-10-01", lsn=300),
        change(ChangeKind.DELETE, "2025-12-06", None, lsn=200),
        change(ChangeKind.INSERT, None, "2026-10-09", NOTES),  # not watched
        change(ChangeKind.TRUNCATE, None, None),
    ]
    summary = summarize_changes(iter(changes), {"shop.orders": days})  # one pass
    assert summary.touched == [
        TouchedWindow("shop.orders", "2025-12-06", 200),
        TouchedWindow("shop.orders", "2026-10-01", 300),
        TouchedWindow("shop.orders", "2026-10-03", 100),
    ]
    assert summary.truncated == {"shop.orders": 100}


def test_a_bulk_change_is_drained_over_ticks_without_skipping_or_repeating() -> None:
    touched = [TouchedWindow("shop.orders", f"w{i:04d}", 6_000) for i in range(1_000)]
    cursor = WalCursor(confirmed=50)
    requested: list[str] = []
    run_keys: set[str] = set()
    ticks = 0
    while True:
        tick = plan_wal_tick(cursor, touched, 7_000, max_requests=100)
        ticks += 1
        requested += [r.key for r in tick.requests]
        run_keys |= {r.run_key for r in tick.requests}
        # Until the range is drained, the slot stays where it was: the range is read again.
        assert tick.cursor.confirmed == (50 if tick.cursor.range_end else 7_000)
        cursor = tick.cursor
        if cursor.range_end is None:
            break
    assert ticks == 10
    assert requested == [w.key for w in touched]
    assert len(run_keys) == 1_000
    assert cursor == WalCursor(confirmed=7_000)


def test_a_repeated_tick_asks_for_the_same_runs() -> None:
    touched = [TouchedWindow("shop.orders", "2026-10-01", 18)]
    first = plan_wal_tick(WalCursor(confirmed=10), touched, 20)
    again = plan_wal_tick(WalCursor(confirmed=10), touched, 20)
    assert first == again
    assert [r.run_key for r in first.requests] == ["wal:shop.orders:2026-10-01:0/12"]
    # Read again with later WAL that touches other windows only: the same run for this one.
    later = plan_wal_tick(
        WalCursor(confirmed=10), [*touched, TouchedWindow("shop.orders", "2026-10-02", 25)], 30
    )
    assert later.requests[0] == first.requests[0]
    quiet = plan_wal_tick(first.cursor, [], None)
    assert quiet.requests == ()
    assert quiet.cursor == first.cursor


def test_a_range_being_drained_must_be_read_again_whole() -> None:
    cursor = WalCursor(confirmed=10, range_end=20, requested=100)
    with pytest.raises(ValueError, match="draining the changes up to 0/14"):
        plan_wal_tick(cursor, [], 30)


def test_the_cursor_round_trips_through_its_json() -> None:
    closed = {"shop.orders": dt.datetime(2026, 10, 5, tzinfo=dt.UTC)}
    for cursor in (WalCursor(), WalCursor(5 << 32 | 7), WalCursor(1, 2, 300, closed)):
        assert WalCursor.from_json(cursor.to_json()) == cursor
    assert WalCursor.from_json(None) == WalCursor()
