"""The job and schedule that keep a source's Iceberg tables tidy (see lib/lake/iceberg.py)."""

from collections.abc import Sequence

import dagster as dg
from pydantic import Field

from etl_assets.lib.lake.iceberg_names import qualified
from etl_assets.lib.table.windows import parse_duration
from etl_assets.resources.lake import S3Lake

MAINTENANCE_CRON = "30 4 * * *"
"""Daily, after the nightly loads and reconciles."""


class IcebergMaintenanceConfig(dg.Config):
    """What a maintenance run removes."""

    orphan_min_age: str = Field(
        default="6h",
        description=(
            "Only data files no snapshot refers to written at least this long ago are removed "
            "(a run between writing its file and committing it keeps the file): the longest run."
        ),
    )
    snapshot_retention: str = Field(
        default="7d",
        description="Snapshots younger than this are kept: time travel reaches back this far.",
    )
    dry_run: bool = Field(default=False, description="List what would go; change nothing.")


def build_iceberg_maintenance(
    source_name: str, identifiers: Sequence[tuple[str, str]]
) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """A job maintaining these tables, and its daily schedule (stopped until turned on).

    The job expires snapshots past their retention and removes orphan data files.
    """
    tables = ", ".join(qualified(i) for i in identifiers)

    @dg.op(
        name=f"{source_name}_expire_snapshots_and_remove_orphan_files",
        description=f"Expire old snapshots and remove orphan data files of {tables}.",
    )
    def maintenance_op(
        context: dg.OpExecutionContext, config: IcebergMaintenanceConfig, lake: S3Lake
    ) -> None:
        done = lake.maintain_iceberg(
            identifiers,
            orphan_min_age=parse_duration(config.orphan_min_age),
            snapshot_retention=parse_duration(config.snapshot_retention),
            dry_run=config.dry_run,
        )
        for table in done:
            context.log.info(table.describe(dry_run=config.dry_run))
            for orphan in table.removed_files:
                context.log.info(f"  {orphan.uri} (written {orphan.last_modified.isoformat()})")

    @dg.job(
        name=f"{source_name}_iceberg_maintenance",
        description=(
            f"Expires snapshots past their retention and removes data files no snapshot refers "
            f"to (written by runs killed before their commit, or left by expired snapshots) in "
            f"the Iceberg tables of the {source_name} source: {tables}."
        ),
        tags={"etl_assets/maintenance": "iceberg"},
    )
    def maintenance_job() -> None:
        maintenance_op()

    schedule = dg.ScheduleDefinition(
        name=f"{source_name}_iceberg_maintenance_daily",
        job=maintenance_job,
        cron_schedule=MAINTENANCE_CRON,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Runs {source_name}_iceberg_maintenance daily with its default config.",
    )
    return maintenance_job, schedule
