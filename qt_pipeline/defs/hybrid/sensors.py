"""``neon_health_sensor``: SQL health of the central store every ``QT_HEALTH_INTERVAL_S`` (default 30 s).

Each tick records an ``AssetObservation`` of ``neon_health`` (latency, pool use, versions, licence,
database size, endpoint state from the Neon API when configured, ``healthy`` and ``reason``). The health
state lives in the cursor; a transition to unhealthy is logged as an error, a transition back to healthy
requests one ``outbox_replay_job`` run (run key unique per transition).
"""

import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from qt_pipeline.config import get_settings
from qt_pipeline.defs.hybrid.jobs import outbox_replay_job
from qt_pipeline.redaction import redact


def _metadata(report_dict: dict[str, object]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in report_dict.items():
        if v is None:
            continue
        if isinstance(v, float):
            v = round(v, 3)
        out[k] = redact(v) if isinstance(v, str) else v
    return out


def _status() -> dg.DefaultSensorStatus:
    s = get_settings()
    if s.storage_backend in ("hybrid", "central") and s.database_url:
        return dg.DefaultSensorStatus.RUNNING
    return dg.DefaultSensorStatus.STOPPED


@dg.sensor(
    name="neon_health_sensor",
    job=outbox_replay_job,
    minimum_interval_seconds=get_settings().health_interval_s,
    default_status=_status(),
    description="Probe the central PostgreSQL/Neon store; record health; replay the outbox on recovery.",
)
def neon_health_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    from qt_pipeline.storage.health import check_central_health

    settings = get_settings()
    report = check_central_health(settings)
    if report is None:
        return dg.SkipReason("NEON_DATABASE_URL is not set: no central store to probe")
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
                    run_key=f"outbox-replay-{transitions}-{since}", tags={"qt/trigger": "neon_health"}
                )
            )
    metadata = _metadata(report.as_dict())
    metadata["healthy_since" if report.healthy else "unhealthy_since"] = since
    metadata["transitions"] = transitions
    new_cursor = {"healthy": report.healthy, "since": since, "transitions": transitions, "checked_at": now}
    return dg.SensorResult(
        run_requests=run_requests,
        cursor=json.dumps(new_cursor),
        asset_events=[dg.AssetObservation(asset_key="neon_health", metadata=metadata)],
    )
