import datetime as dt

import pytest

from etl_assets.lib.incremental import (
    ChangeCursor,
    ChangedWindow,
    Fingerprint,
    SourceClock,
    WindowBounds,
    plan_tick,
    reconcile,
)
from etl_assets.lib.table.windows import parse_duration

UTC = dt.UTC
T0 = dt.datetime(2026, 10, 5, 0, 0, tzinfo=UTC)
DAYS = [
    WindowBounds(
        f"2026-10-0{d}",
        dt.datetime(2026, 10, d, tzinfo=UTC),
        dt.datetime(2026, 10, d + 1, tzinfo=UTC),
    )
    for d in range(1, 6)
]
LAG = dt.timedelta(minutes=10)


def clock(now: dt.datetime, oldest: dt.datetime | None = None, hidden: int = 0) -> SourceClock:
    return SourceClock(now=now, oldest_open_transaction=oldest, hidden_sessions=hidden)


def change(
    key: str, oldest: dt.datetime, newest: dt.datetime | None = None, rows: int = 1
) -> ChangedWindow:
    return ChangedWindow(key, oldest, newest or oldest, rows)


def test_the_first_tick_starts_watching_and_requests_no_history() -> None:
    tick = plan_tick(ChangeCursor(), clock(T0 + dt.timedelta(hours=1)), LAG, DAYS, [])
    assert tick.requests == ()
    assert tick.cursor.watermark == T0 + dt.timedelta(hours=1)
    assert tick.cursor.closed_through == T0  # 2026-10-04 ended at T0 and is closed


def test_a_window_is_requested_once_when_it_closes() -> None:
    cursor = ChangeCursor(watermark=T0 - dt.timedelta(hours=1), closed_through=DAYS[2].end)
    early = plan_tick(cursor, clock(T0 + dt.timedelta(minutes=5)), LAG, DAYS, [])
    assert early.requests == ()  # within the settle lag
    tick = plan_tick(cursor, clock(T0 + dt.timedelta(minutes=11)), LAG, DAYS, [])
    assert [(r.key, r.reason, r.run_key) for r in tick.requests] == [
        ("2026-10-04", "closed", "2026-10-04:closed")
    ]
    assert tick.cursor.closed_through == T0
    again = plan_tick(tick.cursor, clock(T0 + dt.timedelta(minutes=12)), LAG, DAYS, [])
    assert again.requests == ()


def test_an_open_transaction_from_before_the_end_keeps_the_window_open() -> None:
    cursor = ChangeCursor(watermark=T0 - dt.timedelta(hours=1), closed_through=DAYS[2].end)
    held = clock(T0 + dt.timedelta(hours=2), oldest=T0 - dt.timedelta(minutes=1))
    tick = plan_tick(cursor, held, LAG, DAYS, [])
    assert tick.requests == ()
    assert tick.cursor.watermark == T0 - dt.timedelta(minutes=1)  # no further than the holdout
    released = plan_tick(tick.cursor, clock(T0 + dt.timedelta(hours=2)), LAG, DAYS, [])
    assert [r.key for r in released.requests] == ["2026-10-04"]


def test_changes_in_an_open_window_wait_and_late_changes_to_closed_windows_reload() -> None:
    cursor = ChangeCursor(watermark=T0, closed_through=T0)
    now = T0 + dt.timedelta(hours=3)
    changes = [
        change("2026-10-02", T0 + dt.timedelta(hours=1)),
        change("2026-10-05", T0 + dt.timedelta(hours=2)),  # the window still open
    ]
    tick = plan_tick(cursor, clock(now), LAG, DAYS, changes)
    assert [(r.key, r.reason) for r in tick.requests] == [("2026-10-02", "changed")]
    assert (
        tick.requests[0].run_key
        == f"2026-10-02:changed:{(T0 + dt.timedelta(hours=1)).isoformat()}:1"
    )
    assert tick.cursor.watermark == now


def test_run_keys_change_when_the_data_changes_again() -> None:
    cursor = ChangeCursor(watermark=T0, closed_through=T0)
    first = plan_tick(
        cursor,
        clock(T0 + dt.timedelta(hours=1)),
        LAG,
        DAYS,
        [change("2026-10-02", T0 + dt.timedelta(minutes=5))],
    )
    second = plan_tick(
        first.cursor,
        clock(T0 + dt.timedelta(hours=2)),
        LAG,
        DAYS,
        [change("2026-10-02", T0 + dt.timedelta(hours=1, minutes=5))],
    )
    assert first.requests[0].key == second.requests[0].key == "2026-10-02"
    assert first.requests[0].run_key != second.requests[0].run_key


