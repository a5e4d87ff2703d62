import datetime as dt
import decimal

import polars as pl

from etl_assets.lib.curated import order_payments, split_by_window
from etl_assets.lib.table.windows import PartitionWindow

UTC = dt.UTC


def test_orders_get_their_payment_and_time_to_pay() -> None:
    placed = dt.datetime(2026, 10, 1, 23, 50, tzinfo=UTC)
    orders = pl.LazyFrame(
        {
            "order_id": [1, 2],
            "customer_id": [7, 8],
            "placed_at": [placed, placed],
            "status": ["paid", "placed"],
            "currency": ["EUR", "USD"],
            "total": [decimal.Decimal("10.00"), decimal.Decimal("5.00")],
        }
    )
    payments = pl.LazyFrame(
        {
            "payment_id": [11],
            "order_id": [1],
            "paid_at": [placed + dt.timedelta(minutes=15)],
            "amount": [decimal.Decimal("10.00")],
            "method": ["card"],
        }
    )
    result = order_payments(orders, payments).collect()
    assert result.get_column("minutes_to_pay").to_list() == [15.0, None]
    assert result.get_column("fully_paid").to_list() == [True, False]
    assert result.get_column("payment_method").to_list() == ["card", None]


def test_split_by_window_puts_boundary_rows_in_exactly_one_window() -> None:
    day1 = PartitionWindow(
        "d1", dt.datetime(2026, 10, 1, tzinfo=UTC), dt.datetime(2026, 10, 2, tzinfo=UTC)
    )
    day2 = PartitionWindow("d2", day1.end, dt.datetime(2026, 10, 3, tzinfo=UTC))
    frame = pl.LazyFrame(
        {"ts": [day1.start, day1.end - dt.timedelta(microseconds=1), day1.end, day2.end]}
    )
    parts = {k: v.collect().height for k, v in split_by_window(frame, "ts", [day1, day2]).items()}
    assert parts == {"d1": 2, "d2": 1}
