"""Data checks computed on every row as it streams, evaluated per partition before publishing.

Each check sees the rows as read from the source (before the transform), batch by batch, and
keeps only counters and at most a few sample keys: memory stays flat, except for the primary-key
uniqueness check on tables without a unique index, which keeps one 64-bit hash per row.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import polars as pl
import pyarrow as pa

from etl_assets.lib.table.spec import ColumnChecks, ColumnSpec

SAMPLE_KEYS = 5

ROW_COUNT_CHECK = "row_count_matches_source"
SCHEMA_CHECK = "schema_matches_contract"
PRIMARY_KEY_CHECK = "primary_key_unique_not_null"


class Severity(StrEnum):
    """How a failed check is reported."""

    WARN = "WARN"
    ERROR = "ERROR"


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check for one partition."""

    name: str
    passed: bool
    blocking: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict[str, Any])
    severity: Severity = Severity.ERROR


def column_check_name(column: str) -> str:
    """The asset-check name of a column's declared checks: `values_<column>` (identifier-safe)."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", column)
    if safe != column:
        safe = f"{safe}_{sum(column.encode()) % 10_000:04d}"
    return f"values_{safe}"


def describe_key(names: Sequence[str], values: Sequence[object]) -> str:
    """`(order_id=42, line=3)`."""
    return "(" + ", ".join(f"{n}={v!r}" for n, v in zip(names, values, strict=True)) + ")"


@dataclass
class _ColumnTally:
    spec: ColumnSpec
    violations: dict[str, int] = field(default_factory=dict[str, int])
    samples: list[str] = field(default_factory=list[str])


class RowChecks:
    """Accumulates the primary-key and per-column checks over the batches of one window."""

    def __init__(
        self,
        primary_key: Sequence[str],
        columns: Sequence[ColumnSpec],
        *,
        hash_keys: bool,
        check_primary_key: bool = True,
    ) -> None:
        self._primary_key = list(primary_key)
        self._check_primary_key = check_primary_key
        self._hash_keys = hash_keys and check_primary_key
        self._null_keys = 0
        self._null_key_samples: list[str] = []
        self._hashes: list[pl.Series] = []
        self._tallies = [_ColumnTally(spec) for spec in columns if spec.checks.any]

    @property
    def checks_primary_key(self) -> bool:
        """Whether the primary-key check is on."""
        return self._check_primary_key

    @property
    def columns(self) -> list[str]:
        """The columns the checks look at."""
        # Samples name each violating row by its primary key, so the key is always included.
        wanted = list(self._primary_key)
        return wanted + [t.spec.name for t in self._tallies if t.spec.name not in wanted]

    def observe_batch(self, batch: pa.RecordBatch) -> None:
        """Count what this Arrow batch of source rows violates.

        Only the checked columns become a Polars frame; primary-key columns without NULLs and
        without a uniqueness check to feed cost nothing.
        """
        nothing_to_see = not self._check_primary_key or all(
            batch.column(name).null_count == 0 for name in self._primary_key
        )
        if nothing_to_see and not self._tallies and not self._hash_keys:
            return
        frame = pl.from_arrow(batch.select(self.columns))
        assert isinstance(frame, pl.DataFrame)
        self.observe(frame)

    def observe(self, frame: pl.DataFrame) -> None:
        """Count what this batch of source rows violates."""
        if self._check_primary_key:
            nulls = frame.filter(pl.any_horizontal(pl.col(self._primary_key).is_null()))
            self._null_keys += nulls.height
            self._sample(self._null_key_samples, nulls)
            if self._hash_keys:
                self._hashes.append(frame.select(self._primary_key).hash_rows(seed=0))
        for tally in self._tallies:
            self._observe_column(frame, tally)

    def duplicate_key_hashes(self) -> bool:
        """Whether two rows' primary keys hash alike (a duplicate, almost surely: confirm it)."""
        if not self._hashes:
            return False
        hashes = pl.concat(self._hashes)
        return hashes.n_unique() < hashes.len()

    def primary_key_outcome(
        self, *, blocking: bool, unique_index: str | None, duplicates: Sequence[str]
    ) -> CheckOutcome:
        """Unique and never NULL, with the evidence."""
        passed = self._null_keys == 0 and not duplicates
        metadata: dict[str, Any] = {
            "null_keys": self._null_keys,
            "duplicate_keys_sample": ", ".join(duplicates) or "none",
            "uniqueness": (
                f"guaranteed by unique index {unique_index}"
                if unique_index
                else "checked on every row read"
            ),
        }
        if self._null_key_samples:
            metadata["null_keys_sample"] = ", ".join(self._null_key_samples)
        key = ", ".join(self._primary_key)
        return CheckOutcome(
            name=PRIMARY_KEY_CHECK,
            passed=passed,
            blocking=blocking,
            description=f"primary key ({key}) unique and not NULL"
            if passed
            else f"primary key ({key}): {self._null_keys} NULL key(s), "
            f"{len(duplicates)} duplicated key(s) found",
            metadata=metadata,
            severity=Severity.ERROR if blocking else Severity.WARN,
        )

    def column_outcomes(self) -> list[CheckOutcome]:
        """One outcome per column with declared checks."""
        outcomes: list[CheckOutcome] = []
        for tally in self._tallies:
            failed = {rule: count for rule, count in tally.violations.items() if count}
            metadata: dict[str, Any] = {
                f"{rule}_violations": n for rule, n in tally.violations.items()
            }
            if tally.samples:
                metadata["violating_keys_sample"] = ", ".join(tally.samples)
            checks = tally.spec.checks
            outcomes.append(
                CheckOutcome(
                    name=column_check_name(tally.spec.name),
                    passed=not failed,
                    blocking=checks.blocking,
                    description=(
                        f"{tally.spec.name}: "
                        + (
                            "; ".join(f"{n} row(s) break {rule}" for rule, n in failed.items())
                            if failed
                            else "every value passes " + ", ".join(tally.violations)
                        )
                    ),
                    metadata=metadata,
                    severity=Severity.ERROR if checks.blocking else Severity.WARN,
                )
            )
        return outcomes

    def _observe_column(self, frame: pl.DataFrame, tally: _ColumnTally) -> None:
        name = tally.spec.name
        for rule, violation in _rules(tally.spec.checks, pl.col(name), frame.schema[name]):
            bad = frame.filter(violation.fill_null(False))
            tally.violations[rule] = tally.violations.get(rule, 0) + bad.height
            self._sample(tally.samples, bad)

    def _sample(self, samples: list[str], rows: pl.DataFrame) -> None:
        room = SAMPLE_KEYS - len(samples)
        if room <= 0 or rows.height == 0:
            return
        for values in rows.select(self._primary_key).head(room).iter_rows():
            samples.append(describe_key(self._primary_key, values))


def _rules(checks: ColumnChecks, column: pl.Expr, dtype: pl.DataType) -> list[tuple[str, pl.Expr]]:
    rules: list[tuple[str, pl.Expr]] = []
    if checks.not_null:
        rules.append(("not_null", column.is_null()))
    if checks.accepted_values is not None:
        accepted = pl.Series([_value(v, dtype) for v in checks.accepted_values]).cast(dtype)
        rules.append(("accepted_values", column.is_not_null() & ~column.is_in(accepted.implode())))
    if checks.min is not None:
        rules.append(("min", column < pl.lit(_value(checks.min, dtype)).cast(dtype)))
    if checks.max is not None:
        rules.append(("max", column > pl.lit(_value(checks.max, dtype)).cast(dtype)))
    return rules


def _value(value: object, dtype: pl.DataType) -> object:
    """A YAML bound as a value comparable with the column: ISO text for dates and times."""
    if not isinstance(value, str):
        return value
    if dtype == pl.Date:
        return dt.date.fromisoformat(value)
    if isinstance(dtype, pl.Datetime):
        moment = dt.datetime.fromisoformat(value)
        if dtype.time_zone is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment
    if dtype == pl.Time:
        return dt.time.fromisoformat(value)
    return value
