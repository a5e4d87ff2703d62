"""Pure Polars logic of the curated assets (no I/O: the IO managers bring and take frames)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from etl_assets.lib.table.windows import PartitionWindow


def order_payments(orders: pl.LazyFrame, payments: pl.LazyFrame) -> pl.LazyFrame:
    """Each order with its payment (if any): how much was paid, how and how fast.

    `payments` must cover every payment that can belong to the orders (payments come within
    hours, so the orders' day and the next day).
    """
    paid = payments.select(
        "order_id",
        pl.col("payment_id"),
        pl.col("paid_at"),
        pl.col("amount").alias("paid_amount"),
        pl.col("method").alias("payment_method"),
    )
    return (
        orders.select("order_id", "customer_id", "placed_at", "status", "currency", "total")
        .join(paid, on="order_id", how="left")
        .with_columns(
            ((pl.col("paid_at") - pl.col("placed_at")).dt.total_seconds() / 60.0)
            .round(1)
            .alias("minutes_to_pay"),
            (pl.col("paid_amount") == pl.col("total")).fill_null(False).alias("fully_paid"),
        )
        .sort("order_id")
    )


def split_by_window(
    frame: pl.LazyFrame, column: str, windows: Sequence[PartitionWindow]
) -> dict[str, pl.LazyFrame]:
    """One frame per window: the rows whose `column` lies in `[start, end)`."""
    return {
        window.key: frame.filter((pl.col(column) >= window.start) & (pl.col(column) < window.end))
        for window in windows
    }
