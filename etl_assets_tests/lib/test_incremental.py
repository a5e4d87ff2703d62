import datetime as dt

import pytest

from etl_assets.lib.incremental import (
    ChangeCursor,
    ChangedWindow,
    Fingerprint,
    SourceClock,
    WindowBounds,
    parse_duration,
    plan_tick,
    reconcile,
)

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


def test_the_watermark_stops_before_changes_a_tick_could_not_request() -> None:
    cursor = ChangeCursor(watermark=T0, closed_through=T0)
    changes = [
        change("2026-10-01", T0 + dt.timedelta(minutes=1)),
        change("2026-10-02", T0 + dt.timedelta(minutes=2)),
        change("2026-10-03", T0 + dt.timedelta(minutes=3)),
    ]
    tick = plan_tick(cursor, clock(T0 + dt.timedelta(hours=1)), LAG, DAYS, changes, max_requests=2)
    assert [r.key for r in tick.requests] == ["2026-10-01", "2026-10-02"]
    assert tick.cursor.watermark == T0 + dt.timedelta(minutes=3)


def test_sessions_the_role_cannot_see_stop_the_tick() -> None:
    cursor = ChangeCursor(watermark=T0, closed_through=T0)
    tick = plan_tick(cursor, clock(T0 + dt.timedelta(days=1), hidden=2), LAG, DAYS, [])
    assert tick.requests == ()
    assert tick.cursor == cursor
    assert "grant pg_read_all_stats" in tick.notes[0]


def test_the_cursor_survives_json() -> None:
    cursor = ChangeCursor(watermark=T0, closed_through=T0 - dt.timedelta(days=1))
    assert ChangeCursor.from_json(cursor.to_json()) == cursor
    assert ChangeCursor.from_json(None) == ChangeCursor()


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
