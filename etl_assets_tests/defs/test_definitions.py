"""The project's definitions: they load, and the asset graph only changes on purpose."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from etl_assets.definitions import defs

SNAPSHOT = Path(__file__).with_name("asset_graph.json")
UPDATE_ENV = "ETL_ASSETS_UPDATE_SNAPSHOT"


def describe_partitions(partitions_def: dg.PartitionsDefinition[Any] | None) -> object:
    if partitions_def is None:
        return None
    assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
    return {
        "start": partitions_def.start.isoformat(),
        "end": partitions_def.end.isoformat() if partitions_def.end else None,
        "cron": partitions_def.cron_schedule,
        "timezone": partitions_def.timezone,
        "fmt": partitions_def.fmt,
    }


def describe_backfill(definitions: dg.Definitions, spec: dg.AssetSpec) -> object:
    """How a backfill of the asset is split into runs (None: one partition per run)."""
    if spec.partitions_def is None:
        return None
    policy = definitions.resolve_assets_def(spec.key).backfill_policy
    if policy is None:
        return None
    return policy.max_partitions_per_run or "single run"


def io_manager_key(definitions: dg.Definitions, spec: dg.AssetSpec) -> object:
    declared = spec.metadata.get("dagster/io_manager_key")
    if declared is not None:
        return declared
    return definitions.resolve_assets_def(spec.key).get_io_manager_key_for_asset_key(spec.key)


def asset_graph() -> dict[str, object]:
    definitions = defs()
    checks = definitions.resolve_asset_graph()
    graph: dict[str, object] = {}
    for spec in sorted(definitions.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string()):
        graph[spec.key.to_user_string()] = {
            "deps": sorted(dep.asset_key.to_user_string() for dep in spec.deps),
            "group": spec.group_name,
            "kinds": sorted(spec.kinds),
            "partitions": describe_partitions(spec.partitions_def),
            "io_manager": io_manager_key(definitions, spec),
            "backfill": describe_backfill(definitions, spec),
            "checks": sorted(
                f"{key.name}{' (blocking)' if checks.get_check_spec(key).blocking else ''}"
                for key in checks.get_check_keys_for_assets({spec.key})
            ),
            "freshness": repr(spec.freshness_policy) if spec.freshness_policy else None,
            "automation": (
                spec.automation_condition.get_label() if spec.automation_condition else None
            ),
            "skippable": spec.skippable,
        }
    return graph


def test_definitions_load_with_every_resource_bound() -> None:
    definitions = defs()
    repository = definitions.get_repository_def()
    assert repository.get_top_level_resources().keys() >= {
        "lake_io_manager",
        "postgres_shop",
        "postgres_shop_source",
    }
    job = definitions.resolve_implicit_global_asset_job_def()
    assert job is not None


def test_the_sensors_and_schedules_require_the_source_resource() -> None:
    # The daemon builds exactly the required resources into the context it evaluates them with.
    definitions = defs()
    changes = [s for s in definitions.sensors or [] if s.name.endswith("__changes")]
    schedules = [
        s
        for s in definitions.schedules or []
        if isinstance(s, dg.ScheduleDefinition) and s.name.endswith("__reconcile")
    ]
    assert changes
    assert schedules
    for instigator in [*changes, *schedules]:
        assert instigator.required_resource_keys == {"postgres_shop_source"}, instigator.name


def automation() -> dict[str, object]:
    definitions = defs()
    return {
        "sensors": sorted(s.name for s in definitions.sensors or []),
        "schedules": sorted(s.name for s in definitions.schedules or []),
    }


def test_the_asset_graph_matches_its_snapshot() -> None:
    current = {"assets": asset_graph(), "automation": automation()}
    if os.environ.get(UPDATE_ENV):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    recorded = json.loads(SNAPSHOT.read_text())
    assert current == recorded, (
        f"the asset graph changed; if that is intended, rerun with {UPDATE_ENV}=1 and review "
        f"the diff of {SNAPSHOT.name}"
    )


def test_the_iceberg_maintenance_runs_a_job_of_its_own_on_the_lake() -> None:
    definitions = defs()
    schedule = definitions.resolve_schedule_def("shop_iceberg_maintenance_daily")
    assert schedule.job_name == "shop_iceberg_maintenance"
    job = definitions.resolve_job_def("shop_iceberg_maintenance")
    assert "lake" in job.required_resource_keys
