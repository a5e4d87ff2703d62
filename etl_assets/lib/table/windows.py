"""Time grains and the half-open windows `[start, end)` that partitions read from Postgres."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Grain(StrEnum):
    """How long one partition's window is; also the hive partition name in the lake."""

    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"

    @property
    def key_format(self) -> str:
        """`strftime` format of partition keys: sortable and safe in S3 keys (no ':')."""
        return _KEY_FORMATS[self]

    @property
    def cron_schedule(self) -> str:
        """Cron expression whose ticks are the window boundaries (weeks start on Monday)."""
        return _CRONS[self]

    @property
    def hive_name(self) -> str:
        """Name of the hive partition directory, as in `day=2026-10-01`."""
        return _HIVE_NAMES[self]

    @property
    def trunc_unit(self) -> str:
        """Postgres' `date_trunc` unit whose values are this grain's window starts."""
        return _TRUNC_UNITS[self]

    @property
    def shortest_window(self) -> dt.timedelta:
        """The shortest a window of this grain can be (a 23-hour day counts as a day here)."""
        return _SHORTEST[self]

    @property
    def longest_window(self) -> dt.timedelta:
        """The longest a window of this grain can be (a 25-hour day on a daylight-saving change)."""
        return _LONGEST[self]


_KEY_FORMATS = {
    Grain.HOURLY: "%Y-%m-%dT%H",
    Grain.DAILY: "%Y-%m-%d",
    Grain.WEEKLY: "%Y-%m-%d",
    Grain.MONTHLY: "%Y-%m",
}
_CRONS = {
    Grain.HOURLY: "0 * * * *",
    Grain.DAILY: "0 0 * * *",
    Grain.WEEKLY: "0 0 * * 1",
    Grain.MONTHLY: "0 0 1 * *",
}
_TRUNC_UNITS = {
    Grain.HOURLY: "hour",
    Grain.DAILY: "day",
    Grain.WEEKLY: "week",
    Grain.MONTHLY: "month",
}
_SHORTEST = {
    Grain.HOURLY: dt.timedelta(hours=1),
    Grain.DAILY: dt.timedelta(days=1),
    Grain.WEEKLY: dt.timedelta(days=7),
    Grain.MONTHLY: dt.timedelta(days=28),
}
_LONGEST = {
    Grain.HOURLY: dt.timedelta(hours=1),
    Grain.DAILY: dt.timedelta(hours=25),
    Grain.WEEKLY: dt.timedelta(days=7, hours=1),
    Grain.MONTHLY: dt.timedelta(days=31, hours=1),
}
_HIVE_NAMES = {
    Grain.HOURLY: "hour",
    Grain.DAILY: "day",
    Grain.WEEKLY: "week",
    Grain.MONTHLY: "month",
}


def grain_for_cron(cron_schedule: str) -> Grain | None:
    """The grain whose windows a cron schedule describes, or None for any other schedule."""
    for grain, cron in _CRONS.items():
        if cron == cron_schedule:
            return grain
    return None


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA timezone called `name`; raises ValueError naming it when it does not exist."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown IANA timezone {name!r} (e.g. 'UTC', 'Europe/Berlin')") from error


def parse_window_start(text: str, grain: Grain) -> dt.datetime:
    """Parse a naive start/end date or datetime and check that it is a window boundary.

    Windows are `[boundary, next boundary)` in the table's timezone, so a start or end that is
    not a boundary would make the first or last window partial.
    """
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"{text!r} is not an ISO date or datetime (e.g. '2026-10-01')") from error
    if value.tzinfo is not None:
        raise ValueError(
            f"{text!r} carries a UTC offset; write a local time: the table's `timezone` applies"
        )
    misaligned = (
        (value.minute, value.second, value.microsecond) != (0, 0, 0)
        or (grain is not Grain.HOURLY and value.hour != 0)
        or (grain is Grain.WEEKLY and value.weekday() != 0)
        or (grain is Grain.MONTHLY and value.day != 1)
    )
    if misaligned:
        raise ValueError(f"{text!r} is not the start of a {grain.value} window ({_RULES[grain]})")
    return value


_RULES = {
    Grain.HOURLY: "a whole hour",
    Grain.DAILY: "midnight",
    Grain.WEEKLY: "midnight on a Monday",
    Grain.MONTHLY: "midnight on the 1st of a month",
}


@dataclass(frozen=True)
class PartitionWindow:
    """One partition: its key and the half-open time window `[start, end)` it holds.

    `start` and `end` are timezone-aware, in the table's declared timezone, so a window over a
    daylight-saving change is 23 or 25 hours long, exactly as the wall clock says.
    """

    key: str
    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError(f"window {self.key!r} needs timezone-aware bounds")
        # Compare instants: Python compares two times of one timezone by wall clock, which
        # would call the repeated hour of a daylight-saving change empty.
        if not self.start.timestamp() < self.end.timestamp():
            raise ValueError(f"window {self.key!r} is empty: {self.start} >= {self.end}")

    def describe(self) -> str:
        """The window as `[start, end)` in ISO 8601 with offsets."""
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> dt.timedelta:
    """`30s`, `10m`, `2h` or `1d` as a timedelta."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like '30s', '10m', '2h' or '1d'")
    return dt.timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
