"""The ``market_source`` resource: which MarketDataSource the ingestion asset fetches from.

Defaults come from the settings (``QT_MARKET_SOURCE``, ``QT_SYNTHETIC_SEED``, ``QT_LANDING_DIR``,
``QT_LANDING_TIMEZONE``); every field can be overridden in run config
(``resources.market_source.config``) — the landing sensor does exactly that for the runs it requests.
"""

import json

import dagster as dg

from qt_pipeline.config import get_settings


class MarketSourceResource(dg.ConfigurableResource):
    """Builds the configured :class:`~qt_pipeline.market.sources.base.MarketDataSource`.

    ``column_mapping`` renames landing-file columns to canonical ones, as JSON object text
    (``{"ts": "timestamp", "ticker": "symbol"}``); unset means ``QT_LANDING_COLUMN_MAP``.
    """

    kind: str | None = None  # "synthetic" | "landing" | "exchange"; None = QT_MARKET_SOURCE
    seed: int | None = None
    landing_dir: str | None = None
    column_mapping: str | None = None  # JSON object text
    timezone: str | None = None

    def resolved_kind(self) -> str:
        kind = self.kind or get_settings().market_source
        if kind not in ("synthetic", "landing", "exchange"):
            raise ValueError(
                f"market_source kind {kind!r} is unknown; set QT_MARKET_SOURCE (or the resource's "
                "'kind') to 'synthetic', 'landing' or 'exchange'"
            )
        return kind

    def resolved_column_mapping(self) -> dict[str, str]:
        raw: str | dict[str, str] | None = self.column_mapping
        if raw is None:
            raw = get_settings().landing_column_map
        if raw is None or raw == "":
            return {}
        if isinstance(raw, dict):
            return {str(k): str(v) for k, v in raw.items()}
        try:
            mapping = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"market_source column_mapping is not valid JSON ({exc.msg} at char {exc.pos}); write a "
                'JSON object such as {"ts": "timestamp"}'
            ) from None
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ValueError(
                'market_source column_mapping must be a JSON object of strings, e.g. {"ts": "timestamp"}'
            )
        return {str(k): v for k, v in mapping.items()}

    def resolved_landing_dir(self) -> str:
        return self.landing_dir or str(get_settings().resolved_landing_dir)

    def resolved_timezone(self) -> str | None:
        return self.timezone or get_settings().landing_timezone

    def landing_source(self):
        """The landing-directory source (whatever ``kind`` says): the sensor and quarantine use it."""
        from qt_pipeline.market.layout import config_from_settings
        from qt_pipeline.market.sources.landing import LandingDirectorySource, default_staging_dir

        settings = get_settings()
        return LandingDirectorySource(
            self.resolved_landing_dir(),
            column_mapping=self.resolved_column_mapping(),
            timezone=self.resolved_timezone(),
            config=config_from_settings(settings) if settings.landing_config else None,
            calendar=settings.market_calendar,
            max_file_mb=settings.landing_max_file_mb,
            chunk_mb=settings.landing_chunk_mb,
            staging_dir=default_staging_dir(settings),  # shared by the partition runs of one file
        )

    def get_source(self):
        """The configured source (imported lazily: definitions load stays cheap)."""
        settings = get_settings()
        if self.resolved_kind() == "landing":
            return self.landing_source()
        if self.resolved_kind() == "exchange":
            from qt_pipeline.market.sources.exchange import ExchangeSource

            return ExchangeSource.from_settings(settings)
        from qt_pipeline.market.sources.synthetic import SyntheticMarket

        return SyntheticMarket(
            self.seed if self.seed is not None else settings.synthetic_seed,
            symbols=settings.symbols,
            interval=settings.interval,
        )

    def landing_run_config(self) -> dict:
        """Run config that points ``market_source`` at this landing directory (used by the landing
        sensor: its runs read landing files whatever QT_MARKET_SOURCE says)."""
        cfg: dict = {"kind": "landing", "landing_dir": self.resolved_landing_dir()}
        mapping = self.resolved_column_mapping()
        if mapping:
            cfg["column_mapping"] = json.dumps(mapping, sort_keys=True)
        if self.resolved_timezone():
            cfg["timezone"] = self.resolved_timezone()
        return {"resources": {"market_source": {"config": cfg}}}


def market_source_resource() -> MarketSourceResource:
    """The resource as the code location configures it: fields read with EnvVar when the variable is set
    (visible on the UI's resource page), else the settings' defaults at run time."""
    import os

    from qt_pipeline.defs.resources import env_or

    return MarketSourceResource(
        kind=env_or("QT_MARKET_SOURCE", None),
        seed=dg.EnvVar.int("QT_SYNTHETIC_SEED") if os.environ.get("QT_SYNTHETIC_SEED") else None,
        landing_dir=env_or("QT_LANDING_DIR", None),
        timezone=env_or("QT_LANDING_TIMEZONE", None),
    )
