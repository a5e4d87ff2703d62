from collections.abc import Iterator

import dagster as dg
import polars as pl

from etl_assets.components.automation import follows_upstream
from etl_assets.components.table_assets import LAKE_IO_MANAGER_KEY
from etl_assets.lib.curated import order_payments, split_by_window
from etl_assets.lib.table.windows import Grain, PartitionWindow
from etl_assets.resources.lake import S3Lake

ORDERS = dg.AssetKey(["raw", "shop", "sales", "orders"])
PAYMENTS = dg.AssetKey(["raw", "shop", "sales", "payments"])

daily_utc = dg.TimeWindowPartitionsDefinition(
    start="2026-10-01",
    fmt=Grain.DAILY.key_format,
    cron_schedule=Grain.DAILY.cron_schedule,
    timezone="UTC",
)


@dg.asset(
    key=["curated", "shop", "order_payments"],
    ins={
        "orders": dg.AssetIn(ORDERS),
        # A payment arrives within hours of its order: the order's day and the next one.
        "payments": dg.AssetIn(
            PAYMENTS,
            partition_mapping=dg.TimeWindowPartitionMapping(
                end_offset=1, allow_nonexistent_upstream_partitions=True
            ),
        ),
    },
    partitions_def=daily_utc,
    backfill_policy=dg.BackfillPolicy.single_run(),
    # A day is rebuilt once the orders or payments it reads get a new data version.
    automation_condition=follows_upstream(),
    io_manager_key=LAKE_IO_MANAGER_KEY,
    group_name="shop_curated",
    kinds={"polars", "parquet", "s3"},
    description=(
        "Orders placed in the day, each with its payment (amount, method, minutes to pay), "
        "joined from the raw orders of the day and the raw payments of the day and the next."
    ),
)
def curated_order_payments(
    context: dg.AssetExecutionContext, orders: pl.LazyFrame, payments: pl.LazyFrame, lake: S3Lake
) -> Iterator[dg.MaterializeResult]:
    """Orders of each day with their payments, one lake partition per day of the run."""
    windows = [
        PartitionWindow(key, window.start, window.end)
        for key in context.partition_keys
        for window in [daily_utc.time_window_for_partition_key(key)]
    ]
    frames = split_by_window(order_payments(orders, payments), "placed_at", windows)
    yield from lake.publish_frames(context, dict(frames))
