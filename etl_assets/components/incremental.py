"""The sensor and schedule that keep one table's partitions current (see lib/incremental.py)."""

import bisect
import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from zoneinfo import ZoneInfo

import dagster as dg

from etl_assets.lib.incremental import (
    ChangeCursor,
    ChangedWindow,
    SourceClock,
    TickPlan,
    WindowBounds,
    plan_tick,
    reconcile,
    settle_blocker,
)
from etl_assets.lib.postgres.changes import fingerprint_windows, scan_changes
from etl_assets.lib.postgres.session import ConnectionSettings
from etl_assets.lib.table.spec import TableSpec
from etl_assets.lib.table.windows import PartitionWindow
from etl_assets.resources.postgres import PostgresSource
from etl_assets.resources.reporting import FINGERPRINT_METADATA_KEY

REASON_TAG = "etl_assets/reason"
# Tags Dagster itself puts on runs: the sensor that requested a run, and the run's partition.
SENSOR_NAME_TAG = "dagster/sensor_name"
PARTITION_TAG = "dagster/partition"
# How far back a sensor's runs are read to find partitions that keep failing.
FAILING_RUNS_TO_READ = 500


def failing_partitions(
    instance: dg.DagsterInstance,
    sensor_name: str,
    asset_key: dg.AssetKey,
) -> dict[str, int]:
    """The partitions whose latest run from this sensor failed, with how many failed in a row.

    Run retries count: a retried run carries its parent's sensor tag. A partition materialized
    after its failed run (from the UI, a backfill, the reconcile schedule) is not failing. Runs
    of the sensor that target other assets (a WAL sensor serves several) are not counted.
    """
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={SENSOR_NAME_TAG: sensor_name}), limit=FAILING_RUNS_TO_READ
    )
    failed_in_a_row: dict[str, int] = {}
    failed_at: dict[str, float] = {}
    settled: set[str] = set()
    for record in records:  # newest first
        run = record.dagster_run
        key = run.tags.get(PARTITION_TAG)
        if key is None or key in settled:
            continue
        if run.asset_selection is not None and asset_key not in run.asset_selection:
            continue
        if run.status == dg.DagsterRunStatus.FAILURE:
            failed_in_a_row[key] = failed_in_a_row.get(key, 0) + 1
            failed_at.setdefault(key, record.end_time or record.create_timestamp.timestamp())
        else:
            settled.add(key)
    latest = latest_materializations(instance, asset_key, list(failed_in_a_row))
    return {
        key: count
        for key, count in failed_in_a_row.items()
        if key not in latest or latest[key].timestamp <= failed_at[key]
    }


def describe_failing(failing: dict[str, int]) -> str:
    """One line naming the failing partitions, for the sensor's tick log."""
    listed = ", ".join(
        f"{key} ({count} failed run{'s' if count > 1 else ''} in a row)"
        for key, count in sorted(failing.items())
    )
    return (
        f"latest run failed for {listed}; a partition is requested again when its rows change, "
        "or can be rematerialized from the UI"
    )


def _window(partitions_def: dg.TimeWindowPartitionsDefinition, key: str) -> WindowBounds:
    window = partitions_def.time_window_for_partition_key(key)
    return WindowBounds(key, window.start, window.end)


def tick_windows(
    partitions_def: dg.TimeWindowPartitionsDefinition,
    until: dt.datetime,
    ended_after: dt.datetime | None,
    changed_keys: set[str],
) -> list[WindowBounds]:
    """The windows one tick decides on, in order.

    Those ended by `until` that end after `ended_after` (all of them when None), and those of
    the changed keys: a table's history can hold tens of thousands of windows, and a tick
    computes only these.
    """
    keys = partitions_def.get_partition_keys(current_time=until)
    first = (
        0
        if ended_after is None
        else bisect.bisect_right(keys, ended_after, key=lambda k: _window(partitions_def, k).end)
    )
    return [
        _window(partitions_def, key)
        for index, key in enumerate(keys)
        if index >= first or key in changed_keys
    ]