def test_more_changed_windows_than_a_tick_may_request_are_requested_over_several_ticks() -> None:
    # One UPDATE stamps every row with the same now(): the tie on the change column is broken
    # by the partition key, and each window is requested exactly once.
    cursor = ChangeCursor(watermark=T0, closed_through=T0)
    stamp = T0 + dt.timedelta(minutes=1)
    bulk = [change(f"2026-10-0{d}", stamp, rows=50) for d in (4, 2, 1, 3)]
    first_safe = T0 + dt.timedelta(hours=1)
    first = plan_tick(cursor, clock(first_safe), LAG, DAYS, bulk, max_requests=3)
    assert [r.key for r in first.requests] == ["2026-10-01", "2026-10-02", "2026-10-03"]
    assert first.cursor.watermark == T0  # the range stays until its backlog is requested
    assert first.cursor.backlog_until == first_safe
    assert first.cursor.scan_until == first_safe
    assert first.cursor.requested_through is not None
    assert first.cursor.requested_through.key == "2026-10-03"
    assert "the next tick carries on" in first.notes[0]
    assert ChangeCursor.from_json(first.cursor.to_json()) == first.cursor

    # The next tick reads the same range (the sensor scans up to `scan_until`).
    second = plan_tick(
        first.cursor, clock(T0 + dt.timedelta(hours=2)), LAG, DAYS, bulk, max_requests=3
    )
    assert [r.key for r in second.requests] == ["2026-10-04"]
    assert second.cursor == ChangeCursor(watermark=first_safe, closed_through=T0)

    # Only what changed after the backlog's range is requested again, with a new run key.
    again = change("2026-10-02", T0 + dt.timedelta(hours=1, minutes=30))
    third = plan_tick(second.cursor, clock(T0 + dt.timedelta(hours=3)), LAG, DAYS, [again])
    assert [r.key for r in third.requests] == ["2026-10-02"]
    assert third.requests[0].run_key != first.requests[1].run_key
    assert third.cursor.watermark == T0 + dt.timedelta(hours=3)


def test_a_backlog_of_closed_windows_is_requested_in_order_without_skipping() -> None:
    cursor = ChangeCursor(watermark=T0, closed_through=DAYS[0].start)
    now = clock(T0 + dt.timedelta(hours=1))
    first = plan_tick(cursor, now, LAG, DAYS, [], max_requests=3)
    assert [r.key for r in first.requests] == ["2026-10-01", "2026-10-02", "2026-10-03"]
    assert first.cursor.closed_through == DAYS[2].end
    second = plan_tick(first.cursor, now, LAG, DAYS, [], max_requests=3)
    assert [r.key for r in second.requests] == ["2026-10-04"]


def test_closed_windows_fill_a_tick_before_changes_which_wait_for_the_next() -> None:
    cursor = ChangeCursor(watermark=T0, closed_through=DAYS[1].end)
    late = change("2026-10-01", T0 + dt.timedelta(minutes=5))
    now = clock(T0 + dt.timedelta(hours=1))
    first = plan_tick(cursor, now, LAG, DAYS, [late], max_requests=2)
    assert [(r.key, r.reason) for r in first.requests] == [
        ("2026-10-03", "closed"),
        ("2026-10-04", "closed"),
    ]
    assert first.cursor.backlog_until == now.safe_time
    assert first.cursor.requested_through is None
    second = plan_tick(first.cursor, now, LAG, DAYS, [late], max_requests=2)
    assert [(r.key, r.reason) for r in second.requests] == [("2026-10-01", "changed")]
    assert second.cursor.backlog_until is None


def test_sessions_the_role_cannot_see_stop_the_tick() -> None:
    cursor = ChangeCursor(watermark=T0, closed_through=T0)
    tick = plan_tick(cursor, clock(T0 + dt.timedelta(days=1), hidden=2), LAG, DAYS, [])
    assert tick.requests == ()
    assert tick.cursor == cursor
    assert "grant pg_read_all_stats" in tick.notes[0]


def test_prepared_transactions_stop_the_tick() -> None:
    cursor = ChangeCursor(watermark=T0, closed_through=T0)
    prepared = SourceClock(T0 + dt.timedelta(days=1), None, prepared_transactions=1)
    tick = plan_tick(cursor, prepared, LAG, DAYS, [change("2026-10-02", T0)])
    assert tick.requests == ()
    assert tick.cursor == cursor
    assert "pg_prepared_xacts" in tick.notes[0]


def test_the_cursor_survives_json() -> None:
    cursor = ChangeCursor(watermark=T0, closed_through=T0 - dt.timedelta(days=1))
    assert ChangeCursor.from_json(cursor.to_json()) == cursor
    assert ChangeCursor.from_json(None) == ChangeCursor()
    # Cursors stored before the backlog fields existed still load.
    stored = '{"closed_through": null, "watermark": "2026-10-05T00:00:00+00:00"}'
    assert ChangeCursor.from_json(stored) == ChangeCursor(watermark=T0)


def test_reconcile_reports_every_window_whose_fingerprint_moved() -> None:
    same = Fingerprint(10, "2026-10-01 10:00:00+00", "123")
    deleted = Fingerprint(9, "2026-10-01 10:00:00+00", "99")
    drifts = reconcile(
        {"a": same, "b": deleted, "c": same}, {"a": same.text, "b": same.text, "c": None}
    )
    assert [(d.key, d.current) for d in drifts] == [("b", deleted.text), ("c", same.text)]
    assert (
        same.version == Fingerprint(10, "2026-10-01 10:00:00+00", "123").version != deleted.version
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10m", 600), ("2h", 7200), ("1.5d", 129600)]
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_bad_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("ten minutes")
