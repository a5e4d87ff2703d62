import datetime as dt
import decimal

import polars as pl
import pyarrow as pa

from etl_assets.lib.table.checks import PRIMARY_KEY_CHECK, RowChecks, Severity, column_check_name
from etl_assets.lib.table.spec import ColumnChecks, ColumnSpec

COLUMNS = [
    ColumnSpec("id"),
    ColumnSpec("status", checks=ColumnChecks(accepted_values=("paid", "open"))),
    ColumnSpec("total", checks=ColumnChecks(not_null=True, min=0, max=100, blocking=True)),
    ColumnSpec("day", checks=ColumnChecks(min="2026-10-01")),
]


def frame(
    ids: list[int | None], status: list[str | None], totals: list[str | None], days: list[dt.date]
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": ids,
            "status": status,
            "total": [decimal.Decimal(t) if t is not None else None for t in totals],
            "day": days,
        },
        schema={"id": pl.Int64, "status": pl.String, "total": pl.Decimal(12, 2), "day": pl.Date},
    )


OK_DAY = dt.date(2026, 10, 2)


def test_clean_batches_pass_every_check() -> None:
    checks = RowChecks(["id"], COLUMNS, hash_keys=True)
    checks.observe(frame([1, 2], ["paid", None], ["1.50", "100.00"], [OK_DAY, OK_DAY]))
    checks.observe(frame([3], ["open"], ["0.00"], [OK_DAY]))
    assert not checks.duplicate_key_hashes()
    key = checks.primary_key_outcome(blocking=False, unique_index=None, duplicates=[])
    assert key.passed
    assert key.name == PRIMARY_KEY_CHECK
    assert key.metadata["uniqueness"] == "checked on every row read"
    assert all(o.passed for o in checks.column_outcomes())


def test_violations_are_counted_with_sample_keys_across_batches() -> None:
    checks = RowChecks(["id"], COLUMNS, hash_keys=True)
    checks.observe(frame([1, 2], ["paid", "lost"], ["-1.00", None], [OK_DAY, dt.date(2026, 9, 30)]))
    checks.observe(frame([2, None], ["open", "open"], ["101.00", "5.00"], [OK_DAY, OK_DAY]))
    assert checks.duplicate_key_hashes()
    key = checks.primary_key_outcome(blocking=True, unique_index=None, duplicates=["(id=2)"])
    assert not key.passed
    assert key.severity is Severity.ERROR
    assert key.metadata["null_keys"] == 1
    outcomes = {o.name: o for o in checks.column_outcomes()}
    status = outcomes[column_check_name("status")]
    assert not status.passed
    assert status.metadata["accepted_values_violations"] == 1
    assert status.metadata["violating_keys_sample"] == "(id=2)"
    assert status.severity is Severity.WARN
    total = outcomes[column_check_name("total")]
    assert total.blocking
    assert total.metadata == {
        "not_null_violations": 1,
        "min_violations": 1,
        "max_violations": 1,
        "violating_keys_sample": "(id=2), (id=1), (id=2)",
    }
    assert outcomes[column_check_name("day")].metadata["min_violations"] == 1


def test_a_unique_index_spares_the_hashing() -> None:
    checks = RowChecks(["id"], [ColumnSpec("id")], hash_keys=False)
    checks.observe(pl.DataFrame({"id": [1, 1]}))
    assert not checks.duplicate_key_hashes()
    outcome = checks.primary_key_outcome(blocking=False, unique_index="t_pkey", duplicates=[])
    assert outcome.metadata["uniqueness"] == "guaranteed by unique index t_pkey"


def test_check_names_are_identifiers() -> None:
    assert column_check_name("total") == "values_total"
    odd = column_check_name("Prix TTC; €")
    assert odd.startswith("values_Prix_TTC____")
    assert odd.replace("_", "").isalnum()


def test_arrow_batches_are_checked_like_frames() -> None:
    batch = pa.RecordBatch.from_pydict(
        {
            "id": pa.array([1, None, 3], pa.int64()),
            "qty": pa.array([5, -1, 2], pa.int32()),
            "body": pa.array(["a", "b", "c"]),
        }
    )
    checks = RowChecks(["id"], [ColumnSpec("qty", checks=ColumnChecks(min=0))], hash_keys=True)
    checks.observe_batch(batch)
    assert checks.columns == ["id", "qty"]
    key_outcome = checks.primary_key_outcome(blocking=True, unique_index=None, duplicates=[])
    assert not key_outcome.passed
    assert key_outcome.metadata["null_keys"] == 1
    [qty] = checks.column_outcomes()
    assert qty.metadata["min_violations"] == 1


def test_a_batch_without_null_keys_passes_the_key_check_on_the_arrow_path() -> None:
    batch = pa.RecordBatch.from_pydict({"id": pa.array([1, 2], pa.int64())})
    checks = RowChecks(["id"], [], hash_keys=False)
    checks.observe_batch(batch)
    outcome = checks.primary_key_outcome(blocking=True, unique_index="pk", duplicates=[])
    assert outcome.passed
    assert not checks.duplicate_key_hashes()
