"""Downstream assets that follow the lake by themselves: declarative automation.

A raw partition's data version is its source fingerprint (see
`etl_assets/resources/reporting.py`): a reload of unchanged rows keeps it, a changed row moves
it. `follows_upstream()` materializes a downstream partition when a partition it reads has a new
data version, and the automation sensor evaluates it per partition. An asset of your own gets
the behaviour with one argument::

    @dg.asset(..., automation_condition=follows_upstream())
"""

from __future__ import annotations

import dagster as dg

UPSTREAM_CHANGED = (
    "upstream changed: a partition it reads has a new data version"
    " (a reload of unchanged rows keeps its version)"
)
UPSTREAM_MISSING = "upstream missing: a partition it reads was never materialized"
UPSTREAM_IN_PROGRESS = "upstream in progress: a partition it reads is being materialized"
IN_PROGRESS = "already running"
HANDLED = "handled: requested, with no change seen since"
FOLLOWS_UPSTREAM = "follows upstream data versions"
"""The labels the Automation page shows, per partition, for each part of the condition."""

AUTOMATION_SENSOR = "lake_automation"
"""The automation sensor of the code location: it evaluates every asset's condition."""


def follows_upstream() -> dg.AutomationCondition:
    """Materialize a partition once a partition it reads has a new data version.

    Per downstream partition, through the partition mappings of its inputs (a curated day that
    reads the day of payments and the next is requested when either changed):

    * requested when an upstream partition it reads got a new data version since this partition
      was last requested; a reload that left the rows unchanged keeps the version and requests
      nothing;
    * never while an upstream partition it reads is missing, or being materialized, or while
      this partition is itself in progress: changes while it waits end in one run;
    * a change seen after the tick that requested this partition is kept until it runs again,
      even while that run is queued or running (it may have read before the change): at most
      one more run;
    * a requested run that fails is not requested again until the next change (the instance's
      run retries still apply).

    Unlike `AutomationCondition.eager()` it is not limited to the latest time window: a change
    to a closed window reaches the partitions that read it. Partitions materialized before the
    condition was first evaluated are not revisited: backfill those once.
    """
    changed = dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.data_version_changed()
    ).with_label(UPSTREAM_CHANGED)
    # Only a request handles a change, and only one seen before it: a change on the same tick
    # as the request is no reason to forget it (the condition carries no timing to order them).
    handled = (dg.AutomationCondition.newly_requested() & ~changed).with_label(HANDLED)
    return (
        changed.since(handled)
        & ~dg.AutomationCondition.any_deps_missing().with_label(UPSTREAM_MISSING)
        & ~dg.AutomationCondition.any_deps_in_progress().with_label(UPSTREAM_IN_PROGRESS)
        & ~dg.AutomationCondition.in_progress().with_label(IN_PROGRESS)
    ).with_label(FOLLOWS_UPSTREAM)


def automation_sensor(
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.AutomationConditionSensorDefinition:
    """The sensor that evaluates the automation conditions of every asset, on by default.

    Each requested partition is its own run (no backfills), so a run's partition is the one
    whose upstream changed, and the Automation page shows each decision with its reasons.
    """
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.all(),
        default_status=default_status,
        emit_backfills=False,
        description=(
            "Evaluates each asset's automation condition per partition: curated assets follow "
            "the raw partitions they read when those get a new data version."
        ),
    )
