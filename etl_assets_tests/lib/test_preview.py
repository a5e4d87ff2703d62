import datetime as dt
import subprocess
import sys
from decimal import Decimal

import pyarrow as pa

from etl_assets.lib.preview import MASK, NULL, cell_text, markdown_preview, python_rows


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
        }
    )
    assert python_rows(table) == table.to_pylist()
    script = (
        "import sys, pyarrow as pa\n"
        "from etl_assets.lib.preview import python_rows\n"
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
