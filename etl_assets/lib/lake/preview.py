"""A few rows of a partition as a markdown table, for the materialization's metadata.

The preview lands in the Dagster event log, which more people can read than the lake: masked
columns show `***` for every value (NULL stays visible, as it says nothing about the value),
and long values are cut so one wide row cannot bloat the event.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.lib.arrow_types import AnyArray

MASK = "***"
NULL = "∅"
MAX_CELL_CHARS = 40


_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DATE = _EPOCH.date()
_MICROSECONDS_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
_MICROSECONDS_PER_DAY = 86_400_000_000


class NotShown:
    """A value the preview could not show: the preview says so instead of failing the load."""

    def __init__(self, error: BaseException) -> None:
        self.reason = type(error).__name__

    def __str__(self) -> str:
        return f"(not shown: {self.reason})"


def python_rows(table: pa.Table) -> list[dict[str, object]]:
    """`table`'s rows as Python values, as `Table.to_pylist` gives them, but never failing.

    Dates and timestamps Python cannot hold (before year 1, after 9999: Postgres has both)
    come as Postgres-style text (`0044-03-15 BC`, `10000-01-01T00:00:00`), at any depth; a
    value that cannot be converted at all becomes a `NotShown`. The preview never decides
    whether a partition is published.

    Timestamps are converted here, not by pyarrow: its conversion imports pandas (to offer
    `pd.Timestamp` for nanoseconds), which costs a load ~0.3 s and ~30 MB when nothing else
    needs pandas.
    """
    columns: dict[str, list[object]] = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        columns[field.name] = _column_values(column)
    return [
        {name: values[row] for name, values in columns.items()} for row in range(table.num_rows)
    ]


def _column_values(column: pa.ChunkedArray) -> list[object]:
    values: list[object] = []
    for chunk in column.chunks:
        try:
            values += _values(chunk)
        except Exception:  # one value's trouble must not hide the others
            values += [_value_or_note(chunk.slice(row, 1)) for row in range(len(chunk))]
    return values


def _value_or_note(one: AnyArray) -> object:
    try:
        return _values(one)[0]
    except Exception as error:  # shown as a note instead
        return NotShown(error)


def _values(array: AnyArray) -> list[object]:
    """The array's values as Python objects; out-of-range dates and times as text."""
    kind = array.type
    if isinstance(kind, pa.TimestampType):
        return _timestamps(array, kind)
    if pa.types.is_date32(kind):
        return [None if d is None else _date(d) for d in array.cast(pa.int32()).to_pylist()]
    if pa.types.is_date64(kind):
        millis = array.cast(pa.int64()).to_pylist()
        return [None if m is None else _date(m // 86_400_000) for m in millis]
    if isinstance(array, pa.ListArray | pa.LargeListArray):
        # flatten() covers exactly this slice's elements, skipping those behind NULL lists.
        elements = iter(_values(array.flatten()))
        lengths = pc.list_value_length(array).to_pylist()
        return [None if n is None else [next(elements) for _ in range(n)] for n in lengths]
    if isinstance(array, pa.StructArray):
        names = [kind.field(i).name for i in range(kind.num_fields)]
        children = [_values(child) for child in array.flatten()]
        valid = array.is_valid().to_pylist()
        return [
            dict(zip(names, (child[row] for child in children), strict=True))
            if valid[row]
            else None
            for row in range(len(array))
        ]
    return list(array.to_pylist())


def _date(days: int) -> object:
    try:
        return _EPOCH_DATE + dt.timedelta(days=days)
    except OverflowError:
        return calendar_text(days)


def _timestamps(array: AnyArray, kind: pa.TimestampType) -> list[object]:
    zone = (
        None if kind.tz is None else dt.UTC if kind.tz in ("UTC", "+00:00") else ZoneInfo(kind.tz)
    )
    scale = _MICROSECONDS_PER_UNIT[kind.unit]
    values: list[object] = []
    for count in array.cast(pa.int64()).to_pylist():
        if count is None:
            values.append(None)
            continue
        try:
            moment = _EPOCH + dt.timedelta(microseconds=count * scale)
            values.append(
                moment if zone is None else moment.replace(tzinfo=dt.UTC).astimezone(zone)
            )
        except OverflowError:
            # Past Python's years: shown in UTC, where no zone's rules are needed.
            micros = int(count * scale)
            days, time_of_day = divmod(micros, _MICROSECONDS_PER_DAY)
            values.append(calendar_text(days, time_of_day, "" if zone is None else "+00:00"))
    return values


def calendar_text(days: int, time_of_day: int | None = None, offset: str = "") -> str:
    """Days since 1970 (and microseconds into the day) in the proleptic Gregorian calendar.

    Written as `isoformat` would, with Postgres' ` BC` for years before 1, for dates Python's
    `datetime` cannot hold.
    """
    # Howard Hinnant's days-to-civil, exact for any integer.
    shifted = days + 719_468
    era = shifted // 146_097
    day_of_era = shifted - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1_460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    text = f"{year if year > 0 else 1 - year:04d}-{month:02d}-{day:02d}"
    if time_of_day is not None:
        seconds, micros = divmod(time_of_day, 1_000_000)
        clock = dt.time(seconds // 3600, seconds // 60 % 60, seconds % 60, micros)
        text += f"T{clock.isoformat()}{offset}"
    return text if year > 0 else f"{text} BC"


def markdown_preview(
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str],
    *,
    masked: Collection[str] = (),
    max_cell_chars: int = MAX_CELL_CHARS,
) -> str:
    """`rows` as a markdown table of `columns`, masking the values of `masked` columns."""
    header = [_escape(name) + (" (masked)" if name in masked else "") for name in columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for row in rows:
        cells: list[str] = []
        for name in columns:
            value = row.get(name)
            if value is None:
                cells.append(NULL)
            elif name in masked:
                cells.append(MASK)
            else:
                cells.append(_escape(_shorten(_cell_or_note(value), max_cell_chars)))
        lines.append("| " + " | ".join(cells) + " |")
    if not rows:
        lines.append("| " + " | ".join("" for _ in columns) + " |")
    return "\n".join(lines)


def _cell_or_note(value: object) -> str:
    try:
        return cell_text(value)
    except Exception as error:  # the preview never fails a load
        return str(NotShown(error))


def cell_text(value: object) -> str:
    """How one value reads in the preview: ISO dates and times, exact decimals, JSON."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    return str(value)


def _json_default(value: object) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return cell_text(value)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    # A pipe would end the cell and a line break the row.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
