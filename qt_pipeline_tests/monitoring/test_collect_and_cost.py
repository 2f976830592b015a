"""Metrics and the cost model from real sizes and real reads (PostgreSQL, DuckDB, the hybrid store)."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy import text

from qt_pipeline.monitoring.collect import collect_metrics
from qt_pipeline.monitoring.cost import (
    CostConfigError,
    backoff_reason,
    estimate_cost,
    load_cost_config,
    parse_period,
    record_budget,
)
from qt_pipeline.monitoring.telemetry import TELEMETRY
from qt_pipeline.monitoring.usage import UsageLedger
from qt_pipeline_tests.monitoring.conftest import SYMBOLS, bars_days, today


def test_metrics_reflect_pool_latency_cache_bytes_consistency_and_migrations(platform):
    platform.ingest_and_migrate(bars_days(SYMBOLS, -3, 3))
    hybrid = platform.hybrid()
    lo, hi = today() - pd.Timedelta(days=2), today() - pd.Timedelta(days=1)
    first = hybrid.read_bars("AAA", lo, hi)  # read-through: from the centre
    second = hybrid.read_bars("AAA", lo, hi)  # covered: the cache alone
    assert len(first) == len(second) == 120

    snap = collect_metrics(platform.settings, platform.central)
    assert snap.errors == []
    assert snap.value("qt_central_up") == 1
    assert snap.value("qt_cache_hits_total") == 1 and snap.value("qt_cache_misses_total") == 1
    assert snap.value("qt_cache_hit_ratio") == 0.5
    assert snap.value("qt_central_bytes_read_total") > 120 * 40  # the COPY payload of 120 bars at least
    assert snap.value("qt_consistency_ok") == 1
    assert snap.value("qt_consistency_mismatched_symbol_days") == 0
    newest_day = (today() - pd.Timedelta(days=1)).timestamp()
    for s in SYMBOLS:
        assert snap.value("qt_last_migrated_day_timestamp_seconds", symbol=s) == newest_day
        assert snap.value("qt_last_migration_timestamp_seconds", symbol=s) > newest_day
    assert snap.value("qt_query_latency_seconds", op="copy_out", quantile="0.5") > 0
    assert any(s.name == "qt_pool_size" and s.value == platform.settings.pg_pool_size for s in snap.samples)
    assert snap.value("qt_outbox_batches") == 0

    # rows lost centrally behind the ledger's back: the consistency metric turns
    with platform.central.engine.begin() as conn:
        conn.execute(text(f"DELETE FROM {platform.central.qualified('ohlcv_bars')} WHERE symbol = 'BBB'"))
    snap = collect_metrics(platform.settings, platform.central)
    assert snap.value("qt_consistency_ok") == 0
    assert snap.value("qt_consistency_mismatched_symbol_days") == 3


def test_cost_counts_real_sizes_cold_tier_files_and_egress_grows_after_a_read(platform):
    from qt_pipeline.storage.cold_tier import run_cold_tier

    settings = platform.settings
    platform.ingest_and_migrate(bars_days(SYMBOLS, -40, 40))
    before = estimate_cost(settings, platform.central, timedelta(days=30))
    by = {line.component: line for line in before.lines}
    with platform.central.engine.connect() as conn:
        db_bars = conn.execute(
            text(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = to_regclass(:q)"
            ),
            {"q": platform.central.qualified("ohlcv_bars")},
        ).scalar_one()
    assert before.inputs["bars_bytes"] == db_bars  # the true on-disk size of every partition
    assert by["central storage"].quantity == pytest.approx(before.inputs["central_bytes"] / 1e9)
    assert before.inputs["cold_tier_files"] == 0 and by["cold tier"].quantity == 0

    # archive the old days (vanilla PostgreSQL: verified Parquet + drop): the files are counted, the db shrinks
    report = run_cold_tier(platform.central, settings, older_than_days=30)
    assert report.done
    after = estimate_cost(settings, platform.central, timedelta(days=30))
    files = list(settings.resolved_cold_tier_dir.rglob("*.parquet"))
    assert after.inputs["cold_tier_files"] == len(files) > 0
    assert after.inputs["cold_tier_bytes"] == sum(f.stat().st_size for f in files)
    assert after.inputs["bars_bytes"] < before.inputs["bars_bytes"]

    # egress grows with what is read from the centre
    egress0 = after.inputs["central_bytes_read"]
    got = platform.central.read_bars("AAA", today() - pd.Timedelta(days=5), today())
    assert len(got) == 5 * 120
    later = estimate_cost(settings, platform.central, timedelta(days=30))
    assert later.inputs["central_bytes_read"] > egress0
    egress = {line.component: line for line in later.lines}["egress"]
    assert egress.quantity == pytest.approx(later.inputs["central_bytes_read"] / 1e9)
    # measured compute: connections were in use, so active time > 0 and priced
    compute = {line.component: line for line in later.lines}["compute"]
    assert later.inputs["compute_source"] == "measured" and compute.quantity > 0 and compute.monthly > 0
    assert later.projected_monthly == pytest.approx(sum(line.monthly for line in later.lines))


def test_budget_status_thresholds_and_the_backoff_switch(platform, monkeypatch):
    settings = platform.settings
    platform.ingest_and_migrate(bars_days(SYMBOLS, -2, 2))
    base = estimate_cost(settings, platform.central, timedelta(days=30))
    projected = base.projected_monthly
    assert projected > 0

    def status(budget: float, warn: float = 0.8) -> str:
        s = settings.model_copy(update={"budget_monthly_usd": budget, "budget_warn_ratio": warn})
        return estimate_cost(s, platform.central, timedelta(days=30)).status

    assert status(projected * 10) == "ok"
    assert status(projected * 1.1, warn=0.5) == "warn"
    assert status(projected * 0.5) == "over"

    over = settings.model_copy(update={"budget_monthly_usd": projected * 0.5})
    report = estimate_cost(over, platform.central, timedelta(days=30))
    assert backoff_reason(over, "cache warming") is None  # nothing recorded yet
    record_budget(over, report)
    reason = backoff_reason(over, "cache warming")
    assert reason is not None and "over" in reason and "QT_COST_BACKOFF" in reason
    assert backoff_reason(over.model_copy(update={"cost_backoff": "off"}), "cache warming") is None
    warn_only = settings.model_copy(update={"budget_monthly_usd": projected * 1.1, "budget_warn_ratio": 0.5})
    record_budget(warn_only, estimate_cost(warn_only, platform.central, timedelta(days=30)))
    assert backoff_reason(warn_only, "migration") is None  # default QT_COST_BACKOFF=over
    assert backoff_reason(warn_only.model_copy(update={"cost_backoff": "warn"}), "migration") is not None


def test_recommendations_name_unread_symbols_and_uncompressed_old_days(platform):
    settings = platform.settings.model_copy(update={"cold_after_days": 5, "warm_days": 2})
    platform.ingest_and_migrate(bars_days(SYMBOLS, -8, 8))
    hybrid = platform.hybrid()
    hybrid.read_bars("AAA", today() - pd.Timedelta(days=1), today())
    TELEMETRY.flush()
    report = estimate_cost(settings, platform.central, timedelta(days=30))
    titles = [r.title for r in report.recommendations]
    assert any("never read" in t and "BBB" in t and "AAA" not in t for t in titles), titles
    assert any("older than QT_COLD_AFTER_DAYS=5" in t for t in titles), titles
    assert all(r.monthly_saving >= 0 for r in report.recommendations)
    assert any(r.monthly_saving > 0 for r in report.recommendations)
    assert UsageLedger.for_data_dir(settings.data_dir).symbol_reads(today().date()) == {"AAA": 1}


def test_bad_cost_configuration_and_period_say_what_to_fix(settings, tmp_path):
    bad = tmp_path / "cost.yaml"
    bad.write_text("prices: {compute_cu_hour: -1}\n")
    with pytest.raises(CostConfigError, match="cost.yaml: prices"):
        load_cost_config(settings.model_copy(update={"cost_config": bad}))
    with pytest.raises(CostConfigError, match="not found; set QT_COST_CONFIG"):
        load_cost_config(settings.model_copy(update={"cost_config": tmp_path / "missing.yaml"}))
    assert load_cost_config(settings).prices.storage_gb_month > 0  # the shipped defaults load
    assert parse_period("30d") == timedelta(days=30)
    with pytest.raises(ValueError, match="e.g. 30d"):
        parse_period("thirty")


def test_compute_hours_come_from_the_neon_consumption_api_when_a_key_is_configured(platform):
    from pydantic import SecretStr

    from qt_pipeline_tests.storage.hybrid.neon_api_server import FakeNeonApi

    key = "neon-key-s3cr3t-cost-0123456789"
    api = FakeNeonApi(key)
    try:
        settings = platform.settings.model_copy(
            update={
                "neon_api_key": SecretStr(key),
                "neon_project_id": api.project_id,
                "neon_api_url": api.base_url,
            }
        )
        report = estimate_cost(settings, platform.central, timedelta(days=30))
    finally:
        api.close()
    compute = {line.component: line for line in report.lines}["compute"]
    assert report.inputs["compute_source"] == "neon_api"
    assert compute.quantity == pytest.approx(900 / 3600)  # the recorded compute_time_seconds, in CU-hours
    assert report.inputs["active_hours"] == pytest.approx(1.0)  # active_time_seconds 3600
    assert compute.period_cost == pytest.approx(0.25 * load_cost_config(settings).prices.compute_cu_hour)
    (request,) = [r for r in api.requests if r["path"].endswith("/consumption_history/projects")]
    assert request["auth"] == f"Bearer {key}" and request["query"]["project_ids"] == [api.project_id]


def test_pool_waits_and_checked_out_connections_are_measured(platform):
    import sqlalchemy as sa

    from qt_pipeline.storage.postgres.store import PostgresStore

    tight = platform.settings.model_copy(update={"pg_pool_size": 1, "pg_max_overflow": 0})
    store = PostgresStore(platform.url, tight, schema=platform.schema)
    platform.closers.append(store)
    engine = store.engine
    engine.pool._timeout = 0.2  # type: ignore[attr-defined]  # give up quickly instead of after 30 s
    held = engine.connect()
    try:
        snap = collect_metrics(platform.settings, None)
        mine = [s for s in snap.samples if s.name == "qt_pool_checked_out" and s.value == 1]
        assert mine, snap.samples  # the held connection shows as checked out
        with pytest.raises(sa.exc.TimeoutError):
            engine.connect()  # the pool is exhausted: this checkout waits, then times out
    finally:
        held.close()
    assert TELEMETRY.counters["pool_waits"] == 1
    assert TELEMETRY.counters["pool_wait_seconds"] >= 0.2
    snap = collect_metrics(platform.settings, None)
    assert snap.value("qt_pool_waits_total") == 1 and snap.value("qt_central_up") == 0


def test_exporter_cache_reuses_the_central_aggregates_until_they_are_due(platform):
    from qt_pipeline.monitoring.collect import CentralMetricsCache

    platform.ingest_and_migrate(bars_days(SYMBOLS, -2, 2))
    cache = CentralMetricsCache(max_age_s=3600)
    assert collect_metrics(platform.settings, platform.central, cache=cache).value("qt_consistency_ok") == 1
    with platform.central.engine.begin() as conn:
        conn.execute(text(f"DELETE FROM {platform.central.qualified('ohlcv_bars')} WHERE symbol = 'AAA'"))
    cached = collect_metrics(platform.settings, platform.central, cache=cache)
    assert cached.value("qt_consistency_ok") == 1  # not due yet: the earlier aggregate
    assert cached.value("qt_outbox_batches") == 0  # the cheap metrics are always live
    cache.max_age_s = 0
    assert collect_metrics(platform.settings, platform.central, cache=cache).value("qt_consistency_ok") == 0
