"""The cost model counts compressed chunks at their true on-disk size (TimescaleDB harness)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pandas as pd
import pytest

from qt_pipeline.monitoring.cost import estimate_cost
from qt_pipeline.storage.cold_tier import run_cold_tier
from qt_pipeline_tests.storage.central.helpers import make_bars

NOW = pd.Timestamp("2024-01-10T12:00Z")
pytestmark = pytest.mark.timescale


def test_compressed_chunks_are_counted_at_their_stored_size(settings, timescale_dsn) -> None:
    from qt_pipeline.storage.postgres.store import PostgresStore

    schema = f"cost_{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(update={"pg_schema": schema, "cold_after_days": 5})
    central = PostgresStore(timescale_dsn, s, schema=schema)
    try:
        central.ensure_schema()
        assert central.capabilities.can_compress, "the TimescaleDB harness must have the TSL build"
        central.write_bars(make_bars(("BTCUSD", "ETHUSD"), days=3, per_day=400))  # 2024-01-02 .. 04
        now = NOW.to_pydatetime()
        before = estimate_cost(s, central, timedelta(days=30), now=now)
        assert before.inputs["compressed_bytes"] == 0
        titles = [r.title for r in before.recommendations]
        assert any("older than QT_COLD_AFTER_DAYS=5" in t for t in titles), titles

        report = run_cold_tier(central, s, older_than_days=5, now=NOW)
        assert [p.action for p in report.partitions] == ["compressed"] * 3
        after = estimate_cost(s, central, timedelta(days=30), now=now)
        # every chunk is compressed: all of the bars' bytes are compressed bytes, and counted
        assert after.inputs["compressed_bytes"] > 0
        assert after.inputs["compressed_bytes"] <= after.inputs["bars_bytes"] <= after.inputs["central_bytes"]
        assert after.inputs["cold_tier_files"] == 0  # compression, not archiving, on TimescaleDB with TSL
        assert not any("older than QT_COLD_AFTER_DAYS" in r.title for r in after.recommendations)
    finally:
        with central.direct_engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        central.close()
