"""The sensor that learns from a source's WAL which windows changed, and requests exactly those.

One sensor per source reads the source's logical replication slot (`lib/postgres/wal.py`) for
every table declared with `incremental: {mode: wal}`; `lib/wal_tick.py` decides what a range
of changes asks for. A tick:

1. checks that the slot can be read (`wal_level`, `REPLICATION`, the publication, each table's
   replica identity) and fails naming what is missing;
2. moves the slot to the cursor's LSN: Dagster stored that cursor together with the previous
   tick's run requests, so the changes before it have their runs reserved;
3. reports the WAL the slot keeps; with more unread WAL than the limit, it falls back to
   reconciliation (below) instead of reading it;
4. reads the changes up to the flushed WAL, at most `max_changes_per_tick` of them in whole
   transactions, and requests each closed window an old or new row falls in (a range touching
   more windows than a tick may request is drained over ticks: the next tick reads the same
   range again and carries on);
5. requests the windows that closed since the last tick (end + settle lag).

The fallback: the slot is moved to the server's current position `X` at the next tick, and the
windows it skips are found by fingerprinting every closed window of each table in a snapshot
taken once every transaction that could have committed before `X` has ended, and reloading
those that differ from what was published. A change after `X` is read from the slot as usual.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import dagster as dg
from pydantic import Field

from etl_assets.components.incremental import (
    REASON_TAG,
    describe_failing,
    failing_partitions,
    keys_for_local_start,
    recorded_fingerprints,
    source_settings,
    tick_windows,
)
from etl_assets.lib.errors import WalNotReadyError
from etl_assets.lib.incremental import SourceClock, reconcile
from etl_assets.lib.postgres.changes import fingerprint_windows
from etl_assets.lib.postgres.session import ConnectionSettings, Snapshot
from etl_assets.lib.postgres.sql import BoundKind
from etl_assets.lib.postgres.wal import (
    MessageTally,
    SlotState,
    WalChange,
    WatchedTable,
    advance_slot,
    decode_pgoutput,
    local_window_start,
    lsn_text,
    open_transactions,
    peek_changes,
    slot_state,
    source_position,
    still_open,
    wal_problems,
)
from etl_assets.lib.table.spec import TableSpec
from etl_assets.lib.table.windows import PartitionWindow
from etl_assets.lib.wal_tick import (
    ChangeSummary,
    TouchedWindow,
    WalCursor,
    WalRequest,
    plan_wal_tick,
    summarize_changes,
)

SLOT_NAME = r"^[a-z_][a-z0-9_]{0,62}$"
MB = 1024 * 1024
OPEN_TRANSACTIONS_WAIT_SECONDS = 10.0
"""How long a fallback tick waits for the transactions open at its WAL position to end."""


class WalSettings(dg.Resolvable, dg.Model):
    """The source's logical replication slot, read by its WAL sensor (see docs/wal.md)."""

    slot: str | None = Field(
        default=None,
        pattern=SLOT_NAME,
        description="Name of the logical replication slot; defaults to etl_assets_<source>.",
    )
    publication: str | None = Field(
        default=None,
        pattern=SLOT_NAME,
        description="Name of the publication holding the tables; defaults to etl_assets_<source>.",
    )
    max_unread_wal_mb: int = Field(
        default=4096,
        ge=1,
        description=(
            "When the WAL written since the slot's confirmed position passes this, the sensor "
            "stops reading it, moves the slot to the present and reconciles every closed "
            "window instead (keep it below the server's max_slot_wal_keep_size)."
        ),
    )
    max_changes_per_tick: int = Field(
        default=200_000,
        ge=100,
        description="At most this many slot messages are read per tick (whole transactions).",
    )
    max_requests_per_tick: int = Field(
        default=100,
        ge=1,
        description="At most this many partitions are requested per tick; the rest next tick.",
    )
    interval_seconds: int = Field(default=30, ge=5, description="Seconds between sensor ticks.")


@dataclass(frozen=True)
class WalTable:
    """A table whose changes the source's WAL sensor follows."""

    spec: TableSpec
    asset_key: dg.AssetKey
    partitions_def: dg.TimeWindowPartitionsDefinition

    @property
    def name(self) -> str:
        """`schema.table`, as the slot's messages name it."""
        return self.spec.qualified_name

    @property
    def watched(self) -> WatchedTable:
        """The table as the slot's readiness checks take it."""
        return WatchedTable(self.spec.table_schema, self.spec.table, self.spec.partition_column)

    def ended_windows(self, through: dt.datetime) -> list[PartitionWindow]:
        """The windows ended by `through`, oldest first."""
        return [
            PartitionWindow(w.key, w.start, w.end)
            for w in tick_windows(self.partitions_def, through, None, set())
            if w.end <= through
        ]


