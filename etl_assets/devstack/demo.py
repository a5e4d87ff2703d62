"""`make demo`: real Dagster runs on the embedded stack, then the lake compared with the source."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg

from etl_assets.devstack.stack import LAKE_BUCKET, LAKE_PREFIX, PROJECT_ROOT, DevStack
from etl_assets.devstack.verify import (
    Comparison,
    compare_rows,
    compare_table_partition,
    lake_rows,
    read_lake_partition,
)
from etl_assets.lib.table.spec import TableSpec

ORDERS = "raw/shop/sales/orders"
PAYMENTS = "raw/shop/sales/payments"
PAGE_VIEWS = "raw/shop/web/page_views"
CURATED = "curated/shop/order_payments"


@dataclass(frozen=True)
class DemoRun:
    """One `dg launch`: assets and a partition, or a range `first...last`."""

    assets: tuple[str, ...]
    partitions: str

    def command(self) -> list[str]:
        """The command line a person would type (with the venv's `dg`)."""
        flag = "--partition-range" if "..." in self.partitions else "--partition"
        dg_cli = str(Path(sys.executable).parent / "dg")
        return [dg_cli, "launch", "--assets", ",".join(self.assets), flag, self.partitions]


# Stages run one after the other; the runs of a stage are independent and run two at a time.
DEMO_RUNS = (
    (
        DemoRun((ORDERS, PAYMENTS), "2026-10-01"),
        DemoRun((ORDERS, PAYMENTS), "2026-10-02"),
        DemoRun((PAGE_VIEWS,), "2026-10-01"),
        DemoRun((PAGE_VIEWS,), "2026-10-02"),
        # One run over a 7-day range: one streaming read per window, one object per partition.
        DemoRun((ORDERS, PAYMENTS), "2026-10-03...2026-10-09"),
    ),
    # The curated asset reads the raw partitions published above.
    (DemoRun((CURATED,), "2026-10-01...2026-10-08"),),
)


@dataclass(frozen=True)
class SummaryRow:
    """One line of the demo's summary."""

    asset: str
    partition: str
    rows: int
    bytes: int
    key: str
    checks: str
    check: str

    @property
    def passed(self) -> bool:
        """Whether the lake partition equals the source and its Dagster checks passed."""
        return self.check.startswith("equal") and "failed" not in self.checks


def launch_runs(
    stack: DevStack, stages: Sequence[Sequence[DemoRun]] = DEMO_RUNS, parallel: int = 2
) -> None:
    """Launch each run with `dg launch`, as a user would; they are recorded on the instance."""
    environment = stack.process_environment()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for stage in stages:
            for line in pool.map(lambda run: _launch(run, environment), stage):
                print(line, flush=True)  # noqa: T201


def _launch(run: DemoRun, environment: Mapping[str, str]) -> str:
    started = time.perf_counter()
    result = subprocess.run(  # noqa: S603 - fixed command built above
        run.command(),
        cwd=PROJECT_ROOT,
        env=dict(environment),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"dg launch {','.join(run.assets)} {run.partitions} failed:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    seconds = time.perf_counter() - started
    return f"  ran {', '.join(run.assets)} [{run.partitions}] in {seconds:.1f}s"


def materializations(stack: DevStack) -> list[tuple[str, str, dict[str, Any]]]:
    """(asset, partition, metadata) of the latest materialization of every partition."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    with dg.DagsterInstance.from_config(str(stack.dagster_home)) as instance:
        for key in instance.get_asset_keys():
            records = instance.fetch_materializations(key, limit=10_000, ascending=True).records
            for record in records:
                event = record.asset_materialization
                if event is None:
                    continue
                metadata = {k: getattr(v, "value", v) for k, v in event.metadata.items()}
                latest[(key.to_user_string(), event.partition or "")] = metadata
    return [(asset, partition, meta) for (asset, partition), meta in sorted(latest.items())]


CURATED_SQL = """
    SELECT o.order_id, o.customer_id, o.placed_at, o.status::text AS status, o.currency,
           o.total, p.payment_id, p.paid_at, p.amount AS paid_amount,
           p.method AS payment_method, coalesce(p.amount = o.total, false) AS fully_paid
    FROM sales.orders o
    LEFT JOIN sales.payments p
      ON p.order_id = o.order_id AND p.paid_at >= %(start)s
     AND p.paid_at < %(start)s + interval '2 days'
    WHERE o.placed_at >= %(start)s AND o.placed_at < %(end)s
    ORDER BY o.order_id"""


def verify_curated(stack: DevStack, key: str) -> Comparison:
    """The curated partition against the same join computed by Postgres."""
    window = dg.DailyPartitionsDefinition("2026-10-01").time_window_for_partition_key(key)
    with psycopg.connect(stack.source_conninfo(), options="-c TimeZone=UTC") as connection:
        cursor = connection.execute(CURATED_SQL, {"start": window.start, "end": window.end})
        names = [d.name for d in cursor.description or []]
        source = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    lake = read_lake_partition(stack.s3, f"{LAKE_BUCKET}/{LAKE_PREFIX}/{CURATED}", "day", key)
    return compare_rows(source, lake_rows(lake, ("order_id",)))


def check_evaluations(stack: DevStack) -> dict[tuple[str, str], dict[str, bool]]:
    """The latest outcome of every asset check, per (asset, partition)."""
    latest: dict[tuple[str, str], dict[str, bool]] = {}
    with dg.DagsterInstance.from_config(str(stack.dagster_home)) as instance:
        for run in reversed(instance.get_runs()):
            for entry in instance.all_logs(
                run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            ):
                event = entry.dagster_event
                evaluation = event.event_specific_data if event is not None else None
                if isinstance(evaluation, dg.AssetCheckEvaluation):
                    target = (evaluation.asset_key.to_user_string(), evaluation.partition or "")
                    latest.setdefault(target, {})[evaluation.check_name] = evaluation.passed
    return latest


def describe_checks(outcomes: Mapping[str, bool]) -> str:
    """`5/5 passed`, or which failed."""
    if not outcomes:
        return "-"
    failed = sorted(name for name, passed in outcomes.items() if not passed)
    passed = len(outcomes) - len(failed)
    if failed:
        return f"{passed}/{len(outcomes)} passed, failed: {', '.join(failed)}"
    return f"{passed}/{len(outcomes)} passed"


def summarize(stack: DevStack, tables: Mapping[str, TableSpec]) -> list[SummaryRow]:
    """One row per materialized partition, each checked against the source."""
    rows: list[SummaryRow] = []
    checks = check_evaluations(stack)
    catalog = stack.iceberg_catalog()
    for asset, partition, metadata in materializations(stack):
        if asset in tables:
            comparison = compare_table_partition(
                stack.source_conninfo(),
                stack.s3,
                f"{LAKE_BUCKET}/{LAKE_PREFIX}",
                asset=asset,
                table=tables[asset],
                key=partition,
                catalog=catalog,
            )
        elif asset == CURATED:
            comparison = verify_curated(stack, partition)
        else:
            continue
        uri = str(metadata.get("dagster/uri", ""))
        if "iceberg_table" in metadata:
            uri = f"iceberg {metadata['iceberg_table']} snapshot {metadata['iceberg_snapshot_id']}"
        rows.append(
            SummaryRow(
                asset=asset,
                partition=partition,
                rows=int(metadata.get("dagster/row_count", -1)),
                bytes=int(metadata.get("size_bytes", -1)),
                key=uri.removeprefix(f"s3://{LAKE_BUCKET}/"),
                checks=describe_checks(checks.get((asset, partition), {})),
                check=comparison.describe(),
            )
        )
    return rows


def format_summary(rows: Sequence[SummaryRow]) -> str:
    """The summary as an aligned text table."""
    header = ("asset", "partition", "rows", "bytes", "key", "dagster checks", "lake vs source")
    table = [
        header,
        *(
            (r.asset, r.partition, str(r.rows), str(r.bytes), r.key, r.checks, r.check)
            for r in rows
        ),
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
