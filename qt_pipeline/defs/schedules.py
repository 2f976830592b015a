"""The one way the code location declares a cron schedule: in UTC, named after its job."""

from __future__ import annotations

import dagster as dg


def utc_schedule(
    job: dg.JobDefinition | dg.UnresolvedAssetJobDefinition,
    cron: str,
    description: str,
    *,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> dg.ScheduleDefinition:
    """``<job>_job`` on ``cron`` (UTC) as the schedule ``<job>_schedule``."""
    return dg.ScheduleDefinition(
        name=f"{job.name.removesuffix('_job')}_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=default_status,
        description=description,
    )
