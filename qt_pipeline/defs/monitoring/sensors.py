"""Monitoring sensors: the metrics observation, and the webhook alerts on run and check failures."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.execution.plan.objects import StepFailureData
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

from qt_pipeline.config import get_settings
from qt_pipeline.defs.central.resources import CentralStoreResource
from qt_pipeline.redaction import redact


@dg.sensor(
    name="platform_metrics_sensor",
    minimum_interval_seconds=get_settings().metrics_interval_s,
    # safe by default: a few short queries per tick; it never starts the embedded server
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Record the platform metrics (pool, latency, outbox, failover, cache, bytes read, "
    "consistency, last migration per symbol) as an observation of platform_metrics.",
)
def platform_metrics_sensor(
    context: dg.SensorEvaluationContext, central_store: CentralStoreResource
) -> dg.SensorResult:
    from qt_pipeline.monitoring.collect import collect_metrics, open_central_if_running

    settings = central_store.settings()
    last = _last_observation(context.cursor)
    idle = _idle_reason(context.instance, settings, last)
    if idle is not None:
        return dg.SensorResult(skip_reason=idle, cursor=context.cursor)
    central, why = open_central_if_running(settings)
    try:
        snap = collect_metrics(settings, central)
    finally:
        if central is not None:
            central.close()
    metadata: dict[str, Any] = dict(snap.as_metadata())
    if why:
        metadata["central_not_observed"] = why
    if snap.errors:
        metadata["errors"] = "; ".join(snap.errors)
        context.log.warning(f"metrics collection: {'; '.join(snap.errors)}")
    return dg.SensorResult(
        asset_events=[dg.AssetObservation(asset_key="platform_metrics", metadata=metadata)],
        skip_reason=None,
        cursor=json.dumps({"observed_at": datetime.now(UTC).isoformat()}),
    )


def _last_observation(cursor: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(json.loads(cursor)["observed_at"]) if cursor else None
    except (ValueError, KeyError, TypeError):
        return None


def _idle_reason(instance: dg.DagsterInstance, settings: Any, last: datetime | None) -> str | None:
    """Why this tick does not query the central store, or ``None``. Every query wakes a suspended Neon
    compute and keeps it up for its suspend timeout (5 min by default), so with nothing happening — no
    Dagster run in progress or finished since the last observation, no central store use recorded in the
    usage ledger by any process (`qt` commands included) — the store is observed at most every
    ``QT_METRICS_IDLE_INTERVAL_S``."""
    from qt_pipeline.monitoring.usage import UsageLedger

    interval = settings.metrics_idle_interval_s
    if last is None or interval <= 0:
        return None
    now = datetime.now(UTC)
    age = (now - last).total_seconds()
    if age >= interval:
        return None
    active = instance.get_runs(dg.RunsFilter(statuses=list(IN_PROGRESS_RUN_STATUSES)), limit=1)
    if active or instance.get_runs(dg.RunsFilter(updated_after=last), limit=1):
        return None
    # the minutes after the last observation's own (its queries count as central use too)
    if UsageLedger.for_data_dir(settings.data_dir).busy_minutes(last + timedelta(minutes=1)):
        return None
    return (
        f"idle: no run and no central store use since the last observation at "
        f"{last.isoformat(timespec='seconds')} ({age:.0f} s ago); the central store is not queried so a "
        f"Neon compute can suspend — next observation within {interval - age:.0f} s "
        f"(QT_METRICS_IDLE_INTERVAL_S={interval}, 0 queries every tick)"
    )


# --- alerts ---------------------------------------------------------------------------------------------
def _webhook() -> str | None:
    url = get_settings().alert_webhook_url
    return url.get_secret_value() if url is not None else None


def _partition(run: Any) -> str:
    tags = run.tags
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    lo, hi = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    return f"{lo}...{hi}" if lo else ""


def _symbols_of(partition: str) -> str:
    """Symbols of a ``day|symbol`` multi-partition key (or range), else the placeholder."""
    syms = sorted({p.split("|")[-1] for p in partition.split("...") if "|" in p})
    return ",".join(syms) if syms else "<symbols>"


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[Any]:
    """The failed asset check evaluations of a run."""
    out = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        ev = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if isinstance(ev, dg.AssetCheckEvaluation) and not ev.passed:
            out.append(ev)
    return out


def check_alert(ev: Any, run: Any) -> Any:
    from qt_pipeline.monitoring.alerts import Alert, repair_command

    partition = ev.partition or _partition(run)
    meta = {k: getattr(v, "value", v) for k, v in (ev.metadata or {}).items()}
    repair = meta.get("repair") or repair_command(ev.check_name, symbols=_symbols_of(partition))
    where = f" partition {partition}" if partition else ""
    return Alert(
        kind="check_failure",
        name=f"{ev.asset_key.to_user_string()}.{ev.check_name}",
        what=f"{ev.severity.value} on{where}: {ev.description or 'check failed'}",
        repair=str(repair),
        run_id=run.run_id,
        details={"severity": ev.severity.value, "job": run.job_name, "partition": partition},
    )


def _send(context: Any, alerts: list[Any]) -> int:
    from qt_pipeline.monitoring.alerts import post_alert

    url = _webhook()
    if url is None:
        context.log.info(f"{len(alerts)} alert(s) not sent: QT_ALERT_WEBHOOK_URL is not set")
        return 0
    sent = 0
    for alert in alerts:
        try:
            post_alert(url, alert)
            sent += 1
        except Exception as exc:  # noqa: BLE001 - one refused alert must not hide the others
            context.log.error(redact(f"alert not delivered: {exc}"))
    return sent


def _root_cause(error: Any) -> str:
    """The first line of the innermost cause (Dagster wraps the op's exception in a step error)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    lines = (error.message or "").strip().splitlines()
    return redact(lines[0] if lines else error.cls_name or "error")


@dg.run_failure_sensor(
    name="qt_run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="POST a failed run (job, partition, failing step and error, the repair command) to "
    "QT_ALERT_WEBHOOK_URL; nothing is sent while it is unset.",
)
def qt_run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    from qt_pipeline.monitoring.alerts import Alert, repair_command

    run = context.dagster_run
    partition = _partition(run)
    steps = [
        f"{e.step_key}: {_root_cause(data.error)}"
        for e in context.get_step_failure_events()
        if isinstance(data := e.event_specific_data, StepFailureData) and data.error is not None
    ]
    what = "; ".join(steps) or (context.failure_event.message or "run failed")
    where = f" (partition {partition})" if partition else ""
    alerts = [
        Alert(
            kind="run_failure",
            name=run.job_name,
            what=f"run failed{where}: {what}",
            repair=repair_command(run.job_name, symbols=_symbols_of(partition)),
            run_id=run.run_id,
            details={"partition": partition, "failed_steps": len(steps)},
        )
    ]
    alerts += [check_alert(ev, run) for ev in failed_checks(context.instance, run.run_id)]
    _send(context, alerts)


@dg.run_status_sensor(
    name="qt_check_failure_alert",
    run_status=dg.DagsterRunStatus.SUCCESS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="POST every failed asset check (WARN or ERROR) of a finished run, with the repair command, "
    "to QT_ALERT_WEBHOOK_URL (failed runs: qt_run_failure_alert).",
)
def qt_check_failure_alert(context: dg.RunStatusSensorContext) -> None:
    run = context.dagster_run
    alerts = [check_alert(ev, run) for ev in failed_checks(context.instance, run.run_id)]
    if alerts:
        _send(context, alerts)


__all__ = ["platform_metrics_sensor", "qt_check_failure_alert", "qt_run_failure_alert"]
