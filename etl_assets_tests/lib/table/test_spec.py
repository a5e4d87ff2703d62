import datetime as dt

import pytest
import yaml
from pydantic import ValidationError

from etl_assets.lib.table.spec import (
    ColumnSpec,
    IncrementalSpec,
    NullPartitionRows,
    ReconcileCompare,
    ReconcileSpec,
    TableSpec,
)
from etl_assets.lib.table.windows import Grain

ENTRY = """
schema: sales
table: orders
partition_column: placed_at
grain: weekly
start: "2026-09-28"
end: "2026-12-28"
timezone: Europe/Berlin
primary_key: [order_id]
columns:
  - {name: order_id, type: bigint, nullable: false}
  - total
null_partition_rows: report
max_partitions_per_run: 7
partition_name: wk
incremental: {change_column: updated_at, settle_lag: 90s}
reconcile: {cron: "15 3 * * *", partitions: 3, compare: rows}
preview_rows: 3
preview_mask: [total]
group: sales
"""


def entry(**changes: object) -> dict[str, object]:
    return {**yaml.safe_load(ENTRY), **changes}


def test_yaml_is_validated_into_the_typed_declaration_the_code_uses() -> None:
    spec = TableSpec.model_validate(entry())
    assert spec == TableSpec(
        schema="sales",
        table="orders",
        partition_column="placed_at",
        grain=Grain.WEEKLY,
        start=dt.datetime(2026, 9, 28),
        end=dt.datetime(2026, 12, 28),
        timezone="Europe/Berlin",
        primary_key=("order_id",),
        columns=(ColumnSpec("order_id", "bigint", nullable=False), ColumnSpec("total")),
        null_partition_rows=NullPartitionRows.REPORT,
        max_partitions_per_run=7,
        partition_name="wk",
        incremental=IncrementalSpec(
            change_column="updated_at", settle_lag=dt.timedelta(seconds=90)
        ),
        reconcile=ReconcileSpec(cron="15 3 * * *", partitions=3, compare=ReconcileCompare.ROWS),
        preview_rows=3,
        preview_mask=("total",),
        group="sales",
    )
    assert spec.incremental is not None
    assert spec.incremental.settle_lag == dt.timedelta(seconds=90)
    assert spec.read_columns == ("order_id", "total", "placed_at")
    assert spec.fingerprint_columns == spec.read_columns
    assert spec.hive_partition_name == "wk"
    assert spec.qualified_name == "sales.orders"


def test_the_declaration_is_frozen_and_its_defaults_are_the_documented_ones() -> None:
    spec = TableSpec.model_validate(
        {
            "schema": "public",
            "table": "t",
            "partition_column": "ts",
            "grain": "daily",
            "start": "2026-01-01",
            "primary_key": ["id"],
            "columns": ["id", "ts"],
        }
    )
    assert (spec.timezone, spec.end, spec.preview_rows, spec.hive_partition_name) == (
        "UTC",
        None,
        5,
        "day",
    )
    assert spec.fingerprint_columns == ("id",)
    assert not spec.fingerprint_sees_updates
    with pytest.raises(ValidationError, match="frozen"):
        spec.table = "other"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"start": "2026-09-29"}, "is not the start of a weekly window"),
        ({"end": "2026-09-28"}, "field `end`: 2026-09-28 00:00:00 is not after start"),
        ({"primary_key": ["id"]}, "field `primary_key`: id not in `columns`"),
        ({"primary_key": ["order_id", "order_id"]}, "lists order_id more than once"),
        ({"partition_name": "total"}, "readers would confuse with column `total`"),
        ({"preview_mask": ["email"]}, "field `preview_mask`: email not in `columns`"),
        ({"grain": "fortnightly"}, "Input should be 'hourly', 'daily', 'weekly' or 'monthly'"),
        ({"incremental": {"change_column": "u", "settle_lag": "ten"}}, "is not a duration"),
        ({"reconcile": {"cron": "daily"}}, "is not a cron expression"),
        ({"freshness": {"fail_after": "30s"}}, "30s is shorter than Dagster's shortest freshness"),
        ({"freshness": {"fail_after": "2h", "warn_after": "59s"}}, "59s is shorter than Dagster"),
        ({"freshness": {"fail_after": "1h", "warn_after": "1h"}}, "`warn_after` needs a longer"),
        ({"freshness": {}}, "declare either `deadline_cron` or `fail_after`"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_declaration_is_refused_naming_what_is_wrong(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        TableSpec.model_validate(entry(**changes))
