"""A small client for Neon's management API (``/api/v2``, bearer key) — optional extras for health/cost.

Endpoints used (shapes as documented at https://api-docs.neon.tech):

* ``GET /projects/{project_id}/endpoints/{endpoint_id}`` → ``{"endpoint": {"id", "host", "branch_id",
  "current_state": "init"|"active"|"idle", "pending_state"?, "suspend_timeout_seconds",
  "autoscaling_limit_min_cu", "autoscaling_limit_max_cu", "last_active", ...}}``
* ``GET /projects/{project_id}/endpoints`` → ``{"endpoints": [...]}``
* ``GET /projects/{project_id}/branches`` → ``{"branches": [{"id", "name", "current_state",
  "logical_size", "default"?, ...}]}``
* ``GET /consumption_history/projects?project_ids=…&from=…&to=…&granularity=hourly|daily|monthly`` →
  ``{"projects": [{"project_id", "periods": [{"consumption": [{"timeframe_start", "timeframe_end",
  "active_time_seconds", "compute_time_seconds", "written_data_bytes", "synthetic_storage_size_bytes",
  ...}]}]}]}``

Every request has a timeout; transient failures (connect/read errors, 429, 5xx) are retried with
exponential backoff and jitter (tenacity). The API key only ever travels in the ``Authorization`` header
and is registered with :mod:`qt_pipeline.redaction`, so it is masked in every message and log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from qt_pipeline.redaction import redact, register_secret

log = logging.getLogger(__name__)

ENDPOINT_STATES = ("active", "idle", "init")


class NeonApiError(RuntimeError):
    """A Neon management API call failed; the message is redacted and says what to check."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(redact(message))
        self.status = status


@dataclass(frozen=True)
class EndpointState:
    id: str
    current_state: str
    pending_state: str | None = None
    host: str | None = None
    branch_id: str | None = None
    suspend_timeout_seconds: int | None = None
    min_cu: float | None = None
    max_cu: float | None = None
    last_active: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_suspended(self) -> bool:
        return self.current_state == "idle"


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, NeonApiError) and exc.status is not None:
        return exc.status == 429 or exc.status >= 500
    return False


class NeonApiClient:
    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://console.neon.tech/api/v2",
        timeout_s: float = 10.0,
        attempts: int = 3,
        max_wait_s: float = 4.0,
        transport: httpx.BaseTransport | None = None,
    ):
        if not api_key:
            raise ValueError(
                "NEON_API_KEY is empty; create an API key in the Neon console (Account → API keys)"
            )
        register_secret(api_key)
        self.base_url = base_url.rstrip("/")
        self.attempts = max(1, attempts)
        self.max_wait_s = max_wait_s
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Any) -> NeonApiClient | None:
        """A client when ``NEON_API_KEY`` is set, else ``None`` (the API is optional)."""
        if settings.neon_api_key is None:
            return None
        return cls(settings.neon_api_key.get_secret_value(), base_url=settings.neon_api_url)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> NeonApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport -----------------------------------------------------------------------------------
    def _get_once(self, path: str, params: dict[str, Any] | None) -> dict[str, Any]:
        try:
            resp = self._client.get(path, params=params)
        except httpx.TransportError as exc:
            raise NeonApiError(
                f"Neon API GET {path} at {self.base_url} failed: {type(exc).__name__}: {exc}; check "
                "network access to the Neon console API (NEON_API_URL)"
            ) from None
        if resp.status_code in (401, 403):
            raise NeonApiError(
                f"Neon API GET {path} was refused ({resp.status_code}): the API key is invalid or lacks "
                "access to this project; check NEON_API_KEY and NEON_PROJECT_ID",
                status=resp.status_code,
            )
        if resp.status_code == 404:
            raise NeonApiError(
                f"Neon API GET {path}: not found (404); check NEON_PROJECT_ID / NEON_ENDPOINT_ID",
                status=404,
            )
        if resp.status_code >= 400:
            raise NeonApiError(
                f"Neon API GET {path} failed with HTTP {resp.status_code}: {resp.text[:300]}",
                status=resp.status_code,
            )
        try:
            return resp.json()
        except ValueError:
            raise NeonApiError(f"Neon API GET {path} returned non-JSON: {resp.text[:200]!r}") from None

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(multiplier=0.2, max=self.max_wait_s, jitter=0.2),
            retry=retry_if_exception(_transient),
            reraise=True,
            before_sleep=before_sleep_log(log, logging.WARNING),
        )
        return retrying(self._get_once, path, params)

    # --- API -----------------------------------------------------------------------------------------
    def endpoint(self, project_id: str, endpoint_id: str) -> EndpointState:
        body = self.get(f"/projects/{project_id}/endpoints/{endpoint_id}")
        ep = body.get("endpoint")
        if not isinstance(ep, dict) or "current_state" not in ep:
            raise NeonApiError(f"Neon API endpoint response has no endpoint.current_state: {str(body)[:200]}")
        return EndpointState(
            id=str(ep.get("id", endpoint_id)),
            current_state=str(ep["current_state"]),
            pending_state=ep.get("pending_state"),
            host=ep.get("host"),
            branch_id=ep.get("branch_id"),
            suspend_timeout_seconds=ep.get("suspend_timeout_seconds"),
            min_cu=ep.get("autoscaling_limit_min_cu"),
            max_cu=ep.get("autoscaling_limit_max_cu"),
            last_active=ep.get("last_active"),
            raw=ep,
        )

    def endpoints(self, project_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/projects/{project_id}/endpoints").get("endpoints", []))

    def branches(self, project_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/projects/{project_id}/branches").get("branches", []))

    def consumption(
        self, project_id: str, start: datetime, end: datetime, *, granularity: str = "daily"
    ) -> list[dict[str, Any]]:
        """Consumption rows (one per timeframe) of ``project_id`` between ``start`` and ``end``."""
        if granularity not in ("hourly", "daily", "monthly"):
            raise ValueError(f"granularity must be hourly, daily or monthly, not {granularity!r}")
        body = self.get(
            "/consumption_history/projects",
            {
                "project_ids": project_id,
                "from": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "to": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "granularity": granularity,
            },
        )
        rows: list[dict[str, Any]] = []
        for project in body.get("projects", []):
            for period in project.get("periods", []):
                rows.extend(period.get("consumption", []))
        return rows


__all__ = ["ENDPOINT_STATES", "EndpointState", "NeonApiClient", "NeonApiError"]
