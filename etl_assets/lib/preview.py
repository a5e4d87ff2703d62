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

MASK = "***"
NULL = "∅"
MAX_CELL_CHARS = 40


_EPOCH = dt.datetime(1970, 1, 1)
_MICROSECONDS_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}


def python_rows(table: pa.Table) -> list[dict[str, object]]:
    """`table`'s rows as Python values, as `Table.to_pylist` gives them.

    Top-level timestamp columns are converted here: pyarrow's conversion of a timestamp
    imports pandas (to offer `pd.Timestamp` for nanoseconds), which costs a load ~0.3 s and
    ~30 MB when nothing else needs pandas.
    """
    columns: dict[str, list[object]] = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            columns[field.name] = _timestamps(column, field.type)
        else:
            columns[field.name] = list(column.to_pylist())
    return [
        {name: values[row] for name, values in columns.items()} for row in range(table.num_rows)
    ]


def _timestamps(column: pa.ChunkedArray, kind: pa.TimestampType) -> list[object]:
    zone = (
        None if kind.tz is None else dt.UTC if kind.tz in ("UTC", "+00:00") else ZoneInfo(kind.tz)
    )
    scale = _MICROSECONDS_PER_UNIT[kind.unit]
    values: list[object] = []
    for count in column.cast(pa.int64()).to_pylist():
        if count is None:
            values.append(None)
            continue
        moment = _EPOCH + dt.timedelta(microseconds=count * scale)
        values.append(moment if zone is None else moment.replace(tzinfo=dt.UTC).astimezone(zone))
    return values


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
                cells.append(_escape(_shorten(cell_text(value), max_cell_chars)))
        lines.append("| " + " | ".join(cells) + " |")
    if not rows:
        lines.append("| " + " | ".join("" for _ in columns) + " |")
    return "\n".join(lines)


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
