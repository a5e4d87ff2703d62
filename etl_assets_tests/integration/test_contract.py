"""The contract in action: drift at the source, empty partitions, and the checks per partition."""

from __future__ import annotations

import io
import uuid

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from etl_assets.components.table_assets import (
    LAKE_IO_MANAGER_KEY,
    build_table_assets,
)
from etl_assets.lib.table.spec import ColumnChecks, ColumnSpec, PrimaryKeyCheck, TableSpec
from etl_assets_tests.support import (
    SOURCE,
    Pipeline,
    check_results,
    failure_text,
    revised,
    run_sql,
    spec,
)

DDL = """
CREATE TABLE orders (
    id         bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    total      numeric(12, 2) NOT NULL,
    status     text,
    note       text
);
INSERT INTO orders
SELECT g, timestamptz '2026-10-02 00:00+00' + g * interval '1 hour', g * 10.5,
       CASE WHEN g % 2 = 0 THEN 'paid' ELSE 'open' END, NULL
FROM generate_series(0, 23) g;
"""

CONTRACT = (
    ColumnSpec("id", "bigint", nullable=False),
    ColumnSpec("created_at", "timestamptz", nullable=False),
    ColumnSpec("total", "numeric(12,2)", nullable=False),
    ColumnSpec("status", "text", nullable=True),
)
DAY = "2026-10-02"


@pytest.fixture
def orders(pipeline: Pipeline) -> Pipeline:
    run_sql(pipeline.conninfo, DDL)
    return pipeline


def orders_spec(
    columns: tuple[ColumnSpec, ...] = CONTRACT,
    primary_key_check: PrimaryKeyCheck = PrimaryKeyCheck.WARN,
) -> TableSpec:
    return revised(spec(table="orders", columns=columns), primary_key_check=primary_key_check)


@pytest.mark.parametrize(
    ("change", "diff"),
    [
        (
            "ALTER TABLE orders DROP COLUMN status",
            "status: declared, but the table has no such column",
        ),
        (
            "ALTER TABLE orders RENAME COLUMN status TO state",
            "status: declared, but the table has no such column (renamed? undeclared columns: "
            "state, note)",
        ),
        (
            "ALTER TABLE orders ALTER COLUMN total TYPE numeric(14, 2)",
            "total: declared type numeric(12,2), live type numeric(14,2)",
        ),
        (
            "ALTER TABLE orders ALTER COLUMN status SET NOT NULL",
            "status: declared nullable, live NOT NULL",
        ),
        (
            "ALTER TABLE orders ALTER COLUMN total DROP NOT NULL",
            "total: declared NOT NULL, live nullable",
        ),
    ],
)
def test_drift_fails_the_run_with_a_readable_diff_before_anything_is_read(
    orders: Pipeline, change: str, diff: str
) -> None:
    run_sql(orders.conninfo, change)
    result = orders.materialize(orders_spec(), partition=DAY, raise_on_error=False)
    assert not result.success
    error = failure_text(result)
    assert "the live table public.orders does not match its contract" in error
    assert f"  - {diff}" in error
    assert "etl-assets introspect" in error
    assert orders.objects() == {}
    # The UI shows which check refused the partition.
    assert check_results(orders, result) == {("schema_matches_contract", DAY): False}


def test_a_read_that_disagrees_with_the_snapshot_count_is_refused_and_shown(
    orders: Pipeline,
) -> None:
    # A row-level security policy that shows rows only to statements that count them: the
    # server itself makes the read and the snapshot's count(*) disagree.
    role = f"count_reader_{uuid.uuid4().hex[:8]}"
    run_sql(
        orders.conninfo,
        sql.SQL(
            "CREATE ROLE {role} LOGIN PASSWORD 'count-reader-pw';"
            " GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON orders TO {role};"
            " ALTER TABLE orders ENABLE ROW LEVEL SECURITY;"
            " CREATE POLICY only_counted ON orders FOR SELECT"
            " USING (current_query() ILIKE '%count(*)%')"
        )
        .format(role=sql.Identifier(role))
        .as_string(),
    )
    dsn = make_conninfo(orders.conninfo, user=role, password="count-reader-pw")
    result = orders.materialize(
        orders_spec(), partition=DAY, source={"dsn": dsn}, raise_on_error=False
    )
    assert not result.success
    error = failure_text(result)
    assert "row_count_matches_source: 0 rows read, 24 counted by count(*)" in error
    assert "nothing was published" in error
    assert orders.objects() == {}
    assert check_results(orders, result)[("row_count_matches_source", DAY)] is False


def test_an_added_column_is_reported_and_ignored(orders: Pipeline) -> None:
    run_sql(orders.conninfo, "ALTER TABLE orders ADD COLUMN coupon text DEFAULT 'X'")
    result = orders.materialize(orders_spec(), partition=DAY)
    assert result.success
    metadata = orders.metadata(orders_spec(), DAY)
    assert metadata["source_undeclared_columns"] == "note, coupon"
    body = next(iter(orders.objects()))
    table = pq.read_table(
        io.BytesIO(
            orders.endpoint.client().get_object(Bucket=orders.bucket, Key=body)["Body"].read()
        )
    )
    assert table.column_names == ["id", "created_at", "total", "status"]


