"""`etl-assets`: the project's command line.

    etl-assets introspect                       list the tables the role can read
    etl-assets introspect sales.orders          columns, planned Parquet types, partition-column
                                                candidates, and a YAML entry (the contract)
    etl-assets pools [--apply]                  each source's extraction pool and limit
    etl-assets lake abort-uploads [--min-age 6h] [--dry-run]
                                                abort multipart uploads left by killed loads
    etl-assets wal setup|status|drop [--source NAME]
                                                the slot and publication of each WAL sensor

The connection comes from `--dsn-env` (the name of an environment variable holding a libpq
DSN, like `source.dsn_env` in defs.yaml) or from libpq's own variables (PGHOST, PGUSER, ...).
The password comes from PGPASSWORD, ~/.pgpass, or `--password-env`: never from the command
line, where other users of the machine could read it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import boto3
import botocore.exceptions
from psycopg import sql

from etl_assets.cli import wal
from etl_assets.cli.settings import env_settings
from etl_assets.components.postgres_tables import declared_pools
from etl_assets.lib.lake.cleanup import abort_stale_uploads
from etl_assets.lib.lake.iceberg import catalog_tables, maintain
from etl_assets.lib.postgres.introspect import (
    TABLES_QUERY,
    TableReport,
    describe_estimate,
    indexed_columns_query,
    primary_key_query,
    relation_kind,
    report_table,
    yaml_entry,
)
from etl_assets.lib.postgres.session import Snapshot
from etl_assets.lib.postgres.sql import Relation, render
from etl_assets.lib.table.windows import Grain, parse_duration
from etl_assets.resources.catalog import IcebergCatalog


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etl-assets", description="etl_assets command line")
    commands = parser.add_subparsers(dest="command", required=True)
    introspect = commands.add_parser(
        "introspect",
        help="list tables, or show one table's contract and a YAML entry for it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    introspect.add_argument("table", nargs="?", help="schema.table to describe")
    introspect.add_argument("--dsn-env", help="environment variable holding the libpq DSN")
    introspect.add_argument("--password-env", help="environment variable holding the password")
    introspect.add_argument("--columns", help="comma-separated columns to declare (default: all)")
    introspect.add_argument("--partition-column", help="default: the best candidate")
    introspect.add_argument("--grain", choices=[g.value for g in Grain], default="daily")
    introspect.add_argument("--timezone", default="UTC")
    introspect.add_argument("--start", help="first window (default: the oldest row's window)")
    introspect.add_argument("--yaml-only", action="store_true", help="print only the YAML entry")
    pools = commands.add_parser(
        "pools",
        help="show each source's extraction pool and limit; --apply sets them on the instance",
    )
    pools.add_argument(
        "--apply",
        action="store_true",
        help="set each pool's limit on the Dagster instance of $DAGSTER_HOME",
    )
    lake = commands.add_parser("lake", help="maintenance of the lake's bucket")
    lake_commands = lake.add_subparsers(dest="lake_command", required=True)
    abort = lake_commands.add_parser(
        "abort-uploads",
        help="abort incomplete multipart uploads that no running load can own",
        description=(
            "A load killed outright leaves its invisible multipart upload behind. This aborts "
            "those under the lake's prefix older than --min-age. The bucket is "
            "$ETL_LAKE_BUCKET and the prefix $ETL_LAKE_PREFIX unless given; the endpoint and "
            "credentials come from the AWS chain (AWS_ENDPOINT_URL, AWS_REGION, ...)."
        ),
    )
    abort.add_argument("--bucket", default=os.environ.get("ETL_LAKE_BUCKET"))
    abort.add_argument("--prefix", default=os.environ.get("ETL_LAKE_PREFIX", ""))
    abort.add_argument(
        "--min-age",
        default="6h",
        help="only uploads started this long ago or more (default 6h, the longest run)",
    )
    abort.add_argument("--dry-run", action="store_true", help="list, do not abort")
    maintenance = lake_commands.add_parser(
        "iceberg-maintenance",
        help="expire old snapshots of the Iceberg tables and remove their orphan data files",
        description=(
            "For every table of the Iceberg catalog ($ETL_ICEBERG_CATALOG, "
            "$ETL_ICEBERG_CATALOG_URI, $ETL_ICEBERG_WAREHOUSE), or those named with --table: "
            "snapshots older than --retain are expired (time travel reaches back that far), "
            "then data files no kept snapshot refers to and older than --min-age are deleted "
            "(files of runs killed before their commit, and of expired snapshots)."
        ),
    )
    maintenance.add_argument(
        "--table", action="append", default=[], help="namespace.table (repeatable; default: all)"
    )
    maintenance.add_argument(
        "--min-age",
        default="6h",
        help="only orphan files written this long ago or more (default 6h, the longest run)",
    )
    maintenance.add_argument(
        "--retain", default="7d", help="keep snapshots younger than this (default 7d)"
    )
    maintenance.add_argument("--dry-run", action="store_true", help="list, change nothing")
    wal.add_wal_arguments(
        commands.add_parser(
            "wal",
            help=wal.WAL_HELP,
            description=wal.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Entry point of `etl-assets`."""
    args = _parser().parse_args(argv)
    if args.command == "pools":
        return _pools(apply=args.apply, out=out)
    if args.command == "wal":
        return wal.run_wal(args, out)
    if args.command == "lake":
        if args.lake_command == "iceberg-maintenance":
            return _iceberg_maintenance(args, out)
        return _abort_uploads(args, out)
    return _introspect(args, out)


