"""Webhook alerts (plain Python, no Dagster): what failed and the command that repairs it.

The POST body is JSON with a ``text`` field (what Slack, Mattermost and Teams incoming webhooks display)
and structured fields (``kind``, ``name``, ``what``, ``repair``, ``run_id``, ``details``) for anything else.
The URL (``QT_ALERT_WEBHOOK_URL``) usually embeds a token: it is a secret, redacted everywhere.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from qt_pipeline.redaction import redact

log = logging.getLogger(__name__)

# job / asset / check name → the command that repairs it (partition placeholders filled in by the caller)
REPAIR_COMMANDS: dict[str, str] = {
    "ingestion_job": "dagster job launch -w workspace.yaml -j ingestion_job  (or: qt run --generations 0)",
    "raw_ohlcv": "qt run --generations 0 --days 2",
    "migration_job": "qt migrate  (resumes after the ledger; then: qt consistency)",
    "central_ohlcv": "qt migrate --symbols {symbols}",
    "central_ohlcv_consistency": "qt reconcile",
    "consistency_job": "qt reconcile",
    "reconcile_job": "qt reconcile --dry-run, then qt reconcile",
    "cold_tier_job": "qt cold status, then dagster job launch -w workspace.yaml -j cold_tier_job",
    "central_cold_tier": "qt cold status, then dagster job launch -w workspace.yaml -j cold_tier_job",
    "outbox_replay_job": "qt health, then qt outbox replay",
    "local_cache_warm_job": "qt health, then dagster job launch -w workspace.yaml -j local_cache_warm_job",
    "local_cache_warm": "qt health, then dagster job launch -w workspace.yaml -j local_cache_warm_job",
    "evolution_job": "qt evolution runs, then qt evolve --run-id <run id> --resume",
    "bars_fresh_local": "qt run --generations 0 --days 2  (ingests the missing days of {symbols})",
    "bars_fresh_central": "qt migrate --symbols {symbols}",
    "platform_cost_budget": "qt cost --period 30d  (recommendations with their saving)",
}
DEFAULT_REPAIR = "dagster job launch -w workspace.yaml -j {name}  (or re-execute the run from the UI)"


def repair_command(name: str, *, symbols: str = "<symbols>") -> str:
    return REPAIR_COMMANDS.get(name, DEFAULT_REPAIR).format(name=name, symbols=symbols)


@dataclass
class Alert:
    kind: str  # "run_failure" | "check_failure"
    name: str  # job name, or asset/check
    what: str  # one line: what failed and why
    repair: str  # the command that repairs it
    run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        run = f" (run {self.run_id})" if self.run_id else ""
        return redact(
            f"[qt_pipeline] {self.kind.replace('_', ' ')}: {self.name}{run}: {self.what}\nrepair: {self.repair}"
        )

    def payload(self) -> dict[str, Any]:
        body = {k: (redact(v) if isinstance(v, str) else v) for k, v in asdict(self).items()}
        body["text"] = self.text
        return body


class AlertError(RuntimeError):
    """The webhook did not accept the alert (message redacted)."""


def post_alert(url: str, alert: Alert, *, timeout_s: float = 10.0, attempts: int = 3) -> int:
    """POST ``alert`` to ``url``; returns the HTTP status. Retries connection errors and 5xx; raises
    :class:`AlertError` (redacted: the URL's token never appears) when the webhook refuses it."""
    last: str = ""
    for _ in range(max(1, attempts)):
        try:
            resp = httpx.post(url, json=alert.payload(), timeout=timeout_s)
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
            continue
        if resp.status_code < 300:
            return resp.status_code
        last = f"HTTP {resp.status_code}: {resp.text[:200]}"
        if resp.status_code < 500:
            break
    raise AlertError(redact(f"alert webhook refused the alert ({last}); check QT_ALERT_WEBHOOK_URL"))


__all__ = ["DEFAULT_REPAIR", "REPAIR_COMMANDS", "Alert", "AlertError", "post_alert", "repair_command"]
