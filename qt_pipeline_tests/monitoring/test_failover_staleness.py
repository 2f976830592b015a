"""The hybrid failover state carries a heartbeat: a process that died while degraded leaves a record that
turns stale after QT_HYBRID_STATE_STALE_S (degraded 0, stale 1, its age exposed) instead of "degraded"
forever; a live store refreshes the heartbeat whenever it routes an operation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from qt_pipeline.monitoring.collect import collect_metrics
from qt_pipeline.monitoring.telemetry import FAILOVER_STATE_KEY, TELEMETRY, fresh_telemetry
from qt_pipeline.monitoring.usage import UsageLedger


def test_a_dead_degraded_process_turns_stale_instead_of_degraded_forever(settings):
    ledger = UsageLedger.for_data_dir(settings.data_dir)
    with fresh_telemetry():
        TELEMETRY.attach(settings.data_dir)
        since = datetime.now(UTC) - timedelta(minutes=5)
        TELEMETRY.failover_state("degraded", since, "central down")
        own = collect_metrics(settings, None)
        assert own.value("qt_hybrid_degraded") == 1 and own.value("qt_hybrid_state_age_seconds") == 0
        recorded = ledger.state(FAILOVER_STATE_KEY)
        first_beat = datetime.fromisoformat(recorded["heartbeat"])
        assert recorded["mode"] == "degraded" and first_beat >= since

        # a live store routing an operation refreshes the heartbeat (rate-limited to FLUSH_EVERY_S)
        TELEMETRY._last_heartbeat -= 3600
        TELEMETRY.failover_heartbeat()
        assert datetime.fromisoformat(ledger.state(FAILOVER_STATE_KEY)["heartbeat"]) > first_beat

    # another process (the exporter) reads the record: recent, so still degraded
    with fresh_telemetry():
        snap = collect_metrics(settings, None)
        assert snap.value("qt_hybrid_degraded") == 1 and snap.value("qt_hybrid_state_stale") == 0
        assert 0 <= snap.value("qt_hybrid_state_age_seconds") < settings.hybrid_state_stale_s

        # the degraded process died 20 minutes ago: its last heartbeat is that old
        dead = dict(ledger.state(FAILOVER_STATE_KEY))
        dead["heartbeat"] = (datetime.now(UTC) - timedelta(minutes=20)).isoformat()
        ledger.set_state(FAILOVER_STATE_KEY, dead)
        snap = collect_metrics(settings, None)
        assert snap.value("qt_hybrid_degraded") == 0 and snap.value("qt_hybrid_state_stale") == 1
        assert snap.value("qt_hybrid_state_age_seconds") > 19 * 60
        assert snap.value("qt_hybrid_state_since_timestamp_seconds") == since.timestamp()

        # a longer bound (QT_HYBRID_STATE_STALE_S) keeps it current
        patient = settings.model_copy(update={"hybrid_state_stale_s": 3600.0})
        assert collect_metrics(patient, None).value("qt_hybrid_degraded") == 1


def test_a_degraded_hybrid_store_records_and_refreshes_its_heartbeat(settings, pg_schema, tmp_path):
    from qt_pipeline_tests.storage.hybrid.conftest import HybridFactory, bars_on, day

    ledger = UsageLedger.for_data_dir(settings.data_dir)
    factory = HybridFactory(settings, pg_schema, tmp_path)
    with fresh_telemetry():
        TELEMETRY.attach(settings.data_dir)
        try:
            store = factory()
            store.write_bars(bars_on(["CCC"], -1, 10, seed=1))
            factory.proxy.cut()  # the central store goes away: the store degrades and records it
            store.write_bars(bars_on(["CCC"], 0, 10, seed=2))
            assert store.degraded
            first = ledger.state(FAILOVER_STATE_KEY)
            assert first["mode"] == "degraded"
            TELEMETRY._last_heartbeat -= 3600  # as if FLUSH_EVERY_S had passed
            store.read_bars("CCC", day(-1), day(1))  # routed while degraded: the heartbeat is refreshed
            second = ledger.state(FAILOVER_STATE_KEY)
            assert second["since"] == first["since"] and second["heartbeat"] > first["heartbeat"]
        finally:
            factory.close()