@dataclass(frozen=True)
class WalSource:
    """Everything a WAL sensor tick of one source needs to know."""

    source: str
    slot: str
    publication: str
    settings: WalSettings
    tables: tuple[WalTable, ...]

    @classmethod
    def of(cls, source: str, settings: WalSettings, tables: Sequence[WalTable]) -> WalSource:
        """The source's WAL reading, with the default names filled in."""
        default = f"etl_assets_{source}"
        return cls(
            source,
            settings.slot or default,
            settings.publication or default,
            settings,
            tuple(tables),
        )

    @property
    def watched(self) -> list[WatchedTable]:
        """The tables as the slot's readiness checks and set-up take them."""
        return [t.watched for t in self.tables]


@dataclass(frozen=True)
class WalEvaluation:
    """One tick's decision: its requests, the cursor to store with them, and what it saw."""

    requests: tuple[WalRequest, ...]
    cursor: WalCursor
    notes: tuple[str, ...]
    slot: SlotState
    fallback: bool = False
    """The slot was too far behind to read: the tick reconciled instead (said as an error)."""
    warning: str | None = None
    """Something the operator must act on, said as a warning."""


def describe_slot(source: WalSource, state: SlotState) -> str:
    """One line on the slot's WAL, for every tick's log."""
    return (
        f"slot {source.slot}: {state.retained_bytes / MB:.1f} MB of WAL retained, "
        f"{state.pending_bytes / MB:.1f} MB unread (limit {source.settings.max_unread_wal_mb} MB), "
        f"confirmed through {lsn_text(state.confirmed_flush_lsn)}"
    )


@dataclass(frozen=True)
class _SlotRead:
    """What a tick read from the slot: its state, the source's clock, and the changes."""

    state: SlotState
    now: dt.datetime
    summary: ChangeSummary | None = None
    """The windows the changes touch (None when the slot was too far behind to read)."""
    end: int = 0
    """The LSN through which the changes are complete."""


def _read_slot(source: WalSource, settings: ConnectionSettings, cursor: WalCursor) -> _SlotRead:
    """Check the slot, move it to the cursor, and read its next changes.

    No changes are read when the slot is too far behind: the caller falls back.
    """
    with Snapshot(settings, f"etl-assets wal sensor {source.source}") as snapshot:
        problems = wal_problems(snapshot, source.publication, source.watched)
        state = slot_state(snapshot, source.slot)
        if state is None:
            problems.append(
                f"slot {source.slot} does not exist: run `etl-assets wal setup --source "
                f"{source.source}`"
            )
        if problems or state is None:
            raise WalNotReadyError(
                f"the WAL of source {source.source} cannot say which windows changed: "
                + "; ".join(problems)
            )
        if cursor.confirmed is not None and cursor.confirmed > state.confirmed_flush_lsn:
            # The previous tick's runs are stored with this cursor: the slot may move past them.
            advance_slot(snapshot, source.slot, cursor.confirmed)
            state = slot_state(snapshot, source.slot) or state
        position = source_position(snapshot)
        if state.pending_bytes > source.settings.max_unread_wal_mb * MB:
            return _SlotRead(state, position.now)
        kinds = {t.name: snapshot.partition_bound(t.spec) for t in source.tables}
        keys_of = {t.name: _keys_of(t, kinds[t.name]) for t in source.tables}
        limit = source.settings.max_changes_per_tick
        if cursor.range_end is not None:
            # Draining: exactly the same range again, nothing past it.
            tally = MessageTally(
                peek_changes(snapshot, source.slot, source.publication, upto_lsn=cursor.range_end)
            )
            summary = summarize_changes(
                (c for c in decode_pgoutput(tally) if c.commit_end_lsn <= cursor.range_end),
                keys_of,
            )
            return _SlotRead(state, position.now, summary, cursor.range_end)
        tally = MessageTally(
            peek_changes(
                snapshot,
                source.slot,
                source.publication,
                upto_lsn=position.flushed,
                upto_changes=limit,
            )
        )
        summary = summarize_changes(decode_pgoutput(tally), keys_of)
    last = tally.last_commit_end
    # Cut short by the count, the range ends at its last commit; otherwise every commit up to
    # the flushed position was read.
    end = last if tally.count >= limit and last else max(position.flushed, last or 0)
    return _SlotRead(state, position.now, summary, end)


