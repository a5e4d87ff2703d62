"""Incremental loading: which partitions to (re)load, decided from what the source says.

Three facts drive every decision, all read from Postgres:

* the *safe time*: the server's `now()`, or the start of the oldest transaction still open in
  the database if that is earlier. A row whose change column (or partition column) is older
  than the safe time is committed or will never be: no open transaction can still add one;
* the windows whose rows changed since the cursor's watermark (by the declared change column);
  each tick reads the range `[watermark, safe time)` and requests the changed windows in order
  of (oldest change, partition key). When more windows changed than one tick may request, the
  range stays fixed and the cursor keeps the position of the last requested window (the
  tie-breaker), so the next tick carries on after it: a bulk update that stamps hundreds of
  windows with the same `now()` is requested over several ticks, none skipped and none
  repeated unless it changes again meanwhile;
* the windows that closed since the last tick: a window is closed once `end + settle lag` has
  passed and `end` is before the safe time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Fingerprint:
    """What a window held, cheaply: row count, newest change, and a hash of its rows' keys."""

    rows: int
    newest_change: str | None
    row_hash: str

    @property
    def text(self) -> str:
        """The fingerprint as recorded in metadata."""
        return f"rows={self.rows};newest={self.newest_change or '-'};hash={self.row_hash}"

    @property
    def version(self) -> str:
        """A short data version derived from the fingerprint (same rows, same version)."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SourceClock:
    """The source's view of time at one tick."""

    now: dt.datetime
    oldest_open_transaction: dt.datetime | None
    """Start of the oldest transaction that could still commit rows, if any is open."""
    hidden_sessions: int = 0
    """Sessions the role cannot see into (without pg_read_all_stats); they could be writing."""
    prepared_transactions: int = 0
    """Two-phase transactions prepared in the database: they can still commit rows, and the
    catalog does not say when they started."""

    @property
    def safe_time(self) -> dt.datetime:
        """Rows stamped before this are committed, or will never be."""
        if self.oldest_open_transaction is None:
            return self.now
        return min(self.now, self.oldest_open_transaction)

    def settled(self, window_end: dt.datetime, settle_lag: dt.timedelta) -> bool:
        """The settle rule: a window that ended `window_end` is closed for good."""
        return window_end <= self.safe_time and window_end + settle_lag <= self.now


@dataclass(frozen=True)
class WindowBounds:
    """A partition key and its window."""

    key: str
    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class ChangedWindow:
    """A window holding rows whose change column moved in the tick's range."""

    key: str
    oldest_change: dt.datetime
    newest_change: dt.datetime
    rows: int


@dataclass(frozen=True, order=True)
class ChangePosition:
    """Where a changed window sorts in a tick's range: its oldest change, then its key."""

    oldest_change: dt.datetime
    key: str