def _introspect(args: argparse.Namespace, out: TextIO) -> int:
    try:
        settings = env_settings(args.dsn_env, args.password_env)
        with Snapshot(settings, "etl-assets introspect") as snapshot:
            if args.table is None:
                _list_tables(snapshot, out)
                return 0
            relation = _relation(args.table)
            report = _report(snapshot, relation)
            grain = Grain(args.grain)
            partition = args.partition_column or (
                report.partition_candidates[0] if report.partition_candidates else None
            )
            start = args.start or (
                _first_window(snapshot, relation, partition, grain, args.timezone)
                if partition
                else None
            )
            columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
            entry = yaml_entry(
                report,
                columns=columns,
                partition_column=partition,
                grain=grain,
                start=start or "2026-01-01",
                timezone=args.timezone,
            )
    except (ValueError, RuntimeError) as error:
        print(f"etl-assets introspect: {error}", file=sys.stderr)  # noqa: T201
        return 2
    if not args.yaml_only:
        _print_report(report, out)
        out.write("\nYAML entry for the `tables:` list of the source's defs.yaml:\n\n")
    out.write(entry)
    return 0


def set_pool_limits(pools: Mapping[str, int], environment: Mapping[str, str] | None = None) -> None:
    """Set each pool's limit on the instance of `$DAGSTER_HOME` (in `environment`)."""
    dagster = str(Path(sys.executable).parent / "dagster")
    for pool, limit in pools.items():
        # The public CLI, so the limit lands wherever that instance stores it.
        subprocess.run(  # noqa: S603 - fixed program, arguments from our own definitions
            [dagster, "instance", "concurrency", "set", pool, str(limit)],
            env=dict(environment) if environment is not None else None,
            check=True,
            capture_output=True,
        )


def _pools(*, apply: bool, out: TextIO) -> int:
    pools = declared_pools()
    for pool, limit in sorted(pools.items()):
        out.write(f"{pool}: {limit}\n")
    if apply:
        set_pool_limits(pools)
        out.write("applied to the instance of $DAGSTER_HOME\n")
    return 0


def _abort_uploads(args: argparse.Namespace, out: TextIO) -> int:
    if not args.bucket:
        print("etl-assets lake: set --bucket or ETL_LAKE_BUCKET", file=sys.stderr)  # noqa: T201
        return 2
    try:
        min_age = parse_duration(args.min_age)
        client = boto3.client("s3")
        stale = abort_stale_uploads(
            client, args.bucket, args.prefix, min_age=min_age, dry_run=args.dry_run
        )
    except (
        ValueError,
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ClientError,
    ) as error:
        print(f"etl-assets lake: {error}", file=sys.stderr)  # noqa: T201
        return 2
    verb = "would abort" if args.dry_run else "aborted"
    for upload in stale:
        started = upload.initiated.isoformat(timespec="seconds")
        out.write(f"{verb} s3://{args.bucket}/{upload.key} (started {started})\n")
    out.write(f"{len(stale)} upload(s) {verb} under s3://{args.bucket}/{args.prefix}\n")
    return 0