def evaluate_wal(
    source: WalSource,
    settings: ConnectionSettings,
    cursor: WalCursor,
    recorded: Callable[[WalTable, Sequence[str]], dict[str, str | None]],
    *,
    clock_shift: dt.timedelta = dt.timedelta(0),
) -> WalEvaluation:
    """One tick of a WAL sensor (see the module's docstring).

    `recorded` gives the fingerprint recorded with each listed partition's latest load (for the
    fallback). `clock_shift` moves the source's clock (only tests use it).
    """
    read = _read_slot(source, settings, cursor)
    state = read.state
    if read.summary is None:
        return _fall_back(source, settings, cursor, state, recorded)
    confirmed = cursor.confirmed if cursor.confirmed is not None else state.confirmed_flush_lsn
    range_end = read.end if read.end > confirmed else None
    closed_through = dict(cursor.closed_through)
    touched = _touched(source, read.summary, closed_through) if range_end else []
    tick = plan_wal_tick(
        replace(cursor, confirmed=confirmed),
        touched,
        range_end,
        max_requests=source.settings.max_requests_per_tick,
    )
    requests = list(tick.requests)
    notes = [describe_slot(source, state), tick.note]
    warning = None
    if state.retained_bytes > source.settings.max_unread_wal_mb * MB:
        warning = (
            f"slot {source.slot} retains {state.retained_bytes / MB:.1f} MB of WAL, past the "
            f"limit of {source.settings.max_unread_wal_mb} MB, though it has read up to "
            f"{lsn_text(state.confirmed_flush_lsn)}: a transaction open since before that "
            "position holds it (pg_stat_activity's oldest xact_start); moving the slot cannot "
            "free it"
        )
    next_cursor = tick.cursor
    if tick.cursor.range_end is None:
        # Windows close only between drained ranges, so a range reads the same each time.
        closed = _newly_closed(source, closed_through, read.now + clock_shift)
        requests += closed
        next_cursor = replace(next_cursor, closed_through=closed_through)
        if closed:
            notes.append(f"{len(closed)} windows closed")
    return WalEvaluation(tuple(requests), next_cursor, tuple(notes), state, warning=warning)


def _keys_of(table: WalTable, kind: BoundKind) -> Callable[[WalChange], list[str]]:
    """How a change to `table` names the partitions it touches: its old row's and new row's."""
    spec = table.spec

    def keys(change: WalChange) -> list[str]:
        found: set[str] = set()
        for row in (change.old, change.new):
            value = change.value(spec.partition_column, row)
            start = local_window_start(value, kind, spec.timezone, spec.grain)
            if start is not None:
                found |= keys_for_local_start(table.partitions_def, spec.timezone, start)
        return sorted(found)

    return keys


def _touched(
    source: WalSource, summary: ChangeSummary, closed_through: Mapping[str, dt.datetime]
) -> list[TouchedWindow]:
    """The closed windows the changes touch (see `ChangeSummary.closed`).

    A table the cursor knows but the source no longer declares is left out.
    """
    return summary.closed(
        {
            table.name: [w.key for w in table.ended_windows(closed_through[table.name])]
            for table in source.tables
            if table.name in closed_through
        }
    )


def _newly_closed(
    source: WalSource, closed_through: dict[str, dt.datetime], now: dt.datetime
) -> list[WalRequest]:
    """Request the windows that closed since the cursor's `closed_through`, and move it.

    A table's first tick marks every window ended by then as known and requests none: history
    is loaded by a backfill, as with the change sensor.
    """
    requests: list[WalRequest] = []
    for table in source.tables:
        lag = table.spec.incremental.settle_lag if table.spec.incremental else dt.timedelta(0)
        until = now - lag
        previous = closed_through.get(table.name)
        windows = [
            w
            for w in tick_windows(table.partitions_def, until, previous, set())
            if w.end <= until and (previous is None or w.end > previous)
        ]
        if previous is None:
            closed_through[table.name] = windows[-1].end if windows else _first_start(table)
            continue
        budget = source.settings.max_requests_per_tick - len(requests)
        for window in windows[: max(budget, 0)]:
            requests.append(
                WalRequest(table.name, window.key, f"closed:{table.name}:{window.key}", "closed")
            )
            closed_through[table.name] = window.end
    return requests


def _first_start(table: WalTable) -> dt.datetime:
    first = table.partitions_def.get_first_partition_key()
    if first is None:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return table.partitions_def.time_window_for_partition_key(first).start


