"""What one declared table becomes: keys, partitions, the asset's page, its freshness rule."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from etl_assets.components.table_assets import (
    FRESHNESS_MARGIN,
    build_table_assets,
    freshness_policy,
    key_segment,
    raw_asset_key,
)
from etl_assets.lib.errors import DeclarationError
from etl_assets.lib.table.spec import SHORTEST_FRESHNESS_WINDOW, FreshnessSpec, IncrementalSpec
from etl_assets.lib.table.windows import Grain
from etl_assets_tests.support import SOURCE, revised, spec


def test_keys_keep_safe_names_and_hash_the_others() -> None:
    assert raw_asset_key("shop", spec(schema="sales", table="orders")).path == [
        "raw",
        "shop",
        "sales",
        "orders",
    ]
    assert key_segment("Shop Floor").startswith("Shop_Floor_")
    assert key_segment("Shop Floor") != key_segment("Shop-Floor")


def test_the_asset_page_shows_the_declared_columns_and_where_partitions_go() -> None:
    built = build_table_assets(SOURCE, spec(), None)
    raw = built.raw.specs_by_key[built.raw.key]
    columns = raw.metadata["dagster/column_schema"]
    assert isinstance(columns, dg.TableSchema)
    assert [c.name for c in columns.columns] == ["id", "created_at", "amount", "label"]
    assert raw.metadata["etl_assets/lake_path"] == (
        "raw/testsrc/public/events/day=<key>/part-00000.parquet"
    )
    # Nothing on the page is a machine's copy of the declaration.
    assert not any(key in raw.metadata for key in ("etl_assets/table", "etl_assets/reader"))


def test_a_table_kept_current_by_a_sensor_is_stale_a_window_and_its_settle_lag_late() -> None:
    sensed = revised(
        spec(),
        incremental=IncrementalSpec(
            change_column="created_at", settle_lag=dt.timedelta(minutes=10)
        ),
    )
    policy = freshness_policy(sensed)
    due = dt.timedelta(hours=25, minutes=10)  # the longest day, and the settle lag
    assert policy == dg.FreshnessPolicy.time_window(
        fail_window=due + FRESHNESS_MARGIN, warn_window=due + FRESHNESS_MARGIN / 4
    )
    built = build_table_assets(SOURCE, sensed, None)
    assert built.raw.specs_by_key[built.raw.key].freshness_policy == policy
    # A table nothing keeps current has no rule unless it declares one.
    assert freshness_policy(spec()) is None


def test_a_declared_rule_becomes_the_assets_freshness_policy() -> None:
    by_age = revised(
        spec(), freshness=FreshnessSpec.model_validate({"fail_after": "26h", "warn_after": "25h"})
    )
    assert freshness_policy(by_age) == dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(hours=26), warn_window=dt.timedelta(hours=25)
    )
    by_deadline = revised(
        spec(timezone="America/New_York"), freshness=FreshnessSpec(deadline_cron="0 3 * * *")
    )
    assert freshness_policy(by_deadline) == dg.FreshnessPolicy.cron(
        deadline_cron="0 3 * * *",
        lower_bound_delta=Grain.DAILY.shortest_window,
        timezone="America/New_York",
    )
    too_often = revised(spec(), freshness=FreshnessSpec(deadline_cron="0 * * * *"))
    with pytest.raises(DeclarationError, match="ticks more often than a daily window"):
        freshness_policy(too_often)


def test_the_shortest_window_a_declaration_accepts_is_the_shortest_dagster_accepts() -> None:
    shortest = FreshnessSpec.model_validate({"fail_after": "1m"})
    assert shortest.fail_after == SHORTEST_FRESHNESS_WINDOW
    assert freshness_policy(revised(spec(), freshness=shortest)) == dg.FreshnessPolicy.time_window(
        fail_window=SHORTEST_FRESHNESS_WINDOW
    )
    # A second less, Dagster itself refuses (the declaration says so first, naming the field).
    with pytest.raises(Exception, match="cannot be less than 1 minute"):
        dg.FreshnessPolicy.time_window(
            fail_window=SHORTEST_FRESHNESS_WINDOW - dt.timedelta(seconds=1)
        )
