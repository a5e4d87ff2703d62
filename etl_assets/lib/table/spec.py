"""The declaration of one source table: what to read, how to cut it into windows, where it goes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from etl_assets.lib.table.contract import ColumnSpec
from etl_assets.lib.table.windows import Grain


class NullPartitionRows(StrEnum):
    """What happens to rows whose partition column is NULL (they belong to no window)."""

    FAIL = "fail"
    """The materialization fails, naming the count, before anything is published."""
    REPORT = "report"
    """The rows are not loaded; their count is logged as a warning and recorded in metadata."""


class PrimaryKeyCheck(StrEnum):
    """How the per-partition "primary key unique and not null" check acts."""

    WARN = "warn"
    BLOCKING = "blocking"
    OFF = "off"


@dataclass(frozen=True)
class IncrementalSpec:
    """How a change sensor finds rows that changed: a column every write sets to its time."""

    change_column: str
    settle_lag: dt.timedelta = dt.timedelta(minutes=10)
    """A window is closed only this long after its end (and once no older transaction is open)."""
    interval_seconds: int = 60


class ReconcileCompare(StrEnum):
    """What a fingerprint hashes besides the row count and newest change."""

    KEY = "key"
    """The primary key: finds inserts, deletes and key changes."""
    ROWS = "rows"
    """Every declared column: also finds updates that did not touch the change column."""


@dataclass(frozen=True)
class ReconcileSpec:
    """When to re-fingerprint the newest closed partitions, and how many."""

    cron: str
    partitions: int = 7
    compare: ReconcileCompare = ReconcileCompare.KEY


@dataclass(frozen=True)
class TableSpec:
    """One declared source table; plain data so the lib code can use it without Dagster."""

    source: str
    schema: str
    table: str
    partition_column: str
    grain: Grain
    start: dt.datetime
    end: dt.datetime | None
    timezone: str
    primary_key: tuple[str, ...]
    columns: tuple[ColumnSpec, ...]
    transform: str | None = None
    group: str | None = None
    null_partition_rows: NullPartitionRows = NullPartitionRows.FAIL
    max_partitions_per_run: int | None = None
    """Backfills read at most this many partitions per run; None: a whole range in one run."""
    partition_name: str | None = None
    """Name of the hive partition directories; None: the grain's (`day`, `hour`, ...)."""
    primary_key_check: PrimaryKeyCheck = PrimaryKeyCheck.WARN
    asset_name: str | None = None
    """The last segment of the asset key; None: derived from the table name."""
    incremental: IncrementalSpec | None = None
    reconcile: ReconcileSpec | None = None
    freshness_deadline_cron: str | None = None
    """Cron by which the newest closed partition must be materialized (in `timezone`)."""
    preview_rows: int = 5
    """Rows of each published partition shown in its materialization's metadata; 0: none."""
    preview_mask: tuple[str, ...] = ()
    """Columns whose values the preview hides (sensitive data stays out of the event log)."""

    @property
    def qualified_name(self) -> str:
        """`schema.table` as written in messages (not for SQL: see `etl_assets.lib.postgres.sql`)."""
        return f"{self.schema}.{self.table}"

    @property
    def hive_partition_name(self) -> str:
        """The `<name>` of the lake's `<name>=<key>` partition directories."""
        return self.partition_name or self.grain.hive_name

    @property
    def change_column(self) -> str | None:
        """The declared change column, if any."""
        return self.incremental.change_column if self.incremental else None

    @property
    def fingerprint_columns(self) -> tuple[str, ...]:
        """The columns whose hash goes into a window's fingerprint."""
        if self.reconcile is not None and self.reconcile.compare is ReconcileCompare.ROWS:
            return self.read_columns
        return self.primary_key

    @property
    def fingerprint_sees_updates(self) -> bool:
        """Whether an updated row changes the fingerprint.

        It does through the change column (which every write must move), or because every
        declared column is hashed.
        """
        return self.change_column is not None or self.fingerprint_columns == self.read_columns

    @property
    def column_names(self) -> tuple[str, ...]:
        """The declared columns' names, in order."""
        return tuple(c.name for c in self.columns)

    @property
    def read_columns(self) -> tuple[str, ...]:
        """The declared columns, plus the partition column when it was not declared."""
        if self.partition_column in self.column_names:
            return self.column_names
        return (*self.column_names, self.partition_column)

    @property
    def read_column_specs(self) -> tuple[ColumnSpec, ...]:
        """Specs of `read_columns` (an undeclared partition column has no pinned type)."""
        if self.partition_column in self.column_names:
            return self.columns
        return (*self.columns, ColumnSpec(self.partition_column))

    def to_metadata(self) -> dict[str, object]:
        """A JSON-friendly description, carried by the asset's input so the reader knows it."""
        return {
            "source": self.source,
            "schema": self.schema,
            "table": self.table,
            "partition_column": self.partition_column,
            "grain": self.grain.value,
            "start": self.start.isoformat(),
            "end": self.end.isoformat() if self.end else None,
            "timezone": self.timezone,
            "primary_key": list(self.primary_key),
            "columns": [c.to_metadata() for c in self.columns],
            "transform": self.transform,
            "group": self.group,
            "null_partition_rows": self.null_partition_rows.value,
            "max_partitions_per_run": self.max_partitions_per_run,
            "partition_name": self.partition_name,
            "primary_key_check": self.primary_key_check.value,
            "freshness_deadline_cron": self.freshness_deadline_cron,
            "asset_name": self.asset_name,
            "preview_rows": self.preview_rows,
            "preview_mask": list(self.preview_mask),
            "incremental": (
                {
                    "change_column": self.incremental.change_column,
                    "settle_lag_seconds": self.incremental.settle_lag.total_seconds(),
                    "interval_seconds": self.incremental.interval_seconds,
                }
                if self.incremental
                else None
            ),
            "reconcile": (
                {
                    "cron": self.reconcile.cron,
                    "partitions": self.reconcile.partitions,
                    "compare": self.reconcile.compare.value,
                }
                if self.reconcile
                else None
            ),
        }

    @classmethod
    def from_metadata(cls, data: dict[str, object]) -> TableSpec:
        """Inverse of `to_metadata`."""
        end = data["end"]
        transform = data["transform"]
        group = data["group"]
        per_run = data.get("max_partitions_per_run")
        return cls(
            source=str(data["source"]),
            schema=str(data["schema"]),
            table=str(data["table"]),
            partition_column=str(data["partition_column"]),
            grain=Grain(str(data["grain"])),
            start=dt.datetime.fromisoformat(str(data["start"])),
            end=dt.datetime.fromisoformat(str(end)) if end else None,
            timezone=str(data["timezone"]),
            primary_key=tuple(str(c) for c in _as_list(data["primary_key"])),
            columns=tuple(
                ColumnSpec.from_metadata(c)  # pyright: ignore[reportArgumentType]
                for c in _as_list(data["columns"])
            ),
            transform=str(transform) if transform else None,
            group=str(group) if group else None,
            null_partition_rows=NullPartitionRows(str(data["null_partition_rows"])),
            max_partitions_per_run=int(str(per_run)) if per_run is not None else None,
            partition_name=str(data["partition_name"]) if data.get("partition_name") else None,
            primary_key_check=PrimaryKeyCheck(str(data.get("primary_key_check") or "warn")),
            asset_name=str(data["asset_name"]) if data.get("asset_name") else None,
            preview_rows=int(str(data.get("preview_rows", 5))),
            preview_mask=tuple(str(c) for c in _as_list(data.get("preview_mask") or [])),
            incremental=_incremental(data.get("incremental")),
            reconcile=_reconcile(data.get("reconcile")),
            freshness_deadline_cron=(
                str(data["freshness_deadline_cron"])
                if data.get("freshness_deadline_cron")
                else None
            ),
        )


def _incremental(data: object) -> IncrementalSpec | None:
    if not isinstance(data, dict):
        return None
    values: dict[str, object] = data  # pyright: ignore[reportUnknownVariableType]
    return IncrementalSpec(
        change_column=str(values["change_column"]),
        settle_lag=dt.timedelta(seconds=float(str(values["settle_lag_seconds"]))),
        interval_seconds=int(str(values["interval_seconds"])),
    )


def _reconcile(data: object) -> ReconcileSpec | None:
    if not isinstance(data, dict):
        return None
    values: dict[str, object] = data  # pyright: ignore[reportUnknownVariableType]
    return ReconcileSpec(
        cron=str(values["cron"]),
        partitions=int(str(values["partitions"])),
        compare=ReconcileCompare(str(values["compare"])),
    )


def _as_list(value: object) -> list[object]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return list(value)  # pyright: ignore[reportUnknownArgumentType]