@dataclass(frozen=True)
class ChangeCursor:
    """What a change sensor has seen; stored as JSON in the sensor's cursor."""

    watermark: dt.datetime | None = None
    """Every change older than this has been looked at."""
    closed_through: dt.datetime | None = None
    """Every window ending at or before this has been requested as closed."""
    backlog_until: dt.datetime | None = None
    """Set while more windows changed in `[watermark, backlog_until)` than one tick could request:
    ticks read that same range until every window in it has been requested."""
    requested_through: ChangePosition | None = None
    """The tie-breaker while a backlog lasts: windows up to this position are requested."""

    @property
    def scan_until(self) -> dt.datetime | None:
        """The end of the change range the next tick must read (None: the safe time)."""
        return self.backlog_until

    def to_json(self) -> str:
        """The cursor as stored by Dagster."""
        position = self.requested_through
        return json.dumps(
            {
                "watermark": _format(self.watermark),
                "closed_through": _format(self.closed_through),
                "backlog_until": _format(self.backlog_until),
                "requested_through": (
                    {"oldest_change": position.oldest_change.isoformat(), "key": position.key}
                    if position
                    else None
                ),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> ChangeCursor:
        """A cursor from its JSON (an empty cursor for the first tick)."""
        if not text:
            return cls()
        data = json.loads(text)
        position = data.get("requested_through")
        return cls(
            watermark=_parse(data.get("watermark")),
            closed_through=_parse(data.get("closed_through")),
            backlog_until=_parse(data.get("backlog_until")),
            requested_through=(
                ChangePosition(
                    dt.datetime.fromisoformat(position["oldest_change"]), position["key"]
                )
                if position
                else None
            ),
        )


def _parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _format(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class Request:
    """One partition to load, why, and the run key that makes the request unique."""

    key: str
    reason: str
    run_key: str


@dataclass(frozen=True)
class TickPlan:
    """What one tick requests, and the cursor to store with those requests."""

    requests: tuple[Request, ...]
    cursor: ChangeCursor
    notes: tuple[str, ...] = field(default=())


def settle_blocker(clock: SourceClock) -> str | None:
    """Why no window can count as settled at this moment, if something stops it."""
    if clock.hidden_sessions:
        return (
            f"cannot see into {clock.hidden_sessions} session(s) of other roles, which could "
            "commit rows late; grant pg_read_all_stats to the extraction role"
        )
    if clock.prepared_transactions:
        return (
            f"{clock.prepared_transactions} prepared transaction(s) can still commit rows of "
            "unknown age; nothing counts as settled until they are committed or rolled back "
            "(pg_prepared_xacts)"
        )
    return None


def plan_tick(
    cursor: ChangeCursor,
    clock: SourceClock,
    settle_lag: dt.timedelta,
    windows: Sequence[WindowBounds],
    changed: Sequence[ChangedWindow],
    *,
    max_requests: int = 100,
    scanned_until: dt.datetime | None = None,
) -> TickPlan:
    """Decide one tick of a change sensor.

    `windows` are the table's partitions up to the safe time, `changed` the windows touched in
    `[cursor.watermark, scanned_until)`; `scanned_until` defaults to the cursor's backlog end, or
    else the safe time. Closed windows not yet requested are requested once; already-closed
    windows with changes are requested again; changes in still-open windows wait for their window
    to close (it is then read whole). At most `max_requests` windows are requested in a tick;
    the cursor then keeps the range and the position of the last requested window, and the next
    tick carries on after it.
    """
    safe = clock.safe_time
    blocker = settle_blocker(clock)
    if blocker is not None:
        return TickPlan((), cursor, (blocker,))
    range_end = scanned_until or cursor.backlog_until or safe

    def closed(window: WindowBounds) -> bool:
        return clock.settled(window.end, settle_lag)

    if cursor.watermark is None:
        # First tick: start from now. History is a backfill, launched on purpose.
        last_closed = max((w.end for w in windows if closed(w)), default=None)
        return TickPlan(
            (),
            ChangeCursor(watermark=safe, closed_through=last_closed),
            (f"first tick: watching changes from {safe.isoformat()}",),
        )

    by_key = {w.key: w for w in windows}
    requests: list[Request] = []
    newly_closed = [
        w
        for w in windows
        if closed(w) and (cursor.closed_through is None or w.end > cursor.closed_through)
    ]
    for window in sorted(newly_closed, key=lambda w: w.end)[:max_requests]:
        requests.append(Request(window.key, "closed", f"{window.key}:closed"))
    closed_through = max((by_key[r.key].end for r in requests), default=cursor.closed_through)
    requested = {r.key for r in requests}
    position = cursor.requested_through
    for change in sorted(changed, key=_position):
        if position is not None and _position(change) <= position:
            continue  # requested by an earlier tick over this same range
        window = by_key.get(change.key)
        still_open = window is not None and (closed_through is None or window.end > closed_through)
        if window is not None and change.key not in requested and not still_open:
            if len(requests) >= max_requests:
                return TickPlan(
                    tuple(requests),
                    replace(
                        cursor,
                        closed_through=closed_through,
                        backlog_until=range_end,
                        requested_through=position,
                    ),
                    (f"more than {max_requests} partitions to request; the next tick carries on",),
                )
            requests.append(
                Request(
                    change.key,
                    "changed",
                    f"{change.key}:changed:{change.newest_change.isoformat()}:{change.rows}",
                )
            )
            requested.add(change.key)
        # Requested now, by the closed rule, or read whole when its window closes.
        position = _position(change)
    watermark = max(range_end, cursor.watermark)
    return TickPlan(
        tuple(requests),
        ChangeCursor(watermark=watermark, closed_through=closed_through),
    )


def _position(change: ChangedWindow) -> ChangePosition:
    return ChangePosition(change.oldest_change, change.key)


@dataclass(frozen=True)
class Drift:
    """A closed window whose fingerprint differs from the one recorded when it was loaded."""

    key: str
    recorded: str | None
    current: str


def reconcile(
    current: Mapping[str, Fingerprint], recorded: Mapping[str, str | None]
) -> list[Drift]:
    """The windows whose source no longer matches what was published (hard deletes included)."""
    return [
        Drift(key, recorded.get(key), fingerprint.text)
        for key, fingerprint in current.items()
        if recorded.get(key) != fingerprint.text
    ]