def _fall_back(
    source: WalSource,
    settings: ConnectionSettings,
    cursor: WalCursor,
    state: SlotState,
    recorded: Callable[[WalTable, Sequence[str]], dict[str, str | None]],
) -> WalEvaluation:
    """Move past the unread WAL and reconcile every closed window instead (module docstring)."""
    position = state.current_lsn
    loud = (
        f"slot {source.slot} has {state.pending_bytes / MB:.1f} MB of unread WAL, past the "
        f"limit of {source.settings.max_unread_wal_mb} MB: moving it to {lsn_text(position)} "
        "and reconciling every closed window instead of reading the changes (docs/wal.md)"
    )
    purpose = f"wal fallback {source.source}"
    # Opened after `position` was read: every transaction that could have committed before it
    # is either visible to this snapshot or open in it.
    with Snapshot(settings, f"etl-assets {purpose}") as snapshot:
        waiting = open_transactions(snapshot)
        deadline = time.monotonic() + OPEN_TRANSACTIONS_WAIT_SECONDS
        while waiting and time.monotonic() < deadline:
            time.sleep(0.2)
            waiting = still_open(snapshot, waiting)
    if waiting:
        note = (
            f"{loud}; waiting for transactions {', '.join(map(str, waiting))} to end first, "
            "the next tick tries again"
        )
        return WalEvaluation((), cursor, (note,), state, fallback=True)
    requests: list[WalRequest] = []
    for table in source.tables:
        through = cursor.closed_through.get(table.name)
        if through is None:
            continue
        windows = table.ended_windows(through)
        _, current = fingerprint_windows(settings, table.spec, _fixed(windows), purpose)
        published = {k: v for k, v in recorded(table, list(current)).items() if v is not None}
        # A window never loaded is left to the backfill, as the slot's changes would leave it.
        current = {k: v for k, v in current.items() if k in published}
        for drift in reconcile(current, published):
            requests.append(
                WalRequest(
                    table.name,
                    drift.key,
                    f"wal-fallback:{table.name}:{drift.key}:{drift.current}",
                    "wal-fallback",
                )
            )
    cursor = WalCursor(position, closed_through=cursor.closed_through)
    note = f"{loud}; {len(requests)} windows differ from what was published"
    return WalEvaluation(tuple(requests), cursor, (note,), state, fallback=True)


def _fixed(
    windows: Sequence[PartitionWindow],
) -> Callable[[SourceClock], Sequence[PartitionWindow]]:
    return lambda _clock: windows


def build_wal_sensor(source: WalSource, source_key: str) -> dg.SensorDefinition:
    """The sensor following the source's WAL for its `mode: wal` tables.

    It reads the source through the `PostgresSource` resource under `source_key`.
    """
    by_name = {t.name: t for t in source.tables}
    sensor_name = f"postgres_{source.source}__wal"

    @dg.sensor(
        name=sensor_name,
        asset_selection=[t.asset_key for t in source.tables],
        minimum_interval_seconds=source.settings.interval_seconds,
        required_resource_keys={source_key},
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Reads slot {source.slot} of source {source.source} and reloads every closed "
            "window an insert, update or delete touched (old and new row), however old; loads "
            "windows once they close. Reports the WAL the slot keeps on every tick."
        ),
    )
    def wal(context: dg.SensorEvaluationContext, **_invoked_with: object) -> dg.SensorResult:
        # A direct invocation also passes the required resources as keyword arguments.
        def recorded(table: WalTable, keys: Sequence[str]) -> dict[str, str | None]:
            return recorded_fingerprints(context.instance, table.asset_key, keys)

        evaluation = evaluate_wal(
            source,
            source_settings(context, source_key),
            WalCursor.from_json(context.cursor),
            recorded,
        )
        for note in evaluation.notes:
            if evaluation.fallback:
                context.log.error(note)
            else:
                context.log.info(note)
        warnings = [evaluation.warning] if evaluation.warning else []
        for table in source.tables:
            failing = failing_partitions(context.instance, sensor_name, table.asset_key)
            if failing:
                warnings.append(f"{table.asset_key.to_user_string()}: {describe_failing(failing)}")
        for warning in warnings:
            context.log.warning(warning)
        requests = [
            dg.RunRequest(
                run_key=r.run_key,
                partition_key=r.key,
                asset_selection=[by_name[r.table].asset_key],
                tags={REASON_TAG: r.reason},
            )
            for r in evaluation.requests
        ]
        skip = None if requests else "; ".join([*evaluation.notes, *warnings])
        return dg.SensorResult(
            run_requests=requests, cursor=evaluation.cursor.to_json(), skip_reason=skip
        )

    return wal
