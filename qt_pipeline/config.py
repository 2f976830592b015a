"""Settings from the environment — the one place every environment variable is read.

Every variable is documented in the README ("Environment variables"). Read settings with
:func:`get_settings`; tests build their own :class:`Settings` (or monkeypatch the environment and call
``get_settings.cache_clear()``).
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from qt_pipeline.redaction import register_secret, register_url_secret

StorageBackendName = Literal["local", "sharedfs", "central", "hybrid"]
# earlier name of the central backend, still accepted (STORAGE_BACKEND=neon means central)
STORAGE_BACKEND_ALIASES = {"neon": "central"}

DEFAULT_SYMBOLS = ("BTCUSD", "ETHUSD", "SOLUSD")


class Settings(BaseSettings):
    """qt_pipeline settings. Field aliases are the environment variable names."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    # --- where things live -------------------------------------------------------------------------
    data_dir: Path = Field(default=Path(".qt_data"), alias="QT_DATA_DIR")
    storage_backend: StorageBackendName = Field(default="local", alias="STORAGE_BACKEND")
    duckdb_path: Path | None = Field(default=None, alias="QT_DUCKDB_PATH")
    sharedfs_root: Path | None = Field(default=None, alias="QT_SHAREDFS_ROOT")
    landing_dir: Path | None = Field(default=None, alias="QT_LANDING_DIR")
    cold_tier_dir: Path | None = Field(default=None, alias="QT_COLD_TIER_DIR")

    # --- the market data contract ------------------------------------------------------------------
    bar_interval: str = Field(default="1min", alias="QT_BAR_INTERVAL")
    symbols: Annotated[tuple[str, ...], NoDecode] = Field(default=DEFAULT_SYMBOLS, alias="QT_SYMBOLS")
    partitions_start: date = Field(default=date(2024, 1, 1), alias="QT_PARTITIONS_START")
    market_source: Literal["synthetic", "landing", "exchange"] = Field(
        default="synthetic", alias="QT_MARKET_SOURCE"
    )
    # market calendar of sources that declare none: 24/7, fx, or an exchange_calendars code (XNYS…)
    market_calendar: str = Field(default="24/7", alias="QT_MARKET_CALENDAR")
    # bar-quality check: fewest bars a trading day must have (weekends/holidays may have none)
    quality_min_bars: int = Field(default=1, ge=0, alias="QT_QUALITY_MIN_BARS")
    # landing sources by configuration (YAML, see configs/landing.example.yaml); unset = one source
    # with the canonical columns, QT_LANDING_COLUMN_MAP and QT_LANDING_TIMEZONE
    landing_config: Path | None = Field(default=None, alias="QT_LANDING_CONFIG")
    # landing files larger than this are refused up front; files are read in chunks of this size
    landing_max_file_mb: float = Field(default=4096.0, gt=0, alias="QT_LANDING_MAX_FILE_MB")
    landing_chunk_mb: float = Field(default=16.0, gt=0, alias="QT_LANDING_CHUNK_MB")
    # exchange source (ccxt): exchange id, symbol -> exchange market map, timeframe, API base override
    exchange_id: str = Field(default="binance", alias="QT_EXCHANGE")
    exchange_markets: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, alias="QT_EXCHANGE_MARKETS"
    )
    exchange_timeframe: str = Field(default="1m", alias="QT_EXCHANGE_TIMEFRAME")
    exchange_api_url: str | None = Field(default=None, alias="QT_EXCHANGE_API_URL")
    synthetic_seed: int = Field(default=42, alias="QT_SYNTHETIC_SEED")
    landing_timezone: str | None = Field(default=None, alias="QT_LANDING_TIMEZONE")
    # how often the landing directory sensor may tick (seconds)
    landing_sensor_interval_s: int = Field(default=30, alias="QT_LANDING_SENSOR_INTERVAL_S")
    # landing files: source column -> canonical column, "ts=timestamp,ticker=symbol" or a JSON object
    landing_column_map: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, alias="QT_LANDING_COLUMN_MAP"
    )

    # --- the central store (Neon / PostgreSQL) ------------------------------------------------------
    neon_database_url: SecretStr | None = Field(default=None, alias="NEON_DATABASE_URL")
    neon_direct_url: SecretStr | None = Field(default=None, alias="NEON_DIRECT_URL")
    pg_pool_size: int = Field(default=5, alias="QT_PG_POOL_SIZE")
    pg_max_overflow: int = Field(default=5, alias="QT_PG_MAX_OVERFLOW")
    pg_pool_recycle_s: int = Field(default=300, alias="QT_PG_POOL_RECYCLE_S")
    pg_connect_timeout_s: int = Field(default=10, alias="QT_PG_CONNECT_TIMEOUT_S")
    pg_statement_timeout_ms: int = Field(default=300_000, alias="QT_PG_STATEMENT_TIMEOUT_MS")
    pg_retry_attempts: int = Field(default=5, alias="QT_PG_RETRY_ATTEMPTS")
    pg_retry_initial_s: float = Field(default=0.25, alias="QT_PG_RETRY_INITIAL_S")
    pg_retry_max_s: float = Field(default=10.0, alias="QT_PG_RETRY_MAX_S")
    pg_lock_timeout_ms: int = Field(default=30_000, alias="QT_PG_LOCK_TIMEOUT_MS")
    pg_idle_in_tx_timeout_ms: int = Field(default=600_000, alias="QT_PG_IDLE_IN_TX_TIMEOUT_MS")
    pg_schema: str = Field(default="public", alias="QT_PG_SCHEMA")
    pg_timescaledb: Literal["auto", "off"] = Field(default="auto", alias="QT_PG_TIMESCALEDB")
    pg_partitions_ahead_days: int = Field(default=2, alias="QT_PG_PARTITIONS_AHEAD_DAYS")
    pg_sslmode: str | None = Field(default=None, alias="QT_PG_SSLMODE")
    # dead-connection detection on open connections (connect_timeout bounds only the connect): libpq TCP
    # keepalives + tcp_user_timeout (client-side socket options, fine behind PgBouncer), and a client-side
    # deadline per call (unset: statement timeout + 30 s, so the server always gives up first)
    pg_keepalives_idle_s: int = Field(default=10, alias="QT_PG_KEEPALIVES_IDLE_S")
    pg_keepalives_interval_s: int = Field(default=5, alias="QT_PG_KEEPALIVES_INTERVAL_S")
    pg_keepalives_count: int = Field(default=3, alias="QT_PG_KEEPALIVES_COUNT")
    pg_tcp_user_timeout_ms: int = Field(default=20_000, alias="QT_PG_TCP_USER_TIMEOUT_MS")
    pg_call_timeout_s: float | None = Field(default=None, alias="QT_PG_CALL_TIMEOUT_S")
    application_name: str = Field(default="qt_pipeline", alias="QT_APPLICATION_NAME")
    cold_after_days: int = Field(default=30, alias="QT_COLD_AFTER_DAYS")

    # --- Neon management API (optional) -------------------------------------------------------------
    neon_api_key: SecretStr | None = Field(default=None, alias="NEON_API_KEY")
    neon_project_id: str | None = Field(default=None, alias="NEON_PROJECT_ID")
    neon_endpoint_id: str | None = Field(default=None, alias="NEON_ENDPOINT_ID")
    neon_api_url: str = Field(default="https://console.neon.tech/api/v2", alias="NEON_API_URL")

    # --- hybrid cache policy --------------------------------------------------------------------------
    hot_days: int = Field(default=7, alias="QT_HOT_DAYS")
    warm_days: int = Field(default=30, alias="QT_WARM_DAYS")
    # hybrid store: its own DuckDB cache file (default <data_dir>/hybrid_cache.duckdb), durable outbox
    # (default <data_dir>/outbox), a short central retry budget so an outage is noticed fast, how often a
    # degraded store re-probes the centre, the health sensor interval and the warming schedule.
    hybrid_cache_path: Path | None = Field(default=None, alias="QT_HYBRID_CACHE_PATH")
    outbox_dir: Path | None = Field(default=None, alias="QT_OUTBOX_DIR")
    hybrid_pg_retry_attempts: int = Field(default=2, alias="QT_HYBRID_PG_RETRY_ATTEMPTS")
    hybrid_connect_timeout_s: int = Field(default=3, alias="QT_HYBRID_CONNECT_TIMEOUT_S")
    hybrid_probe_interval_s: float = Field(default=5.0, alias="QT_HYBRID_PROBE_INTERVAL_S")
    # failover budget of one central operation (all retries included): base seconds + rows / rate, so a
    # silent centre is noticed within ~the base for a normal batch and a big batch is not cut short
    hybrid_failover_s: float = Field(default=4.0, alias="QT_HYBRID_FAILOVER_S")
    hybrid_min_rows_per_s: float = Field(default=20_000.0, alias="QT_HYBRID_MIN_ROWS_PER_S")
    health_interval_s: int = Field(default=30, alias="QT_HEALTH_INTERVAL_S")
    warm_cron: str = Field(default="*/15 * * * *", alias="QT_WARM_CRON")

    # --- monitoring, alerting and the cost governor -----------------------------------------------------
    # prices/budget/assumptions of the cost model (YAML; default configs/cost.yaml of this repository);
    # the two budget variables override the file's budget section
    cost_config: Path | None = Field(default=None, alias="QT_COST_CONFIG")
    budget_monthly_usd: float | None = Field(default=None, ge=0, alias="QT_BUDGET_MONTHLY_USD")
    budget_warn_ratio: float | None = Field(default=None, gt=0, le=1, alias="QT_BUDGET_WARN_RATIO")
    # the back-off switch: from which budget status cache warming and migrations back off (off = never)
    cost_backoff: Literal["off", "warn", "over"] = Field(default="over", alias="QT_COST_BACKOFF")
    # run/check failures are POSTed here (JSON with a "text" field: Slack/Teams/Mattermost compatible)
    alert_webhook_url: SecretStr | None = Field(default=None, alias="QT_ALERT_WEBHOOK_URL")
    # how often platform_metrics_sensor records the metrics as an observation
    metrics_interval_s: int = Field(default=60, ge=1, alias="QT_METRICS_INTERVAL_S")
    # ... but while nothing runs (no Dagster run, no central store use in the usage ledger) it queries the
    # central store at most this often, so a Neon compute (5-minute suspend timeout) can suspend; 0: always
    metrics_idle_interval_s: int = Field(default=3600, ge=0, alias="QT_METRICS_IDLE_INTERVAL_S")
    # the hybrid failover state recorded by a store counts as current only if its heartbeat is this recent
    hybrid_state_stale_s: float = Field(default=900.0, gt=0, alias="QT_HYBRID_STATE_STALE_S")
    # freshness checks: a session trading on UTC day D is due at D 00:00 + this (daily ingest at 00:15 of D+1)
    freshness_max_lag_h: float = Field(default=27.0, gt=0, alias="QT_FRESHNESS_MAX_LAG_H")

    # --- evolution -------------------------------------------------------------------------------------
    ray_address: str | None = Field(default=None, alias="QT_RAY_ADDRESS")
    # where evolution runs are checkpointed: the central store (embedded PostgreSQL by default), or
    # QT_DATA_DIR/evolution.duckdb. Every entry point (qt run, evolution_job, qt evolve) uses the same one.
    evolution_state: Literal["central", "duckdb"] = Field(default="central", alias="QT_EVOLUTION_STATE")

    @field_validator("storage_backend", mode="before")
    @classmethod
    def _backend_alias(cls, v: object) -> object:
        return STORAGE_BACKEND_ALIASES.get(v, v) if isinstance(v, str) else v

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(s.strip().upper() for s in v.split(",") if s.strip())
        return v

    @field_validator("landing_column_map", "exchange_markets", mode="before")
    @classmethod
    def _parse_column_map(cls, v: object) -> object:
        if isinstance(v, str):
            import json

            text = v.strip()
            if not text:
                return {}
            if text.startswith("{"):
                return json.loads(text)
            pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
            if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
                raise ValueError(
                    f"{v!r} must look like 'ts=timestamp,ticker=symbol' (QT_LANDING_COLUMN_MAP) or "
                    "'BTCUSD=BTC/USDT' (QT_EXCHANGE_MARKETS), or be a JSON object"
                )
            return {k.strip(): t.strip() for k, t in pairs}
        return v

    @field_validator("bar_interval")
    @classmethod
    def _check_interval(cls, v: str) -> str:
        try:
            td = pd.Timedelta(v)
        except ValueError as exc:
            raise ValueError(
                f"QT_BAR_INTERVAL={v!r} is not a pandas time delta such as '1min' or '1h'"
            ) from exc
        if td <= pd.Timedelta(0) or pd.Timedelta("1D") % td != pd.Timedelta(0):
            raise ValueError(f"QT_BAR_INTERVAL={v!r} must be positive and divide one day evenly")
        return v

    def model_post_init(self, __context: object) -> None:
        for secret in (self.neon_database_url, self.neon_direct_url, self.neon_api_key):
            if secret is not None:
                register_secret(secret.get_secret_value())
        if self.alert_webhook_url is not None:
            register_url_secret(self.alert_webhook_url.get_secret_value())

    # --- derived paths ---------------------------------------------------------------------------------
    @property
    def interval(self) -> timedelta:
        return pd.Timedelta(self.bar_interval).to_pytimedelta()

    @property
    def resolved_duckdb_path(self) -> Path:
        return self.duckdb_path or self.data_dir / "local.duckdb"

    @property
    def resolved_sharedfs_root(self) -> Path:
        return self.sharedfs_root or self.data_dir / "sharedfs"

    @property
    def resolved_landing_dir(self) -> Path:
        return self.landing_dir or self.data_dir / "landing"

    @property
    def resolved_cold_tier_dir(self) -> Path:
        return self.cold_tier_dir or self.data_dir / "cold_tier"

    @property
    def resolved_hybrid_cache_path(self) -> Path:
        return self.hybrid_cache_path or self.data_dir / "hybrid_cache.duckdb"

    @property
    def resolved_outbox_dir(self) -> Path:
        return self.outbox_dir or self.data_dir / "outbox"

    @property
    def database_url(self) -> str | None:
        """The configured central database URL (secret!). ``None`` means: use the embedded PostgreSQL."""
        return self.neon_database_url.get_secret_value() if self.neon_database_url else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