def test_an_empty_partition_is_a_valid_file_with_the_contracts_schema(orders: Pipeline) -> None:
    assert orders.materialize(orders_spec(), partition="2026-10-05").success
    [key] = orders.objects()
    body = orders.endpoint.client().get_object(Bucket=orders.bucket, Key=key)["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    assert table.num_rows == 0
    assert table.schema == pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("total", pa.decimal128(12, 2), nullable=False),
            pa.field("status", pa.string()),
        ]
    )
    assert orders.metadata(orders_spec(), "2026-10-05")["dagster/row_count"] == 0


def test_checks_are_recorded_per_partition_even_in_a_range_run(orders: Pipeline) -> None:
    checked = orders_spec(
        columns=(
            *CONTRACT[:3],
            ColumnSpec("status", checks=ColumnChecks(accepted_values=("paid", "open"))),
        )
    )
    result = orders.materialize(checked, partition_range=("2026-10-02", "2026-10-03"))
    assert result.success
    outcomes = check_results(orders, result)
    names = {
        "row_count_matches_source",
        "schema_matches_contract",
        "primary_key_unique_not_null",
        "values_status",
    }
    assert outcomes == {(name, day): True for name in names for day in ("2026-10-02", "2026-10-03")}


def test_a_failing_non_blocking_check_is_reported_with_the_published_partition(
    orders: Pipeline,
) -> None:
    run_sql(orders.conninfo, "UPDATE orders SET status = 'lost' WHERE id = 3")
    checked = orders_spec(
        columns=(
            *CONTRACT[:3],
            ColumnSpec("status", checks=ColumnChecks(accepted_values=("paid", "open"))),
        )
    )
    result = orders.materialize(checked, partition=DAY)
    assert result.success
    assert check_results(orders, result)["values_status", DAY] is False
    assert len(orders.objects()) == 1


# Dagster counts the source table's spec, which has no backfill policy, when it builds the
# in-process job for the two assets; it warns and falls back to one partition per run.
@pytest.mark.filterwarnings(
    "ignore:Asset job __ephemeral_asset_job__ materializes assets with varying"
)
def test_a_failing_blocking_check_keeps_the_partition_out_and_stops_downstream(
    orders: Pipeline,
) -> None:
    run_sql(orders.conninfo, "UPDATE orders SET total = -1 WHERE id = 5")
    checked = orders_spec(
        columns=(
            ColumnSpec("id"),
            ColumnSpec("created_at"),
            ColumnSpec("total", checks=ColumnChecks(min=0, blocking=True)),
        )
    )
    built = build_table_assets(SOURCE, checked, None)
    downstream_ran: list[bool] = []

    @dg.asset(
        ins={"orders": dg.AssetIn(built.raw.key)},
        partitions_def=built.raw.partitions_def,
        io_manager_key=LAKE_IO_MANAGER_KEY,
    )
    def downstream(orders: object) -> None:
        downstream_ran.append(True)

    result = dg.materialize(
        [built.source, built.raw, downstream],
        partition_key=DAY,
        instance=orders.instance,
        resources=orders.resources(checked),
        selection=[built.raw.key, downstream.key],
        raise_on_error=False,
    )
    assert not result.success
    error = failure_text(result)
    assert "blocking check(s) failed: values_total: total: 1 row(s) break min" in error
    assert "violating_keys_sample: (id=5)" in error
    assert orders.objects() == {}
    assert downstream_ran == []
    assert [e.asset_key for e in result.get_asset_materialization_events()] == []


def test_duplicate_keys_are_found_without_a_unique_index(orders: Pipeline) -> None:
    run_sql(orders.conninfo, "ALTER TABLE orders DROP CONSTRAINT orders_pkey")
    run_sql(orders.conninfo, "INSERT INTO orders VALUES (7, '2026-10-02 20:30+00', 1, 'paid')")
    warned = orders.materialize(orders_spec(), partition=DAY)
    assert warned.success
    assert check_results(orders, warned)["primary_key_unique_not_null", DAY] is False
    blocked = orders.materialize(
        orders_spec(primary_key_check=PrimaryKeyCheck.BLOCKING), partition=DAY, raise_on_error=False
    )
    assert not blocked.success
    assert "duplicate_keys_sample: (id=7)" in failure_text(blocked)


def test_the_schema_check_compares_the_written_file_with_the_plan(orders: Pipeline) -> None:
    result = orders.materialize(
        orders_spec(),
        partition=DAY,
        transform=lambda frame: frame.with_columns(pl.col("total").cast(pl.Float64)).drop("status"),
    )
    assert result.success
    [evaluation] = [
        e.dagster_event.event_specific_data
        for e in orders.instance.all_logs(
            result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
        if e.dagster_event
        and isinstance(e.dagster_event.event_specific_data, dg.AssetCheckEvaluation)
        and e.dagster_event.event_specific_data.check_name == "schema_matches_contract"
    ]
    assert isinstance(evaluation, dg.AssetCheckEvaluation)
    assert evaluation.metadata["written_vs_planned"].value == (
        "total: planned decimal128(12, 2), written double; status: not written"
    )
