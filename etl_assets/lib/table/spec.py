"""The declaration of one source table: the one typed form of what `defs.yaml` says about it.

YAML is validated straight into these frozen models (by the component in
`etl_assets/components/postgres_tables.py`), and the assets, checks, sensors and schedules
built from a table capture the same `TableSpec` object. Each field's description is what
`dg` shows for the YAML; values are parsed here once (windows' starts to datetimes, `10m` to a
timedelta, type aliases kept as written and compared canonically in `contract.py`).
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from etl_assets.lib.table.transforms import load_transform
from etl_assets.lib.table.windows import Grain, parse_duration, parse_timezone, parse_window_start

_FROZEN = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
_CRON = re.compile(
    r"^\s*([0-9*/,\-]+|[A-Za-z]{3}(-[A-Za-z]{3})?)(\s+([0-9*/,\-]+|[A-Za-z]{3}(-[A-Za-z]{3})?)){4}\s*$"
)


def checked_cron(value: str) -> str:
    """`value` if it is a five-field cron expression."""
    if not _CRON.match(value):
        raise ValueError(f"{value!r} is not a cron expression (e.g. '15 3 * * *')")
    return value


class Representation(StrEnum):
    """A representation a user chose for a column whose values a reader cannot take as they are."""

    TEXT = "text"
    """Each value as its type's output function writes it (what psql and COPY print), in a
    fixed session format."""


class LakeFormat(StrEnum):
    """How a table's partitions are kept in the lake."""

    PARQUET = "parquet"
    """One Parquet object per partition at a hive-style key (readers list the prefix)."""
    ICEBERG = "iceberg"
    """One Iceberg table in the catalog, each partition replaced by one commit."""


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


class ReconcileCompare(StrEnum):
    """What a fingerprint hashes besides the row count and newest change."""

    KEY = "key"
    """The primary key: finds inserts, deletes and key changes."""
    ROWS = "rows"
    """Every declared column: also finds updates that did not touch the change column."""


class ColumnChecks(BaseModel):
    """Data checks of one column, evaluated on every row read, reported per partition."""

    model_config = _FROZEN

    not_null: bool = Field(default=False, description="No row may hold NULL.")
    accepted_values: tuple[str | int | float | bool, ...] | None = Field(
        default=None, min_length=1, description="Every non-NULL value must be one of these."
    )
    min: float | int | str | None = Field(
        default=None, description="Every non-NULL value must be >= this (numbers, dates as text)."
    )
    max: float | int | str | None = Field(
        default=None, description="Every non-NULL value must be <= this."
    )
    blocking: bool = Field(
        default=False,
        description=(
            "A failing blocking check keeps the partition from being published and fails the "
            "run; a non-blocking one is reported with the published partition."
        ),
    )

    @property
    def any(self) -> bool:
        """Whether any check is declared."""
        return (
            self.not_null
            or self.accepted_values is not None
            or self.min is not None
            or self.max is not None
        )

    @property
    def rules(self) -> list[str]:
        """The declared rules' names (`not_null`, `accepted_values`, `min`, `max`)."""
        declared = {
            "not_null": self.not_null,
            "accepted_values": self.accepted_values is not None,
            "min": self.min is not None,
            "max": self.max is not None,
        }
        return [name for name, on in declared.items() if on]


