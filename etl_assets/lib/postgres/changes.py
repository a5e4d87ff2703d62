"""Reading from the source what incremental loading decides on.

The clock, recent changes and window fingerprints, each in a short read-only session named
`etl-assets <purpose>`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from etl_assets.lib.incremental import Fingerprint, SourceClock, settle_blocker
from etl_assets.lib.postgres import sql as q
from etl_assets.lib.postgres.session import ConnectionSettings, Snapshot
from etl_assets.lib.postgres.types import TablePlan
from etl_assets.lib.table.spec import TableSpec
from etl_assets.lib.table.windows import PartitionWindow


@dataclass(frozen=True)
class ChangedBucket:
    """Rows changed in one window, which is named by its local start (`date_trunc`)."""

    local_start: dt.datetime
    oldest_change: dt.datetime
    newest_change: dt.datetime
    rows: int


@dataclass(frozen=True)
class ChangeScan:
    """One sensor tick's reading of the source."""

    clock: SourceClock
    changed: tuple[ChangedBucket, ...]
    scanned_until: dt.datetime
    """The end of the change range that was read."""


def read_clock(snapshot: Snapshot) -> SourceClock:
    """The source's now, oldest open transaction, and sessions hidden from this role."""
    now, oldest, hidden, prepared = snapshot.query(q.SOURCE_CLOCK)[0]
    return SourceClock(
        now=now,
        oldest_open_transaction=oldest,
        hidden_sessions=int(hidden),
        prepared_transactions=int(prepared),
    )


def scan_changes(
    settings: ConnectionSettings,
    spec: TableSpec,
    since: dt.datetime | None,
    purpose: str,
    until: dt.datetime | None = None,
) -> ChangeScan:
    """The clock, and the windows with rows changed in `[since, until)`.

    `until` is the safe time unless given (and never later than it).
    """
    change_column = spec.change_column
    if change_column is None:
        raise ValueError(f"{spec.qualified_name} declares no change column")
    with Snapshot(settings, f"etl-assets {purpose}") as snapshot:
        clock = read_clock(snapshot)
        if since is None or settle_blocker(clock) is not None:
            return ChangeScan(clock, (), clock.safe_time)
        scanned_until = clock.safe_time if until is None else min(until, clock.safe_time)
        plan = snapshot.plan(spec)
        statement = q.changed_windows(
            plan.relation,
            partition_column=spec.partition_column,
            kind=plan.partition_bound,
            unit=spec.grain.trunc_unit,
            timezone=spec.timezone,
            change_column=change_column,
            since=since,
            until=scanned_until,
        )
        changed = tuple(
            ChangedBucket(start, oldest, newest, int(rows))
            for start, oldest, newest, rows in snapshot.query(statement)
        )
    return ChangeScan(clock, changed, scanned_until)


def fingerprint_windows(
    settings: ConnectionSettings,
    spec: TableSpec,
    choose: Callable[[SourceClock], Sequence[PartitionWindow]],
    purpose: str,
) -> tuple[SourceClock, dict[str, Fingerprint]]:
    """The clock, and the fingerprint of each window `choose(clock)` picks.

    The fingerprints are computed as the reader computes them, in the snapshot the clock was
    read in.
    """
    with Snapshot(settings, f"etl-assets {purpose}") as snapshot:
        clock = read_clock(snapshot)
        windows = choose(clock)
        plan: TablePlan = snapshot.plan(spec)
        rows = (
            snapshot.query(
                q.window_stats(
                    plan.relation,
                    spec.partition_column,
                    windows,
                    plan.partition_bound,
                    q.fingerprint_aggregates(spec.change_column, spec.fingerprint_columns),
                )
            )
            if windows
            else []
        )
    fingerprints = {
        window.key: Fingerprint(int(count), str(newest) if newest else None, str(digest))
        for (_, count, newest, digest), window in zip(rows, windows, strict=True)
    }
    return clock, fingerprints
