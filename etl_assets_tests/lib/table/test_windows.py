import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from etl_assets.lib.table.windows import (
    Grain,
    PartitionWindow,
    grain_for_cron,
    parse_timezone,
    parse_window_start,
)


@pytest.mark.parametrize(
    ("grain", "key_format", "hive_name", "cron"),
    [
        (Grain.HOURLY, "%Y-%m-%dT%H", "hour", "0 * * * *"),
        (Grain.DAILY, "%Y-%m-%d", "day", "0 0 * * *"),
        (Grain.WEEKLY, "%Y-%m-%d", "week", "0 0 * * 1"),
        (Grain.MONTHLY, "%Y-%m", "month", "0 0 1 * *"),
    ],
)
def test_each_grain_has_a_key_format_hive_name_and_cron(
    grain: Grain, key_format: str, hive_name: str, cron: str
) -> None:
    assert (grain.key_format, grain.hive_name, grain.cron_schedule) == (key_format, hive_name, cron)
    assert grain_for_cron(cron) is grain
    assert ":" not in dt.datetime(2026, 1, 2, 3).strftime(grain.key_format)


def test_an_unknown_cron_has_no_grain() -> None:
    assert grain_for_cron("*/5 * * * *") is None


@pytest.mark.parametrize(
    ("text", "grain", "expected"),
    [
        ("2026-10-01", Grain.DAILY, dt.datetime(2026, 10, 1)),
        ("2026-10-01T05:00", Grain.HOURLY, dt.datetime(2026, 10, 1, 5)),
        ("2026-09-28", Grain.WEEKLY, dt.datetime(2026, 9, 28)),
        ("2026-10-01", Grain.MONTHLY, dt.datetime(2026, 10, 1)),
    ],
)
def test_window_starts_on_a_boundary_parse(text: str, grain: Grain, expected: dt.datetime) -> None:
    assert parse_window_start(text, grain) == expected


@pytest.mark.parametrize(
    ("text", "grain", "message"),
    [
        ("2026-10-01T05:30", Grain.HOURLY, "a whole hour"),
        ("2026-10-01T05:00", Grain.DAILY, "midnight"),
        ("2026-10-01", Grain.WEEKLY, "Monday"),
        ("2026-10-02", Grain.MONTHLY, "1st of a month"),
        ("2026-10-01T00:00+02:00", Grain.DAILY, "UTC offset"),
        ("October 1st", Grain.DAILY, "not an ISO date"),
    ],
)
def test_misaligned_or_malformed_starts_are_refused(text: str, grain: Grain, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window_start(text, grain)


def test_timezones_are_checked() -> None:
    assert parse_timezone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    with pytest.raises(ValueError, match="unknown IANA timezone 'Mars/Olympus'"):
        parse_timezone("Mars/Olympus")


def test_a_window_is_half_open_and_timezone_aware() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    window = PartitionWindow(
        "2026-10-25",
        dt.datetime(2026, 10, 25, tzinfo=berlin),
        dt.datetime(2026, 10, 26, tzinfo=berlin),
    )
    assert window.end - window.start == dt.timedelta(hours=24)  # wall clock
    assert window.end.timestamp() - window.start.timestamp() == 25 * 3600  # the DST day
    assert window.describe() == "[2026-10-25T00:00:00+02:00, 2026-10-26T00:00:00+01:00)"
    with pytest.raises(ValueError, match="timezone-aware"):
        PartitionWindow("x", dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="empty"):
        PartitionWindow("x", window.end, window.start)