class ColumnSpec(BaseModel):
    """One column of the contract. A bare name in `columns` is a column with no pinned type."""

    model_config = _FROZEN

    name: str = Field(min_length=1, max_length=63, description="Column name, as in Postgres.")
    pg_type: str | None = Field(
        default=None,
        alias="type",
        description=(
            "The Postgres type the contract expects, as `format_type()` prints it (e.g. "
            "numeric(12,2), timestamp with time zone, text[]); the run fails if the live column "
            "has another type. Omitted: any type."
        ),
    )
    nullable: bool | None = Field(
        default=None,
        description="Whether the contract allows NULLs; the run fails if the live column differs.",
    )
    representation: Representation | None = Field(
        default=None,
        alias="as",
        description=(
            "Representation for a type or value with no exact Parquet mapping (money, inet, "
            "ranges, infinite timestamps, ...), or one a reader cannot read (uuid, time and "
            "numeric(p > 38) for Spark and Athena): text keeps each value as the type's output "
            "function writes it, exactly what psql and COPY print."
        ),
    )
    checks: ColumnChecks = Field(default_factory=ColumnChecks, description="Data checks.")

    def __init__(self, name: str | None = None, pg_type: str | None = None, /, **data: Any):
        """`ColumnSpec("total", "numeric(12,2)", nullable=False)`; YAML uses the field names."""
        if name is not None:
            data["name"] = name
        if pg_type is not None:
            data["pg_type"] = pg_type
        super().__init__(**data)

    @field_validator("checks", mode="before")
    @classmethod
    def _no_checks(cls, value: object) -> object:
        return ColumnChecks() if value is None else value


class IncrementalMode(StrEnum):
    """How the sensor learns which closed windows changed."""

    CHANGE_COLUMN = "change_column"
    """From a column every insert and update sets to its time."""
    WAL = "wal"
    """From the source's write-ahead log, through the source's logical replication slot."""


