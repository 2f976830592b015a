"""Webhook alerts: the real client POSTs to a real local HTTP server; Dagster's run-failure and
check-failure sensors send what failed and the repair command."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from qt_pipeline.config import get_settings
from qt_pipeline.monitoring.alerts import Alert, AlertError, post_alert
from qt_pipeline_tests.monitoring.webhook_server import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def webhook(settings, receiver, monkeypatch) -> WebhookReceiver:
    monkeypatch.setenv("QT_ALERT_WEBHOOK_URL", receiver.url())
    get_settings.cache_clear()
    return receiver


def test_post_alert_retries_server_errors_and_never_leaks_the_token(receiver):
    alert = Alert("run_failure", "migration_job", "run failed: boom", "qt migrate")
    receiver.statuses = [503]
    assert post_alert(receiver.url(), alert) == 200
    assert receiver.posts[0]["text"].startswith("[qt_pipeline] run failure: migration_job")
    assert receiver.posts[0]["repair"] == "qt migrate"
    receiver.statuses = [404]
    from qt_pipeline.redaction import register_secret

    register_secret("s3cr3tt0k3n")  # the settings register the configured URL the same way
    with pytest.raises(AlertError, match="HTTP 404") as info:
        post_alert(receiver.url(), alert)
    assert "s3cr3tt0k3n" not in str(info.value)


def test_run_failure_sensor_posts_what_failed_and_the_repair_command(webhook):
    from qt_pipeline.defs.monitoring.sensors import qt_run_failure_alert

    @dg.op
    def copy_partition() -> None:
        raise RuntimeError("could not write partition BTCUSD 2026-03-01: disk full")

    @dg.job(name="migration_job")
    def failing_migration() -> None:
        copy_partition()

    instance = dg.DagsterInstance.ephemeral()
    result = failing_migration.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="qt_run_failure_alert",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
    ).for_run_failure()
    qt_run_failure_alert(context)
    assert webhook.received.wait(10)
    post = webhook.posts[0]
    assert post["kind"] == "run_failure" and post["name"] == "migration_job"
    assert "copy_partition" in post["what"] and "disk full" in post["what"]
    assert post["repair"].startswith("qt migrate")
    assert post["run_id"] == result.run_id
    assert "repair: qt migrate" in post["text"]


def test_failed_budget_check_is_alerted_with_its_repair_command(webhook, pg_schema, monkeypatch):
    from qt_pipeline.defs.central.resources import CentralStoreResource
    from qt_pipeline.defs.monitoring.assets import platform_cost
    from qt_pipeline.defs.monitoring.sensors import qt_check_failure_alert

    url, schema = pg_schema
    monkeypatch.setenv("QT_BUDGET_MONTHLY_USD", "0")  # any cost is over budget
    get_settings.cache_clear()
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [platform_cost],
        instance=instance,
        resources={"central_store": CentralStoreResource(database_url=url, pg_schema=schema)},
        raise_on_error=False,
    )
    assert result.success  # the asset materialised; its check failed
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    context = dg.build_run_status_sensor_context(
        sensor_name="qt_check_failure_alert",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_SUCCESS),
    )
    qt_check_failure_alert(context)
    assert webhook.received.wait(10)
    post = webhook.posts[0]
    assert post["kind"] == "check_failure" and post["name"] == "platform_cost.platform_cost_budget"
    assert "OVER the budget" in post["what"] and post["details"]["severity"] == "ERROR"
    assert post["repair"].startswith("qt cost --period 30d")
