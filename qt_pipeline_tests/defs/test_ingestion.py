"""Ingestion wiring run for real: raw_ohlcv materialised into a real DuckDB file (synthetic and landing
sources), the Great Expectations quality check on good and damaged partitions, the landing sensor ticked
over a real directory, the quarantine job and the daily schedule."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from qt_pipeline.defs.ingestion import (
    MarketSourceResource,
    ingestion_job,
    landing_directory_sensor,
    landing_quarantine_job,
    raw_ohlcv,
    raw_ohlcv_bar_quality,
    raw_ohlcv_daily_schedule,
)
from qt_pipeline.defs.ingestion.partitions import newest_closed_day, partition_key_for, partition_window
from qt_pipeline.defs.resources import LocalStoreResource

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)

REPO = Path(__file__).resolve().parents[2]
HEADER = "symbol,timestamp,open,high,low,close,volume,vwap,trade_count"


def _resources(kind: str = "synthetic", **kw) -> dict:
    return {
        "market_source": MarketSourceResource(kind=kind, **kw),
        "local_store": LocalStoreResource(),
    }


def _store():
    return LocalStoreResource().get_store()


def _materialize(key, kind="synthetic", checks=False, **kw):
    selection = dg.AssetSelection.assets(raw_ohlcv)
    return dg.materialize(
        [raw_ohlcv],
        selection=selection if checks else selection.without_checks(),
        partition_key=key,
        resources=_resources(kind, **kw),
        raise_on_error=False,
    )


def _check_only(key):
    """Run only the quality check on a stored partition (the asset is subsettable: nothing is ingested;
    dagster cannot infer the partitions of a checks-only selection, so the partition is the run's tag)."""
    return dg.materialize(
        [raw_ohlcv],
        selection=dg.AssetSelection.checks(raw_ohlcv_bar_quality),
        tags={"dagster/partition": str(key)},
        resources=_resources(),
        raise_on_error=False,
    )


def _meta(result) -> dict:
    (mat,) = result.asset_materializations_for_node("raw_ohlcv")
    return {k: v.value for k, v in mat.metadata.items()}


def _bar(symbol: str, ts: str, price: float = 100.0, **over) -> str:
    row = {
        "symbol": symbol,
        "timestamp": ts,
        "open": price,
        "high": price + 1,
        "low": price - 1,
        "close": price + 0.5,
        "volume": 10,
        "vwap": price,
        "trade_count": 5,
    }
    row.update(over)
    return ",".join(str(row[c]) for c in HEADER.split(","))


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _rejects_without_time(source: str | None = None) -> pd.DataFrame:
    rej = _store().read_rejects(source)
    return rej.drop(columns=["rejected_at"]).sort_values(["source", "line", "reason"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------
# synthetic source


def test_synthetic_partition_metadata_and_idempotent_rematerialisation(settings):
    key = partition_key_for("2024-01-02", "BTCUSD")
    result = _materialize(key)
    assert result.success
    meta = _meta(result)
    assert meta["rows_accepted"] == 1440
    assert meta["dagster/row_count"] == 1440
    assert meta["rows_rejected"] == 0
    assert meta["rejects_by_reason"] == {}
    assert meta["first_timestamp"] == "2024-01-02T00:00:00+00:00"
    assert meta["last_timestamp"] == "2024-01-02T23:59:00+00:00"
    assert meta["storage_location"] == str(settings.resolved_duckdb_path)
    assert meta["preview"].startswith("| symbol | timestamp | open |")
    assert meta["preview"].count("\n| BTCUSD |") == 5

    store = _store()
    first = store.read_bars("BTCUSD")
    assert len(first) == 1440
    assert (first["timestamp"].dt.date == pd.Timestamp("2024-01-02").date()).all()

    again = _materialize(key)
    assert again.success and _meta(again)["rows_accepted"] == 1440
    pd.testing.assert_frame_equal(store.read_bars("BTCUSD"), first)
    summary = store.list_symbols()
    assert summary["rows"].tolist() == [1440]


def test_partition_window_and_definitions():
    symbol, start, end = partition_window("2024-03-05|ETHUSD")
    assert (symbol, start, end) == (
        "ETHUSD",
        pd.Timestamp("2024-03-05", tz="UTC"),
        pd.Timestamp("2024-03-06", tz="UTC"),
    )
    with pytest.raises(ValueError, match="is not '<YYYY-MM-DD>|<SYMBOL>'"):
        partition_window("2024-03-05")
    assert raw_ohlcv.partitions_def.get_partition_keys()[-1].keys_by_dimension["date"] == str(
        newest_closed_day()
    )
    spec = raw_ohlcv.specs_by_key[dg.AssetKey("raw_ohlcv")]
    assert raw_ohlcv.backfill_policy == dg.BackfillPolicy.single_run()
    assert spec.group_name == "ingestion"
    assert set(spec.kinds) == {"duckdb"}
    assert raw_ohlcv.op.pool == "qt_duckdb_writer"


def test_definitions_load_without_great_expectations_or_ray():
    code = (
        "import sys, qt_pipeline.definitions as d; "
        "assert 'great_expectations' not in sys.modules, 'GX imported at load'; "
        "assert 'ray' not in sys.modules, 'ray imported at load'; "
        "d.defs.resolve_job_def('ingestion_job'); d.defs.resolve_job_def('landing_quarantine_job'); "
        "d.defs.resolve_sensor_def('landing_directory_sensor'); "
        "d.defs.resolve_schedule_def('raw_ohlcv_daily_schedule'); print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, env=os.environ
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


# --------------------------------------------------------------------------------------------------------
# quality check (Great Expectations)


def test_quality_check_passes_on_good_and_fails_on_damaged_partition(settings):
    key = partition_key_for("2024-01-02", "ETHUSD")
    result = _materialize(key, checks=True)
    assert result.success
    (ev,) = result.get_asset_check_evaluations()
    assert ev.check_name == "raw_ohlcv_bar_quality"
    assert ev.passed
    assert ev.metadata["rows_checked"].value == 1440
    assert ev.metadata["failed_expectations"].value == 0

    # damage two stored bars behind validation's back: high < low, and one bar off the minute grid
    con = _store().connection
    con.execute(
        "UPDATE ohlcv_bars SET high = low - 1 WHERE symbol = 'ETHUSD' "
        "AND timestamp = TIMESTAMPTZ '2024-01-02 10:00:00+00'"
    )
    con.execute(
        "UPDATE ohlcv_bars SET timestamp = TIMESTAMPTZ '2024-01-02 11:00:30+00' WHERE symbol = 'ETHUSD' "
        "AND timestamp = TIMESTAMPTZ '2024-01-02 11:00:00+00'"
    )
    check_only = _check_only(key)
    assert check_only.success  # a failed check is a result, not a crash
    assert check_only.asset_materializations_for_node("raw_ohlcv") == []
    (bad,) = check_only.get_asset_check_evaluations()
    assert not bad.passed
    assert bad.severity == dg.AssetCheckSeverity.ERROR
    failures = {f["expectation"]: f for f in bad.metadata["failures"].value}
    assert failures["high >= low"]["unexpected_count"] == 1
    assert failures["high >= open"]["unexpected_count"] == 1
    assert failures["timestamp on the 1min grid"]["unexpected_count"] == 1
    assert "high >= low" in bad.metadata["summary"].value
    assert bad.metadata["failed_expectations"].value == len(failures)


# --------------------------------------------------------------------------------------------------------
# landing source end to end


def test_landing_bad_rows_are_rejected_with_reasons_and_rerun_changes_nothing(settings):
    landing = settings.resolved_landing_dir
    good = [_bar("BTCUSD", f"2024-01-03T00:0{i}:00Z", 100 + i) for i in range(6)]
    path = _write(
        landing / "vendor_a.csv",
        [
            HEADER,
            *good,  # lines 2-7
            _bar("BTCUSD", "2024-01-03T01:00:00Z", high=90),  # line 8: high < low
            good[0],  # line 9: exact duplicate of line 2 -> the first is kept
            _bar("BTCUSD", "2024-01-03T02:00:00Z", 100),  # line 10: conflicting duplicates
            _bar("BTCUSD", "2024-01-03T02:00:00Z", 101),  # line 11
            _bar("BTCUSD", "2024-01-03 03:00:00"),  # line 12: naive timestamp, no time zone
            "BTCUSD,2024-01-03T04:00:00Z,100,101",  # line 13: too few fields (malformed)
            _bar("BTCUSD", "2024-01-03T05:00:00Z", volume="abc"),  # line 14: not a number
        ],
    )
    key = partition_key_for("2024-01-03", "BTCUSD")
    result = _materialize(key, kind="landing")
    assert result.success
    meta = _meta(result)
    assert meta["rows_accepted"] == 6
    by_reason = meta["rejects_by_reason"]
    assert by_reason["high_below_low"] == 1  # line 8 also breaks high >= open/close and vwap <= high
    assert by_reason["duplicate_key"] == 3  # 1 exact duplicate + 2 conflicting
    assert by_reason["naive_timestamp"] == 1
    assert by_reason["malformed_file"] == 1
    assert by_reason["wrong_type"] == 1
    assert f"{path}:8: high_below_low" in meta["reject_messages"]

    bars = _store().read_bars("BTCUSD")
    assert bars["timestamp"].dt.strftime("%H:%M").tolist() == [f"00:0{i}" for i in range(6)]
    assert bars["open"].tolist() == [100.0 + i for i in range(6)]
    rejects = _rejects_without_time(str(path))
    reasons = rejects.groupby("line")["reason"].agg(set).to_dict()
    assert "high_below_low" in reasons[8]
    assert reasons[12] == {"naive_timestamp"} and reasons[13] == {"malformed_file"}
    assert reasons[14] == {"wrong_type"}
    assert 2 not in reasons  # the kept first occurrence of the exact duplicate
    assert set(rejects.loc[rejects["reason"] == "duplicate_key", "line"]) == {9, 10, 11}
    assert rejects["raw"].notna().all()

    again = _materialize(key, kind="landing")
    assert again.success
    pd.testing.assert_frame_equal(_store().read_bars("BTCUSD"), bars)
    pd.testing.assert_frame_equal(_rejects_without_time(str(path)), rejects)


def test_landing_file_level_problem_only_succeeds_with_warning(settings):
    landing = settings.resolved_landing_dir
    # the header lacks volume: every row is rejected (missing_column), the partition run still succeeds
    # (vwap and trade_count may be missing: they are derived)
    cols = HEADER.replace(",volume", "")
    rows = []
    for i in range(3):
        f = _bar("SOLUSD", f"2024-01-04T00:0{i}:00Z").split(",")
        rows.append(",".join(f[:6] + f[7:]))
    path = _write(landing / "no_volume.csv", [cols, *rows])
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_ohlcv],
            partition_key=partition_key_for("2024-01-04", "SOLUSD"),
            resources=_resources("landing"),
            instance=instance,
        )
        logs = [(e.level, e.user_message) for e in instance.all_logs(result.run_id)]
    assert result.success
    meta = _meta(result)
    assert meta["rows_accepted"] == 0 and meta["rows_rejected"] == 3
    assert meta["rejects_by_reason"] == {"missing_column": 3}
    assert any(
        level == logging.WARNING and "every row was rejected because of a file-level problem" in msg
        for level, msg in logs
    ), logs
    assert len(_store().read_rejects(str(path))) == 3
    assert _store().read_bars("SOLUSD").empty


# --------------------------------------------------------------------------------------------------------
# landing sensor + quarantine job


def _ingestion_defs(kind: str = "landing") -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_ohlcv],
        jobs=[ingestion_job, landing_quarantine_job],
        sensors=[landing_directory_sensor],
        resources=_resources(kind),
    )