def keys_for_local_start(
    partitions_def: dg.TimeWindowPartitionsDefinition, timezone: str, local_start: dt.datetime
) -> set[str]:
    """The partition keys whose windows start at a local wall-clock time.

    Both keys, when a daylight-saving change repeats that time.
    """
    zone = ZoneInfo(timezone)
    keys: set[str] = set()
    for fold in (0, 1):
        moment = local_start.replace(tzinfo=zone, fold=fold)
        try:
            keys.add(partitions_def.get_partition_key_for_timestamp(moment.timestamp()))
        except (ValueError, dg.DagsterInvalidInvocationError):
            continue  # before the first or after the last partition
    return keys


def source_settings(
    context: dg.SensorEvaluationContext | dg.ScheduleEvaluationContext, source_key: str
) -> ConnectionSettings:
    """How to reach the source the sensor or schedule requires (`required_resource_keys`).

    Read from `context.resources`, which holds the required resources both under the daemon
    and when a test invokes the function directly. Dagster passes resources as arguments only
    to parameters annotated with a resource type, whose name is the key; a key that depends on
    the source cannot be a parameter name.
    """
    source = getattr(context.resources, source_key, None)
    if not isinstance(source, PostgresSource):
        raise dg.DagsterInvariantViolationError(
            f"resource {source_key!r} must be the PostgresSource of the table's source, "
            f"got {type(source).__name__}; register it as PostgresTablesComponent does"
        )
    return source.connection_settings()


def evaluate_changes(
    spec: TableSpec,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    settings: ConnectionSettings,
    cursor: ChangeCursor,
    *,
    purpose: str,
    clock_shift: dt.timedelta = dt.timedelta(0),
    max_requests: int = 100,
) -> TickPlan:
    """One tick of a change sensor: read the source, then decide (`plan_tick`).

    `clock_shift` moves the source's `now()` (only tests use it, to stand at a later moment
    without waiting for it).
    """
    incremental = spec.incremental
    assert incremental is not None
    scan = scan_changes(settings, spec, cursor.watermark, purpose, until=cursor.scan_until)
    clock = replace(scan.clock, now=scan.clock.now + clock_shift)
    changed = [
        ChangedWindow(key, bucket.oldest_change, bucket.newest_change, bucket.rows)
        for bucket in scan.changed
        for key in keys_for_local_start(partitions_def, spec.timezone, bucket.local_start)
    ]
    windows = tick_windows(
        partitions_def, clock.now, cursor.closed_through, {c.key for c in changed}
    )
    tick = plan_tick(
        cursor,
        clock,
        incremental.settle_lag,
        windows,
        changed,
        max_requests=max_requests,
        scanned_until=scan.scanned_until,
    )
    if tick.cursor.watermark is not None and tick.cursor.watermark > scan.scanned_until:
        # Never move past what was actually scanned (a shifted clock must not skip changes).
        tick = replace(tick, cursor=replace(tick.cursor, watermark=scan.scanned_until))
    return tick


def build_change_sensor(
    spec: TableSpec,
    asset_key: dg.AssetKey,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    source_key: str,
) -> dg.SensorDefinition:
    """A sensor requesting exactly the partitions that closed or changed since its cursor.

    It reads the source through the `PostgresSource` resource under `source_key`.
    """
    incremental = spec.incremental
    assert incremental is not None

    sensor_name = f"{asset_key.to_python_identifier()}__changes"

    @dg.sensor(
        name=sensor_name,
        asset_selection=[asset_key],
        minimum_interval_seconds=incremental.interval_seconds,
        required_resource_keys={source_key},
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Loads partitions of {asset_key.to_user_string()} once their window closes "
            f"(end + {incremental.settle_lag}, and no older transaction open), and reloads "
            f"closed partitions whose rows' `{incremental.change_column}` moved."
        ),
    )
    def changes(context: dg.SensorEvaluationContext, **_invoked_with: object) -> dg.SensorResult:
        # A direct invocation also passes the required resources as keyword arguments.
        tick = evaluate_changes(
            spec,
            partitions_def,
            source_settings(context, source_key),
            ChangeCursor.from_json(context.cursor),
            purpose=f"sensor {asset_key.to_user_string()}",
        )
        for note in tick.notes:
            context.log.info(note)
        failing = failing_partitions(context.instance, sensor_name, asset_key)
        notes = [*tick.notes]
        if failing:
            notes.append(describe_failing(failing))
            context.log.warning(notes[-1])
        requests = [
            dg.RunRequest(
                run_key=request.run_key,
                partition_key=request.key,
                asset_selection=[asset_key],
                tags={REASON_TAG: request.reason},
            )
            for request in tick.requests
        ]
        skip = None if requests else "; ".join(notes) or "nothing closed or changed"
        return dg.SensorResult(
            run_requests=requests, cursor=tick.cursor.to_json(), skip_reason=skip
        )

    return changes