def _iceberg_maintenance(args: argparse.Namespace, out: TextIO) -> int:
    try:
        catalog = IcebergCatalog(
            kind=os.environ.get("ETL_ICEBERG_CATALOG", "sql"),
            uri=os.environ.get("ETL_ICEBERG_CATALOG_URI"),
            warehouse=os.environ.get("ETL_ICEBERG_WAREHOUSE"),
            credential=os.environ.get("ETL_ICEBERG_REST_CREDENTIAL"),
            token=os.environ.get("ETL_ICEBERG_REST_TOKEN"),
        ).catalog(
            default_warehouse="",
            s3_endpoint=os.environ.get("AWS_ENDPOINT_URL"),
            region=os.environ.get("AWS_REGION"),
        )
        tables = [
            (namespace, name) for namespace, _, name in (t.partition(".") for t in args.table)
        ] or catalog_tables(catalog)
        client = boto3.client("s3")
        now = dt.datetime.now(dt.UTC)
        for identifier in tables:
            done = maintain(
                catalog,
                identifier,
                client,
                now=now,
                orphan_min_age=parse_duration(args.min_age),
                snapshot_retention=parse_duration(args.retain),
                dry_run=args.dry_run,
            )
            out.write(done.describe(dry_run=args.dry_run) + "\n")
            for orphan in done.removed_files:
                out.write(f"  {orphan.uri} (written {orphan.last_modified.isoformat()})\n")
    except Exception as error:  # a CLI: every failure is one readable line and exit status 2
        print(f"etl-assets lake iceberg-maintenance: {error}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


def _relation(name: str) -> Relation:
    schema, dot, table = name.partition(".")
    if not dot:
        return Relation("public", name)
    return Relation(schema, table)


def _report(snapshot: Snapshot, relation: Relation) -> TableReport:
    catalog = snapshot.catalog(relation)
    if not catalog.columns:
        raise ValueError(
            f"table {relation.schema}.{relation.table} does not exist or is not visible"
        )
    primary_key = [str(r[0]) for r in snapshot.query(primary_key_query(relation))]
    indexed = [str(r[0]) for r in snapshot.query(indexed_columns_query(relation))]
    return report_table(relation, catalog.columns, dict(catalog.types), primary_key, indexed)


def _first_window(
    snapshot: Snapshot, relation: Relation, column: str, grain: Grain, timezone: str
) -> str | None:
    unit = sql.Literal(grain.trunc_unit)
    local = sql.SQL(
        "CASE WHEN pg_typeof(min({col}))::text = 'timestamp with time zone'"
        " THEN min({col})::timestamptz AT TIME ZONE {tz} ELSE min({col})::timestamp END"
    ).format(col=sql.Identifier(column), tz=sql.Literal(timezone))
    statement = render(
        sql.SQL("SELECT date_trunc({unit}, {local}) FROM {relation}").format(
            unit=unit, local=local, relation=relation.identifier()
        )
    )
    first = snapshot.scalar(statement)
    if first is None:
        return None
    text = first.isoformat()
    return text[:10] if grain is not Grain.HOURLY else text[:16]


def _list_tables(snapshot: Snapshot, out: TextIO) -> None:
    rows = snapshot.query(TABLES_QUERY)
    out.write(f"{'table':<50} {'kind':<12} {'rows (estimate)':>22}\n")
    for schema, table, kind, reltuples in rows:
        estimate = describe_estimate(str(kind), int(reltuples))
        out.write(f"{f'{schema}.{table}':<50} {relation_kind(str(kind)):<12} {estimate:>22}\n")
    out.write("\nDescribe one with: etl-assets introspect <schema>.<table>\n")


def _print_report(report: TableReport, out: TextIO) -> None:
    relation = report.relation
    out.write(f"{relation.schema}.{relation.table}\n\n")
    width = max(len(c.name) for c in report.columns)
    type_width = max(len(c.pg_type) for c in report.columns)
    out.write(f"  {'column':<{width}}  {'postgres type':<{type_width}}  null  parquet\n")
    for column in report.columns:
        nullable = "yes" if column.nullable else "no"
        out.write(
            f"  {column.name:<{width}}  {column.pg_type:<{type_width}}  {nullable:<4}  "
            f"{column.parquet}\n"
        )
    key = ", ".join(report.primary_key) or "(none)"
    candidates = ", ".join(report.partition_candidates) or "(none)"
    out.write(f"\n  primary key: {key}\n  partition-column candidates: {candidates}\n")


if __name__ == "__main__":
    sys.exit(main())
