"""`follows_upstream()`: a downstream partition follows the data versions of what it reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pytest

from etl_assets.components.automation import (
    AUTOMATION_SENSOR,
    FOLLOWS_UPSTREAM,
    IN_PROGRESS,
    UPSTREAM_CHANGED,
    UPSTREAM_IN_PROGRESS,
    UPSTREAM_MISSING,
    automation_sensor,
    follows_upstream,
)
from etl_assets.components.table_assets import lake_resources
from etl_assets.defs.curated.order_payments import (
    ORDERS,
    PAYMENTS,
    curated_order_payments,
    daily_utc,
)
from etl_assets.resources.lake import S3Lake
from etl_assets.resources.reporting import DATA_VERSION_TAG

NOW = dt.datetime(2026, 10, 8, 12, tzinfo=dt.UTC)

# The demo's curated order payments: a day of orders and two days of payments.
joined = curated_order_payments


@dg.asset(key=ORDERS, partitions_def=daily_utc)
def orders() -> None:
    """Stands for the raw orders: runs of it can be in flight."""


@dg.asset(key=PAYMENTS, partitions_def=daily_utc)
def payments() -> None:
    """Stands for the raw payments."""


DEFS = dg.Definitions(
    assets=[orders, payments, joined], resources=lake_resources(S3Lake(bucket="lake"))
)


class Ticks:
    """Successive evaluations of the automation conditions, as the sensor's ticks are."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.cursor: object = None

    def report(self, key: dg.AssetKey, day: str, version: str) -> None:
        """A materialization of `key`'s `day` with data version `version`."""
        self.instance.report_runless_asset_event(
            dg.AssetMaterialization(key, partition=day, tags={DATA_VERSION_TAG: version})
        )

    def run(self, key: dg.AssetKey, day: str) -> str:
        """A run of `key`'s `day`, queued: in progress until it ends."""
        run = self.instance.create_run_for_job(
            job_def=DEFS.resolve_implicit_global_asset_job_def(),
            asset_selection=frozenset({key}),
            tags={"dagster/partition": day},
        )
        return run.run_id

    def end(self, run_id: str) -> None:
        """The run is over (its materialization, if any, reported before)."""
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        self.instance.report_run_canceled(run)

    def requested(self) -> set[str | None]:
        """The partitions of `joined` the next tick requests."""
        result = dg.evaluate_automation_conditions(
            DEFS,
            self.instance,
            evaluation_time=NOW,
            cursor=self.cursor,  # type: ignore[arg-type]
        )
        self.cursor = result.cursor
        return set(result.get_requested_partitions(joined.key))


@pytest.fixture
def ticks() -> Iterator[Ticks]:
    with dg.instance_for_test() as instance:
        ticks = Ticks(instance)
        for day in ("2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"):
            ticks.report(ORDERS, day, f"orders-{day}")
            ticks.report(PAYMENTS, day, f"payments-{day}")
        assert ticks.requested() == set()  # the first tick only sets where changes start
        yield ticks


def test_a_new_data_version_requests_exactly_the_partitions_that_read_it(ticks: Ticks) -> None:
    ticks.report(ORDERS, "2026-10-02", "orders-changed")
    assert ticks.requested() == {"2026-10-02"}
    ticks.report(joined.key, "2026-10-02", "run-1")  # the requested run
    assert ticks.requested() == set()
    # Payments of a day are read by that day and the day before.
    ticks.report(PAYMENTS, "2026-10-03", "payments-changed")
    assert ticks.requested() == {"2026-10-02", "2026-10-03"}


def test_a_change_seen_on_the_tick_after_its_request_runs_the_partition_again(
    ticks: Ticks,
) -> None:
    ticks.report(ORDERS, "2026-10-02", "orders-changed")
    assert ticks.requested() == {"2026-10-02"}
    # The requested run may have read the payments before this change.
    ticks.report(PAYMENTS, "2026-10-02", "payments-changed")
    assert ticks.requested() == {"2026-10-01", "2026-10-02"}
    assert ticks.requested() == set()


def test_a_reload_that_keeps_the_data_version_requests_nothing(ticks: Ticks) -> None:
    ticks.report(ORDERS, "2026-10-02", "orders-2026-10-02")
    ticks.report(PAYMENTS, "2026-10-02", "payments-2026-10-02")
    assert ticks.requested() == set()


def test_a_partition_waits_while_a_partition_it_reads_is_missing(ticks: Ticks) -> None:
    # 2026-10-04 reads the payments of 2026-10-05, which were never loaded.
    ticks.report(ORDERS, "2026-10-04", "orders-changed")
    assert ticks.requested() == set()
    ticks.report(PAYMENTS, "2026-10-05", "payments-2026-10-05")
    assert ticks.requested() == {"2026-10-04"}


def test_changes_over_several_ticks_before_a_run_request_once_each(ticks: Ticks) -> None:
    ticks.report(ORDERS, "2026-10-01", "orders-v2")
    ticks.report(ORDERS, "2026-10-01", "orders-v3")
    assert ticks.requested() == {"2026-10-01"}
    assert ticks.requested() == set()


def test_a_change_while_its_own_run_is_in_flight_runs_the_partition_again(ticks: Ticks) -> None:
    ticks.report(ORDERS, "2026-10-02", "orders-changed")
    assert ticks.requested() == {"2026-10-02"}
    run = ticks.run(joined.key, "2026-10-02")
    assert ticks.requested() == set()
    # The run may read the payments before or after this change: it waits, then runs again.
    ticks.report(PAYMENTS, "2026-10-02", "payments-changed")
    assert ticks.requested() == {"2026-10-01"}
    assert ticks.requested() == set()
    ticks.report(joined.key, "2026-10-02", "run-1")
    ticks.end(run)
    assert ticks.requested() == {"2026-10-02"}
    assert ticks.requested() == set()


def test_a_partition_waits_while_a_partition_it_reads_is_being_loaded(ticks: Ticks) -> None:
    ticks.report(ORDERS, "2026-10-03", "orders-changed")
    reload = ticks.run(ORDERS, "2026-10-03")  # another load of the day, still running
    assert ticks.requested() == set()
    ticks.report(ORDERS, "2026-10-03", "orders-changed")
    ticks.end(reload)
    assert ticks.requested() == {"2026-10-03"}


def test_a_failed_run_is_not_requested_again_until_the_next_change(ticks: Ticks) -> None:
    ticks.report(ORDERS, "2026-10-02", "orders-changed")
    assert ticks.requested() == {"2026-10-02"}
    ticks.end(ticks.run(joined.key, "2026-10-02"))  # ended without a materialization
    assert ticks.requested() == set()
    ticks.report(ORDERS, "2026-10-02", "orders-changed-again")
    assert ticks.requested() == {"2026-10-02"}


def labels(condition: dg.AutomationCondition) -> set[str]:
    """The labels of a condition and of every condition under it."""
    own = {condition.get_label()} - {None}
    return {label for label in own if label} | {
        label for child in condition.children for label in labels(child)
    }


def test_the_condition_names_its_reasons_and_the_sensor_runs_by_default() -> None:
    assert {
        FOLLOWS_UPSTREAM,
        UPSTREAM_CHANGED,
        UPSTREAM_MISSING,
        UPSTREAM_IN_PROGRESS,
        IN_PROGRESS,
    } <= labels(follows_upstream())
    sensor = automation_sensor()
    assert sensor.name == AUTOMATION_SENSOR
    assert sensor.default_status is dg.DefaultSensorStatus.RUNNING
