import datetime as dt
import subprocess
import sys
from decimal import Decimal

import pyarrow as pa

from etl_assets.lib.lake.preview import (
    MASK,
    NULL,
    NotShown,
    calendar_text,
    cell_text,
    markdown_preview,
    python_rows,
)


def test_rows_become_a_markdown_table_with_masked_columns_hidden() -> None:
    rows = [
        {"id": 1, "email": "ann@example.com", "total": Decimal("12.50")},
        {"id": 2, "email": None, "total": Decimal("-0.01")},
    ]
    text = markdown_preview(rows, ["id", "email", "total"], masked={"email"})
    assert text.splitlines() == [
        "| id | email (masked) | total |",
        "| --- | --- | --- |",
        f"| 1 | {MASK} | 12.50 |",
        f"| 2 | {NULL} | -0.01 |",
    ]
    assert "ann@" not in text


def test_cells_cannot_break_the_table_and_long_values_are_cut() -> None:
    rows = [{"note": "a|b\nc", "body": "x" * 100}]
    lines = markdown_preview(rows, ["note", "body"], max_cell_chars=10).splitlines()
    assert lines[2] == "| a\\|b c | xxxxxxxxx… |"
    assert len(lines) == 3


def test_values_read_as_postgres_users_expect() -> None:
    assert cell_text(dt.datetime(2026, 10, 1, 7, 30, tzinfo=dt.UTC)) == "2026-10-01T07:30:00+00:00"
    assert cell_text(Decimal("1E+3")) == "1000"
    assert cell_text(b"\x01\xff") == "\\x01ff"
    assert cell_text(["a", None, {"n": 1}]) == '["a", null, {"n": 1}]'
    assert cell_text(True) == "True"


def test_a_partition_with_no_rows_still_shows_its_columns() -> None:
    lines = markdown_preview([], ["id", "ts"]).splitlines()
    assert lines[0] == "| id | ts |"
    assert len(lines) == 3


def test_python_rows_equal_pyarrows_own_conversion_without_importing_pandas() -> None:
    table = pa.table(
        {
            "id": pa.array([1, None], pa.int64()),
            "at": pa.array([1_761_955_200_123_456, None], pa.timestamp("us", "UTC")),
            "local": pa.array([1_000, -1_500], pa.timestamp("ms")),
            "berlin": pa.array([0, 1_700_000_000], pa.timestamp("s", "Europe/Berlin")),
            "tags": pa.array([["a", None], []], pa.list_(pa.string())),
            "stamps": pa.array([[1, None], None], pa.list_(pa.timestamp("us", "UTC"))),
            "rec": pa.array(
                [{"at": 5_000, "on": 1}, None],
                pa.struct([("at", pa.timestamp("ns")), ("on", pa.date32())]),
            ),
        }
    )
    assert python_rows(table) == table.to_pylist()
    script = (
        "import sys, pyarrow as pa\n"
        "from etl_assets.lib.lake.preview import python_rows\n"
        "t = pa.ipc.open_stream(sys.stdin.buffer.read()).read_all()\n"
        "assert 'pandas' not in sys.modules\n"
        "python_rows(t)\n"
        "print('pandas' in sys.modules)\n"
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    checked = subprocess.run(
        [sys.executable, "-c", script],
        input=sink.getvalue().to_pybytes(),
        capture_output=True,
        check=True,
    )
    assert checked.stdout.decode().strip() == "False"


def test_the_calendar_matches_pythons_where_python_has_one_and_postgres_beyond() -> None:
    epoch = dt.date(1970, 1, 1)
    for days in range(dt.date(1, 1, 1).toordinal() - epoch.toordinal(), 2_932_897, 9_973):
        assert calendar_text(days) == (epoch + dt.timedelta(days=days)).isoformat()
    # As Postgres writes them: SELECT date '1970-01-01' + n.
    assert calendar_text(-2_440_588) == "4714-11-24 BC"
    assert calendar_text(-719_163) == "0001-12-31 BC"
    assert calendar_text(-735_160) == "0044-03-15 BC"
    assert calendar_text(2_932_897) == "10000-01-01"
    assert calendar_text(2_145_042_905) == "5874897-12-31"
    assert calendar_text(106_751_991, 14_454_775_807, "+00:00") == (
        "294247-01-10T04:00:54.775807+00:00"
    )


def test_values_python_cannot_hold_are_shown_as_text_at_any_depth() -> None:
    days = [-2_440_588, 2_932_897, 0, None]
    micros = [None if d is None else d * 86_400_000_000 for d in days]
    table = pa.table(
        {
            "d": pa.array(days, pa.date32()),
            "ts": pa.array(micros, pa.timestamp("us")),
            "tz": pa.array(micros, pa.timestamp("us", "UTC")),
            "days": pa.array([[d, None] for d in days], pa.list_(pa.date32())),
            "rec": pa.StructArray.from_arrays(
                [pa.array(micros, pa.timestamp("us"))],
                names=["at"],
                mask=pa.array([False, False, False, True]),
            ),
        }
    )
    rows = python_rows(table.slice(1))
    assert rows[0] == {
        "d": "10000-01-01",
        "ts": "10000-01-01T00:00:00",
        "tz": "10000-01-01T00:00:00+00:00",
        "days": ["10000-01-01", None],
        "rec": {"at": "10000-01-01T00:00:00"},
    }
    assert rows[1] == table.slice(2, 1).to_pylist()[0]  # in range: Python's own values
    assert rows[2]["rec"] is None
    assert python_rows(table.slice(0, 1))[0]["days"] == ["4714-11-24 BC", None]
    preview = markdown_preview(python_rows(table), table.column_names)
    assert "| 4714-11-24 BC | 4714-11-24T00:00:00 BC |" in preview


def test_a_value_that_cannot_be_converted_becomes_a_note_and_never_fails() -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2]),
            "at": pa.array([0, 1], pa.timestamp("s", "Not/A_Zone")),
        }
    )
    rows = python_rows(table)
    assert [r["id"] for r in rows] == [1, 2]
    assert all(isinstance(r["at"], NotShown) for r in rows)
    assert str(rows[0]["at"]) == "(not shown: ZoneInfoNotFoundError)"

    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("no")

    text = markdown_preview([{"id": 1, "v": Unprintable()}], ["id", "v"])
    assert text.splitlines()[2] == "| 1 | (not shown: ValueError) |"