def _tick(cursor: str | None):
    defs = _ingestion_defs()
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(
            cursor=cursor,
            instance=instance,
            definitions=defs,
            resources={"market_source": MarketSourceResource(kind="landing")},
        )
        data = defs.resolve_sensor_def("landing_directory_sensor").evaluate_tick(ctx)
    return data.run_requests or [], data.cursor, data.skip_message


def test_landing_sensor_requests_each_file_partition_once(settings):
    landing = settings.resolved_landing_dir
    a = _write(
        landing / "a.csv",
        [HEADER, _bar("BTCUSD", "2024-01-03T00:00:00Z"), _bar("ETHUSD", "2024-01-04T00:00:00Z")],
    )
    requests, cursor, _ = _tick(None)
    fp_a = json.loads(cursor)[str(a)]
    assert sorted(r.partition_key for r in requests) == ["2024-01-03|BTCUSD", "2024-01-04|ETHUSD"]
    for r in requests:
        assert r.job_name == "ingestion_job"
        assert r.run_key == f"{a}:{fp_a}:{r.partition_key}"
        assert r.tags["qt/landing_file"] == str(a)
        assert r.run_config["resources"]["market_source"]["config"]["kind"] == "landing"

    # same file, same content: nothing again
    requests2, cursor2, skip = _tick(cursor)
    assert requests2 == [] and json.loads(cursor2) == json.loads(cursor) and "no new or changed" in skip

    # a new file later is picked up (only it)
    b = _write(landing / "sub" / "b.csv", [HEADER, _bar("SOLUSD", "2024-01-05T00:00:00Z")])
    requests3, cursor3, _ = _tick(cursor2)
    assert [(r.partition_key, r.tags["qt/landing_file"]) for r in requests3] == [
        ("2024-01-05|SOLUSD", str(b))
    ]
    assert set(json.loads(cursor3)) == {str(a), str(b)}

    # a changed file is requested again (new fingerprint in the run key)
    _write(a, [HEADER, _bar("BTCUSD", "2024-01-03T00:00:00Z", 150)])
    requests4, cursor4, _ = _tick(cursor3)
    fp_a2 = json.loads(cursor4)[str(a)]
    assert fp_a2 != fp_a
    assert [r.run_key for r in requests4] == [f"{a}:{fp_a2}:2024-01-03|BTCUSD"]

    # a removed file leaves the cursor (bounded)
    b.unlink()
    _, cursor5, _ = _tick(cursor4)
    assert set(json.loads(cursor5)) == {str(a)}

    # a requested run executes as requested (run config + partition key from the sensor; the resource
    # default here is "synthetic": the run config alone switches it to the landing directory)
    defs = _ingestion_defs("synthetic")
    (req,) = requests4
    run = defs.resolve_job_def("ingestion_job").execute_in_process(
        run_config=req.run_config, partition_key=req.partition_key, tags=req.tags
    )
    assert run.success
    assert _store().read_bars("BTCUSD")["open"].tolist() == [150.0]
    assert all(ev.passed for ev in run.get_asset_check_evaluations())