def latest_materializations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, keys: Sequence[str]
) -> dict[str, dg.EventLogRecord]:
    """The latest materialization record of each of these partitions that has one."""
    latest: dict[str, dg.EventLogRecord] = {}
    if not keys:
        return latest
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=list(keys)), limit=10_000
    ).records
    for record in records:  # newest first
        event = record.asset_materialization
        if event is not None and event.partition is not None:
            latest.setdefault(event.partition, record)
    return latest


def recorded_fingerprints(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, keys: Sequence[str]
) -> dict[str, str | None]:
    """The fingerprint recorded with each partition's latest materialization."""
    recorded: dict[str, str | None] = dict.fromkeys(keys)
    for key, record in latest_materializations(instance, asset_key, keys).items():
        event = record.asset_materialization
        value = event.metadata.get(FINGERPRINT_METADATA_KEY) if event is not None else None
        recorded[key] = str(getattr(value, "value", value)) if value else None
    return recorded


def build_reconcile_schedule(
    spec: TableSpec,
    asset_key: dg.AssetKey,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    source_key: str,
) -> dg.ScheduleDefinition:
    """A schedule re-fingerprinting the newest closed partitions and reloading any that drifted.

    It reads the source through the `PostgresSource` resource under `source_key`.
    """
    settings = spec.reconcile
    assert settings is not None

    @dg.schedule(
        name=f"{asset_key.to_python_identifier()}__reconcile",
        cron_schedule=settings.cron,
        execution_timezone=spec.timezone,
        target=[asset_key],
        required_resource_keys={source_key},
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"Re-fingerprints the newest {settings.partitions} closed partitions of "
            f"{asset_key.to_user_string()} (rows, newest change, hash of "
            f"{'every column' if settings.compare.value == 'rows' else 'the primary key'}) and "
            "reloads those that differ from what was published: hard deletes and silent updates."
        ),
    )
    def reconcile_schedule(
        context: dg.ScheduleEvaluationContext, **_invoked_with: object
    ) -> Sequence[dg.RunRequest] | dg.SkipReason:
        # A direct invocation also passes the required resources as keyword arguments.
        now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        lag = spec.incremental.settle_lag if spec.incremental else dt.timedelta(0)
        ended = partitions_def.get_partition_keys(current_time=now)

        def newest_settled(clock: SourceClock) -> list[PartitionWindow]:
            # The settle rule of the change sensor: a window still settling is not compared.
            if settle_blocker(clock) is not None:
                return []
            settled: list[PartitionWindow] = []
            for key in reversed(ended):  # newest first, only as far back as needed
                window = _window(partitions_def, key)
                if clock.settled(window.end, lag):
                    settled.append(PartitionWindow(key, window.start, window.end))
                    if len(settled) == settings.partitions:
                        break
            return settled[::-1]

        clock, current = fingerprint_windows(
            source_settings(context, source_key),
            spec,
            newest_settled,
            f"reconcile {asset_key.to_user_string()}",
        )
        blocker = settle_blocker(clock)
        if blocker is not None:
            return dg.SkipReason(blocker)
        if not current:
            return dg.SkipReason(
                f"no partition has settled yet (window end + {lag}, and no transaction open "
                "from before it)"
            )
        drifts = reconcile(
            current, recorded_fingerprints(context.instance, asset_key, list(current))
        )
        if not drifts:
            return dg.SkipReason(f"the newest {len(current)} settled partitions match the source")
        return [
            dg.RunRequest(
                run_key=f"{drift.key}:reconcile:{drift.current}",
                partition_key=drift.key,
                tags={REASON_TAG: "reconcile"},
            )
            for drift in drifts
        ]

    return reconcile_schedule
