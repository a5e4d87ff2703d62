"""Deciding one tick of a WAL sensor: which windows a range of the slot's changes asks for.

The slot says which rows changed (`lib/postgres/wal.py`); this decides, without touching any
service, which partitions to request and what the sensor's cursor becomes. The cursor holds the
LSN through which runs were requested: the sensor moves the slot there at the start of the next
tick, once Dagster has stored the cursor together with this tick's run requests, so a change
is never dropped before its run is reserved. A range that touches more windows than one tick
may request is drained over ticks: the cursor keeps the range's end and how many of its windows
(in a fixed order) were requested, and the next tick reads the same range again and carries on.
Run keys name the window and the newest commit that touched it, so a tick that is repeated, or
retried after reading later WAL with the same changes, asks for the same runs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from etl_assets.lib.postgres.wal import ChangeKind, WalChange, lsn_text, parse_lsn


@dataclass(frozen=True)
class WalCursor:
    """Where a WAL sensor stands."""

    confirmed: int | None = None
    """The LSN through which every change's runs were requested (None: nothing yet)."""
    range_end: int | None = None
    """The end of a range being drained over several ticks."""
    requested: int = 0
    """How many of that range's windows, in order, were requested already."""
    closed_through: Mapping[str, dt.datetime] = field(default_factory=dict[str, dt.datetime])
    """Per table (`schema.table`): the end of the last window requested once it closed."""

    def to_json(self) -> str:
        """The cursor as Dagster stores it."""
        return json.dumps(
            {
                "confirmed": lsn_text(self.confirmed) if self.confirmed is not None else None,
                "range_end": lsn_text(self.range_end) if self.range_end is not None else None,
                "requested": self.requested,
                "closed_through": {
                    table: end.isoformat() for table, end in sorted(self.closed_through.items())
                },
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> WalCursor:
        """The cursor Dagster stored (an empty one before the first tick)."""
        if not text:
            return cls()
        data = json.loads(text)
        confirmed, range_end = data.get("confirmed"), data.get("range_end")
        return cls(
            parse_lsn(confirmed) if confirmed else None,
            parse_lsn(range_end) if range_end else None,
            int(data.get("requested", 0)),
            {
                table: dt.datetime.fromisoformat(end)
                for table, end in (data.get("closed_through") or {}).items()
            },
        )


@dataclass(frozen=True, order=True)
class TouchedWindow:
    """A partition of one table that a change touched."""

    table: str
    """The table's qualified name, `schema.table`."""
    key: str
    lsn: int = 0
    """The end of the newest commit that touched it: its run key, so that the same changes
    ask for the same run however much later WAL a tick reads with them."""


@dataclass(frozen=True)
class WalRequest:
    """One partition of one table to load, why, and the run key that makes it unique."""

    table: str
    key: str
    run_key: str
    reason: str = "wal"
    """`wal` (its rows changed), `closed` (its window closed) or `wal-fallback`."""


@dataclass(frozen=True)
class WalTick:
    """What one tick requests, and the cursor to store with those requests."""

    requests: tuple[WalRequest, ...]
    cursor: WalCursor
    note: str


KeysOf = Callable[[WalChange], Iterable[str]]
"""The partition keys a change touches in its table: the old row's and the new row's."""


@dataclass(frozen=True)
class ChangeSummary:
    """What a range of changes says, in as much memory as the windows it touches."""

    touched: list[TouchedWindow]
    """Every window an old or a new row falls in, once each, in order of table and key."""
    truncated: dict[str, int]
    """The tables a `TRUNCATE` emptied (every window of theirs changed), each with the end of
    the last commit that truncated it."""

    def closed(self, closed_keys: Mapping[str, Sequence[str]]) -> list[TouchedWindow]:
        """The touched windows among each table's closed ones (`closed_keys`), in order.

        A truncated table touches all of its closed windows. A window not closed yet is left
        out: it is loaded whole when it closes.
        """
        newest: dict[tuple[str, str], int] = {}
        for window in self.touched:
            if window.key in closed_keys.get(window.table, ()):
                newest[window.table, window.key] = window.lsn
        for table, lsn in self.truncated.items():
            for key in closed_keys.get(table, ()):
                newest[table, key] = max(newest.get((table, key), 0), lsn)
        return [TouchedWindow(table, key, lsn) for (table, key), lsn in sorted(newest.items())]


def summarize_changes(changes: Iterable[WalChange], keys_of: Mapping[str, KeysOf]) -> ChangeSummary:
    """The windows the changes touch and the tables they truncate, read in one pass.

    `keys_of` maps each watched table's qualified name to how its changes name partitions;
    changes to other tables are not this sensor's.
    """
    newest: dict[tuple[str, str], int] = {}
    truncated: dict[str, int] = {}
    for change in changes:
        table = f"{change.relation.schema}.{change.relation.table}"
        keys = keys_of.get(table)
        if keys is None:
            continue
        if change.kind is ChangeKind.TRUNCATE:
            truncated[table] = max(truncated.get(table, 0), change.commit_end_lsn)
            continue
        for key in keys(change):
            newest[table, key] = max(newest.get((table, key), 0), change.commit_end_lsn)
    touched = [TouchedWindow(table, key, lsn) for (table, key), lsn in sorted(newest.items())]
    return ChangeSummary(touched, truncated)


def plan_wal_tick(
    cursor: WalCursor,
    touched: list[TouchedWindow],
    range_end: int | None,
    *,
    max_requests: int = 100,
) -> WalTick:
    """Decide one tick from the windows touched by the changes up to `range_end`.

    `touched` must be in the order `summarize_changes` gives, and `range_end` the end LSN of the
    last whole transaction read (None when the slot had nothing new). When the cursor is
    draining a range, the changes must be those of that same range.
    """
    if range_end is None:
        return WalTick((), cursor, "no new changes in the slot")
    if cursor.range_end is not None and cursor.range_end != range_end:
        raise ValueError(
            f"the cursor is draining the changes up to {lsn_text(cursor.range_end)}, "
            f"but the changes read end at {lsn_text(range_end)}"
        )
    done = cursor.requested if cursor.range_end is not None else 0
    batch = touched[done : done + max_requests]
    requests = tuple(
        WalRequest(
            window.table, window.key, f"wal:{window.table}:{window.key}:{lsn_text(window.lsn)}"
        )
        for window in batch
    )
    requested = done + len(batch)
    if requested < len(touched):
        return WalTick(
            requests,
            WalCursor(cursor.confirmed, range_end, requested, cursor.closed_through),
            f"{len(touched)} windows changed up to {lsn_text(range_end)}: requested "
            f"{requested} so far, the next tick carries on",
        )
    return WalTick(
        requests,
        WalCursor(range_end, closed_through=cursor.closed_through),
        f"{len(touched)} windows changed up to {lsn_text(range_end)}"
        + (f": requested the last {len(batch)}" if done else ""),
    )