def test_landing_sensor_quarantines_what_no_partition_covers(settings):
    landing = settings.resolved_landing_dir
    mixed = _write(
        landing / "mixed.csv",
        [
            HEADER,
            _bar("BTCUSD", "2024-01-03T00:00:00Z"),  # line 2: valid partition
            _bar("XXXUSD", "2024-01-03T00:01:00Z"),  # line 3: unknown symbol
            _bar("BTCUSD", "2023-12-31T23:59:00Z"),  # line 4: before QT_PARTITIONS_START
        ],
    )
    malformed = _write(landing / "semicolon.csv", [HEADER.replace(",", ";"), "BTCUSD;2024-01-03T00:00:00Z"])
    empty = landing / "empty.csv"
    empty.write_bytes(b"")
    today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")
    open_day = _write(landing / "today.csv", [HEADER, _bar("BTCUSD", today)])

    requests, cursor, _ = _tick(None)
    by_file: dict[str, list] = {}
    for r in requests:
        by_file.setdefault(r.tags["qt/landing_file"], []).append(r)
    assert [r.partition_key for r in by_file[str(mixed)] if r.job_name == "ingestion_job"] == [
        "2024-01-03|BTCUSD"
    ]
    for path in (mixed, malformed, empty):
        quarantine = [r for r in by_file[str(path)] if r.job_name == "landing_quarantine_job"]
        assert len(quarantine) == 1, path
        assert quarantine[0].run_config["ops"]["quarantine_landing_file"]["config"]["path"] == str(path)
        assert quarantine[0].run_key.endswith(":quarantine")
    assert str(open_day) not in by_file  # today's bars wait for the day to close ...
    assert str(open_day) not in json.loads(cursor)  # ... so the file is looked at again later
    assert set(json.loads(cursor)) == {str(mixed), str(malformed), str(empty)}

    job = _ingestion_defs().resolve_job_def("landing_quarantine_job")
    for path in (mixed, malformed, empty):
        (req,) = [r for r in by_file[str(path)] if r.job_name == "landing_quarantine_job"]
        assert job.execute_in_process(run_config=req.run_config, tags=req.tags).success
    rej = _rejects_without_time()
    mixed_rej = rej[rej["source"] == str(mixed)]
    assert dict(zip(mixed_rej["line"], mixed_rej["reason"], strict=True)) == {
        3: "unknown_symbol",
        4: "outside_partitions",
    }
    assert "QT_PARTITIONS_START=2024-01-01" in mixed_rej.loc[mixed_rej["line"] == 4, "detail"].iloc[0]
    assert rej.loc[rej["source"] == str(malformed), "reason"].tolist() == ["malformed_file"]
    assert rej.loc[rej["source"] == str(empty), "reason"].tolist() == ["empty_file"]
    assert _store().read_bars("BTCUSD").empty  # quarantine stores rejects only

    # quarantining again changes nothing
    (req,) = [r for r in by_file[str(mixed)] if r.job_name == "landing_quarantine_job"]
    assert job.execute_in_process(run_config=req.run_config).success
    pd.testing.assert_frame_equal(_rejects_without_time(), rej)