class IncrementalSpec(BaseModel):
    """Sensor-driven loading: closed windows, and closed windows whose rows changed later."""

    model_config = _FROZEN

    mode: IncrementalMode = Field(
        default=IncrementalMode.CHANGE_COLUMN,
        description=(
            "change_column: a sensor reads ranges of `change_column`; wal: the source's WAL "
            "sensor reads its logical replication slot and reloads every window an insert, "
            "update or delete touched, however old (see docs/wal.md)."
        ),
    )
    change_column: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "A timestamptz or timestamp column every insert and update sets to its time "
            "(e.g. updated_at = now()), ideally indexed: the sensor reads ranges of it. "
            "Required in change_column mode; optional with wal, where it only goes into the "
            "windows' fingerprints."
        ),
    )
    settle_lag: dt.timedelta = Field(
        default=dt.timedelta(minutes=10),
        description=(
            "A window counts as closed this long after its end (with change_column, also once "
            "no older transaction is open): 30s, 10m, 2h, 1d."
        ),
    )
    interval_seconds: int = Field(
        default=60,
        ge=10,
        description="Seconds between sensor ticks (with wal: the source's `wal` settings').",
    )

    @field_validator("settle_lag", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _change_column_when_needed(self) -> Self:
        if self.mode is IncrementalMode.CHANGE_COLUMN and self.change_column is None:
            raise ValueError(
                "`change_column` is required in change_column mode "
                "(or set `mode: wal` to learn changes from the WAL)"
            )
        return self


class ReconcileSpec(BaseModel):
    """A schedule that re-fingerprints recent closed partitions and reloads those that drifted."""

    model_config = _FROZEN

    cron: str = Field(description="When to reconcile, in the table's timezone, e.g. '15 3 * * *'.")
    partitions: int = Field(
        default=7, ge=1, le=1000, description="How many of the newest closed partitions to check."
    )
    compare: ReconcileCompare = Field(
        default=ReconcileCompare.KEY,
        description=(
            "key: row count, newest change and a hash of the primary keys (finds inserts and "
            "deletes); rows: a hash of every declared column (also finds silent updates)."
        ),
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        return checked_cron(value)


SHORTEST_FRESHNESS_WINDOW = dt.timedelta(minutes=1)
"""The shortest `fail_after` or `warn_after`: Dagster refuses a shorter freshness window."""


class FreshnessSpec(BaseModel):
    """When the table counts as stale in Dagster's freshness status (a FreshnessPolicy).

    Either a deadline (`deadline_cron`: a load in each window-long period before each
    deadline) or an age (`fail_after`, with `warn_after` before it). Dagster judges the asset's
    latest materialization of any partition.
    """

    model_config = _FROZEN

    deadline_cron: str | None = Field(
        default=None,
        description=(
            "Cron (in the table's `timezone`) by which a load must have happened in the "
            "window-long period before it, e.g. '0 3 * * *' for a daily table."
        ),
    )
    fail_after: dt.timedelta | None = Field(
        default=None,
        description="Stale when the latest load is older than this (30m, 26h, 8d).",
    )
    warn_after: dt.timedelta | None = Field(
        default=None,
        description="Warn when the latest load is older than this (less than fail_after).",
    )

    @field_validator("deadline_cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        return checked_cron(value) if value is not None else None

    @field_validator("fail_after", "warn_after", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("fail_after", "warn_after")
    @classmethod
    def _at_least_a_minute(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and value < SHORTEST_FRESHNESS_WINDOW:
            raise ValueError(
                f"{value.total_seconds():g}s is shorter than Dagster's shortest freshness "
                "window, 1m: use 1m or more"
            )
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> Self:
        if (self.deadline_cron is None) == (self.fail_after is None):
            raise ValueError("declare either `deadline_cron` or `fail_after`")
        if self.warn_after is not None and (
            self.fail_after is None or self.warn_after >= self.fail_after
        ):
            raise ValueError("`warn_after` needs a longer `fail_after`")
        return self


class TableSpec(BaseModel):
    """One source table copied to the lake, one partition per time window."""

    model_config = _FROZEN

    table_schema: str = Field(
        alias="schema",
        min_length=1,
        max_length=63,
        description="Postgres schema of the table (case-sensitive, unquoted).",
    )
    table: str = Field(
        min_length=1,
        max_length=63,
        description="Postgres table (or view) name (case-sensitive, unquoted).",
    )
    partition_column: str = Field(
        min_length=1,
        max_length=63,
        description=(
            "timestamptz, timestamp or date column that decides a row's partition: a row "
            "belongs to the window [start, end) containing its value. A timestamp without time "
            "zone is read as wall-clock time in `timezone`."
        ),
    )
    grain: Grain = Field(description="Window length. Weekly windows start on Monday.")
    start: dt.datetime = Field(
        description="Start of the first window, a local date or datetime in `timezone`."
    )
    end: dt.datetime | None = Field(
        default=None,
        description="End of the last window (exclusive); omitted, windows continue up to now.",
    )
    timezone: str = Field(default="UTC", description="IANA timezone the windows are cut in.")
    primary_key: tuple[str, ...] = Field(
        min_length=1, description="Column(s) identifying a row; must be among `columns`."
    )
    columns: tuple[ColumnSpec, ...] = Field(
        min_length=1,
        description=(
            "The columns to read, in output order: names, or objects with name, type, "
            "nullable, as and checks (the contract; `etl-assets introspect` prints one). Only "
            "these are read: new columns at the source are ignored until declared here."
        ),
    )
    transform: str | None = Field(
        default=None,
        description=(
            "Dotted path of a function LazyFrame -> LazyFrame applied to each partition between "
            "read and write, e.g. etl_assets.defs.shop.transforms:clean_orders."
        ),
    )
    group: str | None = Field(default=None, description="Dagster asset group of the assets.")
    format: LakeFormat | None = Field(
        default=None,
        description=(
            "parquet: one Parquet object per partition at a hive-style key; iceberg: one "
            "Iceberg table in the catalog, each partition replaced by one commit. Omitted: "
            "the source's `format`."
        ),
    )
    null_partition_rows: NullPartitionRows = Field(
        default=NullPartitionRows.FAIL,
        description=(
            "Rows whose partition column is NULL belong to no window. fail: the run fails and "
            "says how many; report: they are skipped, counted in metadata and logged."
        ),
    )
    max_partitions_per_run: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Backfill policy: a backfill reads at most this many partitions per run. Omitted, a "
            "backfill of any range is one run that reads its windows one after another in one "
            "snapshot and still publishes and records each partition on its own."
        ),
    )
    partition_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description=(
            "Name of the lake's partition directories (<name>=<key>); defaults to the grain's: "
            "hour, day, week or month. It must differ from every column name."
        ),
    )
    asset_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_]+$",
        description=(
            "Last segment of the asset key raw/<source>/<schema>/<asset_name>; defaults to the "
            "table name (made key-safe: letters, digits and _, with a short hash otherwise)."
        ),
    )
    incremental: IncrementalSpec | None = Field(
        default=None, description="Sensor-driven incremental loading (off without it)."
    )
    reconcile: ReconcileSpec | None = Field(
        default=None, description="Scheduled reconciliation of recent partitions."
    )
    primary_key_check: PrimaryKeyCheck = Field(
        default=PrimaryKeyCheck.WARN,
        description=(
            "The per-partition check that the primary key is unique and never NULL: warn "
            "reports a failure, blocking also keeps the partition from being published."
        ),
    )
    freshness: FreshnessSpec | None = Field(
        default=None,
        description=(
            "When the table counts as stale. Omitted: a table with `incremental` is stale once "
            "its latest load is older than a window, its settle lag and an hour; any other "
            "table has no freshness rule."
        ),
    )
    preview_rows: int = Field(
        default=5,
        ge=0,
        le=50,
        description=(
            "Rows of each published partition shown as a markdown table in its "
            "materialization's metadata (stored in the Dagster event log); 0 turns it off."
        ),
    )
    preview_mask: tuple[str, ...] = Field(
        default=(),
        description=(
            "Columns whose values the preview shows as `***` (e-mail addresses, names, "
            "secrets): the lake holds them, the event log does not."
        ),
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        parse_timezone(value)
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _window_boundary(cls, value: object, info: ValidationInfo) -> object:
        grain = info.data.get("grain")
        if grain is None or value is None:
            return value  # the grain's own error is reported
        text = value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)
        return parse_window_start(text, Grain(grain))

    @field_validator("columns", mode="before")
    @classmethod
    def _bare_names(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            items: list[object] = list(value)
            return [ColumnSpec(item) if isinstance(item, str) else item for item in items]
        return value

    @field_validator("primary_key")
    @classmethod
    def _no_duplicate_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _without_duplicates(value)

    @field_validator("columns")
    @classmethod
    def _no_duplicate_columns(cls, value: tuple[ColumnSpec, ...]) -> tuple[ColumnSpec, ...]:
        _without_duplicates(tuple(c.name for c in value))
        return value

    @field_validator("transform")
    @classmethod
    def _importable_transform(cls, value: str | None) -> str | None:
        # Imported while the YAML is validated, so a bad path is reported with its file and line.
        if value is not None:
            load_transform(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"field `end`: {self.end} is not after start {self.start}")
        if self.hive_partition_name in self.column_names:
            name = self.hive_partition_name
            raise ValueError(
                f"field `partition_name`: the lake's partition directories are named "
                f"{name}=<key>, which readers would confuse with column `{name}`; "
                "set `partition_name` to a name no column has"
            )
        missing = [c for c in self.primary_key if c not in self.column_names]
        if missing:
            raise ValueError(f"field `primary_key`: {', '.join(missing)} not in `columns`")
        unknown = [c for c in self.preview_mask if c not in self.column_names]
        if unknown and self.transform is None:
            # With a transform, a masked column may be one the transform computes.
            raise ValueError(f"field `preview_mask`: {', '.join(unknown)} not in `columns`")
        return self

    @property
    def qualified_name(self) -> str:
        """`schema.table` as written in messages (for SQL, see `lib/postgres/sql.py`)."""
        return f"{self.table_schema}.{self.table}"

    @property
    def lake_format(self) -> LakeFormat:
        """The declared format (the component fills in the source's when a table declares none)."""
        return self.format or LakeFormat.PARQUET

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
        """The columns whose hash goes into a window's fingerprint.

        Every column when reconciliation compares rows, and for a WAL table without a change
        column (whose fallback to reconciliation must see updates).
        """
        if self.reconcile is not None and self.reconcile.compare is ReconcileCompare.ROWS:
            return self.read_columns
        if self.wal and self.change_column is None:
            return self.read_columns
        return self.primary_key

    @property
    def wal(self) -> bool:
        """Whether the table's changes are learned from the source's WAL."""
        return self.incremental is not None and self.incremental.mode is IncrementalMode.WAL

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


def _without_duplicates(names: tuple[str, ...]) -> tuple[str, ...]:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"lists {', '.join(duplicates)} more than once")
    return names
