"""``central_health_sensor``: SQL health of the central store every ``QT_HEALTH_INTERVAL_S`` (default 30 s).

Each tick records an ``AssetObservation`` of ``central_health`` (latency, pool use, versions, licence,
database size, endpoint state from the Neon API when configured, ``healthy`` and ``reason``). The health
state lives in the cursor; a transition to unhealthy is logged as an error, a transition back to healthy
requests one ``outbox_replay_job`` run (run key unique per transition).
"""

import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from qt_pipeline.config import get_settings
from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.defs.hybrid.jobs import outbox_replay_job
from qt_pipeline.redaction import redact
from qt_pipeline.storage.health import HealthReport


def _metadata(report_dict: dict[str, object]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in report_dict.items():
        if v is None:
            continue
        if isinstance(v, float):
            v = round(v, 3)
        out[k] = redact(v) if isinstance(v, str) else v
    return out


def _probe(central_store: CentralStoreResource) -> tuple[HealthReport | None, str]:
    """``(health report, "")``, or ``(None, why nothing was probed)``. The embedded server is probed when
    it runs, never started by the probe."""
    from pydantic import SecretStr

    from qt_pipeline.storage.health import check_central_health

    settings = central_store.settings()
    if central_store.is_embedded():
        from qt_pipeline.storage.postgres.embedded import embedded_postgres_status

        url, why = embedded_postgres_status(settings)
        if url is None:
            return None, why
    else:
        url = central_store.resolved_url()
    report = check_central_health(settings.model_copy(update={"neon_database_url": SecretStr(url)}))
    return report, ""


@dg.sensor(
    name="central_health_sensor",
    job=outbox_replay_job,
    minimum_interval_seconds=get_settings().health_interval_s,
    # safe to run by default: one short probe per tick, and it never starts or changes the store
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Probe the central store in use (Neon/PostgreSQL, or the embedded server); record health; "
    "replay the outbox on recovery.",
)
def central_health_sensor(
    context: dg.SensorEvaluationContext, central_store: CentralStoreResource
) -> dg.SensorResult | dg.SkipReason:
    report, why = _probe(central_store)
    if report is None:
        return dg.SkipReason(f"no central store to probe: {why}")
    try:
        cursor = json.loads(context.cursor) if context.cursor else {}
    except ValueError:
        cursor = {}
    prev = cursor.get("healthy")  # None on the first tick
    now = datetime.now(UTC).isoformat(timespec="seconds")
    transitions = int(cursor.get("transitions", 0))
    since = cursor.get("since", now)
    run_requests: list[dg.RunRequest] = []
    if prev is None or bool(prev) != report.healthy:
        since = now
        if prev is not None:
            transitions += 1
        if not report.healthy:
            context.log.error(
                f"central store UNHEALTHY ({report.location}): {report.reason} — hybrid stores fall back "
                "to their local cache and queue writes in the outbox"
            )
        elif prev is False:
            context.log.warning(
                f"central store healthy again ({report.location}); requesting outbox_replay_job"
            )
            run_requests.append(
                dg.RunRequest(
                    run_key=f"outbox-replay-{transitions}-{since}", tags={"qt/trigger": "central_health"}
                )
            )
    metadata = _metadata(report.as_dict())
    metadata["healthy_since" if report.healthy else "unhealthy_since"] = since
    metadata["transitions"] = transitions
    new_cursor = {"healthy": report.healthy, "since": since, "transitions": transitions, "checked_at": now}
    state = "healthy" if report.healthy else f"UNHEALTHY ({report.reason})"
    return dg.SensorResult(
        run_requests=run_requests,
        skip_reason=None
        if run_requests
        else f"{report.location}: {state} since {since}; a run (outbox replay) is requested only when "
        "the store turns healthy again",
        cursor=json.dumps(new_cursor),
        asset_events=[dg.AssetObservation(asset_key="central_health", metadata=metadata)],
    )