# --------------------------------------------------------------------------------------------------------
# schedule


def test_daily_schedule_requests_the_newest_closed_day_for_every_symbol_in_one_run(settings):
    from qt_pipeline.definitions import defs

    schedule = defs.resolve_schedule_def(raw_ohlcv_daily_schedule.name)
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2024, 1, 5, 0, 15, tzinfo=UTC))
    data = schedule.evaluate_tick(ctx)
    (req,) = data.run_requests  # one run for the whole day, not one per symbol
    assert req.tags["dagster/asset_partition_range_start"] == "2024-01-04|BTCUSD"
    assert req.tags["dagster/asset_partition_range_end"] == "2024-01-04|SOLUSD"
    assert schedule.cron_schedule == "15 0 * * *"
    assert schedule.job_name == "ingestion_job"


# --------------------------------------------------------------------------------------------------------
# market_source resource


def test_market_source_resource_defaults_and_errors(settings, monkeypatch):
    from qt_pipeline.config import get_settings

    res = MarketSourceResource()
    assert res.resolved_kind() == "synthetic"
    assert res.get_source().seed == 42
    assert MarketSourceResource(seed=7).get_source().seed == 7
    with pytest.raises(ValueError, match="'bloomberg' is unknown; set QT_MARKET_SOURCE"):
        MarketSourceResource(kind="bloomberg").get_source()
    assert MarketSourceResource(kind="exchange").get_source().describe() == "exchange:binance timeframe=1m"
    with pytest.raises(ValueError, match="column_mapping is not valid JSON"):
        MarketSourceResource(kind="landing", column_mapping="{ts").landing_source()
    with pytest.raises(ValueError, match="JSON object of strings"):
        MarketSourceResource(kind="landing", column_mapping="[1]").landing_source()

    monkeypatch.setenv("QT_MARKET_SOURCE", "landing")
    monkeypatch.setenv("QT_LANDING_COLUMN_MAP", "ts=timestamp")
    monkeypatch.setenv("QT_LANDING_TIMEZONE", "America/New_York")
    get_settings.cache_clear()
    src = MarketSourceResource().get_source()
    assert src.name == "landing"
    assert src.directory == get_settings().resolved_landing_dir
    assert src.column_mapping == {"ts": "timestamp"} and src.timezone == "America/New_York"
    cfg = MarketSourceResource().landing_run_config()["resources"]["market_source"]["config"]
    assert cfg == {
        "kind": "landing",
        "landing_dir": str(get_settings().resolved_landing_dir),
        "column_mapping": '{"ts": "timestamp"}',
        "timezone": "America/New_York",
    }
