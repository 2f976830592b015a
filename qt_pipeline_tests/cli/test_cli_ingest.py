"""``qt validate``, ``qt status`` and ``qt run`` through typer's CliRunner, against real files and a real
DuckDB store (``qt run`` materialises raw_ohlcv through Dagster for real)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from qt_pipeline.cli import app
from qt_pipeline.cli.run import StageError, explicit_days, ingestion_days
from qt_pipeline.defs.ingestion.partitions import newest_closed_day
from qt_pipeline.defs.resources import StorageResource

warnings.filterwarnings("ignore", category=DeprecationWarning)

HEADER = "symbol,timestamp,open,high,low,close,volume,vwap,trade_count"
GOOD = [
    "BTCUSD,2024-01-03T00:00:00Z,100,101,99,100.5,10,100,5",
    "BTCUSD,2024-01-03T00:01:00Z,100,101,99,100.5,10,100,5",
]

runner = CliRunner()


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_validate_good_file_exits_zero_and_stores_nothing(settings, tmp_path):
    good = _write(tmp_path / "good.csv", [HEADER, *GOOD])
    res = runner.invoke(app, ["validate", str(good)])
    assert res.exit_code == 0, res.output
    assert "validation summary" in res.output
    assert f"{good}: 2 row(s) accepted, 0 row(s) rejected" in res.output
    assert not settings.resolved_duckdb_path.exists()  # validate never stores


def test_validate_bad_files_print_file_line_reason_and_exit_one(settings, tmp_path):
    bad = _write(
        tmp_path / "bad.csv",
        [
            HEADER,
            *GOOD,
            "BTCUSD,2024-01-03T00:02:00Z,100,98,99,100.5,10,100,5",  # line 4: high < low
            "NOPE,2024-01-03T00:03:00Z,100,101,99,100.5,10,100,5",  # line 5: unknown symbol
            "BTCUSD,2024-01-03 00:04:00,100,101,99,100.5,10,100,5",  # line 6: naive timestamp
        ],
    )
    semi = _write(tmp_path / "semi.csv", [HEADER.replace(",", ";"), GOOD[0].replace(",", ";")])
    res = runner.invoke(app, ["validate", str(bad), str(semi), str(tmp_path / "missing.csv")])
    assert res.exit_code == 1
    out = res.output
    assert f"{bad}:4: high_below_low" in out
    assert f"{bad}:5: unknown_symbol" in out
    assert f"{bad}:6: naive_timestamp" in out
    assert f"{semi}: malformed_file" in out and "delimiter" in out
    assert "missing.csv: no such file" in out
    assert f"{bad}: 2 row(s) accepted, 3 row(s) rejected" in out

    # with the source's time zone the naive row passes; with --any-symbol the unknown symbol does
    res2 = runner.invoke(app, ["validate", "--timezone", "UTC", "--any-symbol", str(bad)])
    assert res2.exit_code == 1  # high < low is still wrong
    assert "naive_timestamp" not in res2.output and "unknown_symbol" not in res2.output
    assert f"{bad}:4: high_below_low" in res2.output


def test_validate_column_map_and_bad_options(settings, tmp_path):
    renamed = _write(tmp_path / "renamed.csv", [HEADER.replace("timestamp", "ts"), *GOOD])
    assert runner.invoke(app, ["validate", str(renamed)]).exit_code == 1  # 'timestamp' missing
    res = runner.invoke(app, ["validate", "--column-map", '{"ts": "timestamp"}', str(renamed)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["validate", "--column-map", "{ts", str(renamed)])
    assert res.exit_code == 2 and "not valid JSON" in res.output
    res = runner.invoke(app, ["validate", "--timezone", "Mars/Base", str(renamed)])
    assert res.exit_code == 2 and "unknown time zone" in res.output


def test_run_ingests_through_dagster_then_status_shows_it(settings):
    res = runner.invoke(app, ["run", "--days", "1", "--symbols", "ethusd", "--generations", "0"])
    assert res.exit_code == 0, res.output
    day = newest_closed_day()
    out = res.output
    assert "ETHUSD" in out and "1440" in out
    assert str(settings.resolved_duckdb_path) in out.replace("\n", "")
    assert "1440 bar(s) accepted, 0 row(s) rejected" in out
    assert "bar quality check failed" not in out

    store = StorageResource(backend="local").get_store()
    bars = store.read_bars("ETHUSD")
    assert len(bars) == 1440 and (bars["timestamp"].dt.date == day).all()
    assert store.list_symbols()["symbol"].tolist() == ["ETHUSD"]
    store.close()  # qt status opens the file itself

    status = runner.invoke(app, ["status", "--backend", "local"])
    assert status.exit_code == 0, status.output
    assert "healthy" in status.output and "ETHUSD" in status.output and "1440" in status.output
    assert pd.Timestamp(day).strftime("%Y-%m-%d") in status.output


def test_run_rejects_unknown_symbols_and_bad_days(settings):
    res = runner.invoke(app, ["run", "--days", "1", "--symbols", "NOPE"])
    assert res.exit_code == 1
    assert "not in QT_SYMBOLS" in res.output and "NOPE" in res.output
    res = runner.invoke(app, ["run", "--days", "0"])
    assert res.exit_code == 1 and "--days must be >= 1" in res.output
    res = runner.invoke(app, ["run", "--end", "2024-01-05"])
    assert res.exit_code == 1 and "--end needs --start" in res.output
    res = runner.invoke(app, ["run", "--start", "2024-01-05", "--end", "2024-01-03"])
    assert res.exit_code == 1 and "--end 2024-01-03 is before --start 2024-01-05" in res.output
    res = runner.invoke(app, ["run", "--start", "2023-12-30"])
    assert res.exit_code == 1 and "before QT_PARTITIONS_START=2024-01-01" in res.output
    res = runner.invoke(app, ["run", "--start", "2024-13-01"])
    assert res.exit_code != 0 and "2024-13-01" in res.output  # typer: not a date


def test_explicit_days_are_inclusive_and_inside_the_partitions():
    d = pd.Timestamp
    start, newest = d("2024-01-01").date(), d("2024-01-10").date()
    days = explicit_days(d("2024-01-02").date(), d("2024-01-04").date(), 3, start, newest)
    assert days == [d(x).date() for x in ("2024-01-02", "2024-01-03", "2024-01-04")]
    assert explicit_days(d("2024-01-09").date(), None, 2, start, newest) == [
        d("2024-01-09").date(),
        d("2024-01-10").date(),
    ]
    with pytest.raises(StageError, match="after the newest closed UTC day 2024-01-10"):
        explicit_days(d("2024-01-09").date(), None, 3, start, newest)


def test_ingestion_days_respects_partitions_start():
    d = pd.Timestamp("2024-01-10").date()
    assert ingestion_days(3, pd.Timestamp("2024-01-01").date(), d) == [
        pd.Timestamp(x).date() for x in ("2024-01-08", "2024-01-09", "2024-01-10")
    ]
    assert ingestion_days(5, pd.Timestamp("2024-01-09").date(), d) == [
        pd.Timestamp(x).date() for x in ("2024-01-09", "2024-01-10")
    ]
    with pytest.raises(StageError, match="QT_PARTITIONS_START=2024-01-11 is after the newest closed day"):
        ingestion_days(3, pd.Timestamp("2024-01-11").date(), d)


def test_status_never_prints_secrets(settings, monkeypatch):
    secret_url = "postgresql://qt:sup3r-secret-pw@127.0.0.1:1/nodb?connect_timeout=1"
    monkeypatch.setenv("NEON_DATABASE_URL", secret_url)
    from qt_pipeline.config import get_settings

    get_settings.cache_clear()
    res = runner.invoke(app, ["status", "--backend", "neon"])
    assert "sup3r-secret-pw" not in res.output
    assert res.exit_code == 1


def test_validate_checks_every_file_even_after_a_garbage_one(settings, tmp_path):
    a = _write(tmp_path / "a.csv", [HEADER, *GOOD])
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\x01 not a csv")
    # b: no vwap/trade_count (derived), an extra column (a warning, not a reject), a wrong number per row
    rows = [f"BTCUSD,2024-01-03T00:0{i}:00Z,100,101,99,x{i},10,note" for i in range(5)]
    b = _write(tmp_path / "b.csv", ["symbol,timestamp,open,high,low,close,volume,comment", *rows])
    res = runner.invoke(app, ["validate", str(a), str(garbage), str(b), "--limit", "10"])
    assert res.exit_code == 1, res.output
    out = res.output
    assert f"{a}: 2 row(s) accepted, 0 row(s) rejected" in out
    assert f"{garbage}: not a landing file" in out
    assert f"{b}: 0 row(s) accepted, 5 row(s) rejected (wrong_type=5)" in out
    assert out.count("extra column(s) ['comment'] ignored") == 1
    assert out.count("wrong_type: column 'close' value") == 3  # 3 examples, then a count
    assert f"{b}: … 2 more wrong_type like the above" in out
    for name in ("a.csv", "garbage.bin", "b.csv"):  # the summary lists every file given
        assert name in out.split("validation summary")[1]


def test_validate_warnings_alone_exit_zero_and_config_sources(settings, tmp_path):
    cfg = tmp_path / "landing.yaml"
    cfg.write_text(
        "sources:\n"
        "  - name: daily\n"
        "    match: ['**/*.csv']\n"
        "    symbol: {constant: BTCUSD}\n"
        "    columns: {Date: timestamp}\n"
        "    timestamp: {format: '%Y-%m-%d', timezone: UTC}\n"
    )
    f = _write(
        tmp_path / "daily.csv",
        ["Date,Open,High,Low,Close,Adj Close,Volume", "2024-01-02,100,101,99,100.5,100.4,10"],
    )
    res = runner.invoke(app, ["validate", "--config", str(cfg), str(f)])
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "['Adj Close'] ignored" in res.output
    assert f"{f}: 1 row(s) accepted, 0 row(s) rejected; bars 2024-01-02T00:00:00+00:00" in res.output
    bad = runner.invoke(app, ["validate", "--config", str(cfg), "--source", "nope", str(f)])
    assert bad.exit_code == 2 and "--source 'nope' is not in" in bad.output


def test_run_with_landing_source_quarantines_files_that_fit_no_partition(settings, monkeypatch):
    from datetime import date

    from rich.console import Console

    from qt_pipeline.cli.run import RunContext, stage_quarantine
    from qt_pipeline.config import get_settings

    monkeypatch.setenv("QT_MARKET_SOURCE", "landing")
    get_settings.cache_clear()
    s = get_settings()
    landing = s.resolved_landing_dir
    landing.mkdir(parents=True)
    (landing / "empty.csv").write_bytes(b"")
    (landing / "garbage.csv").write_bytes(b"\x00\x01\x02 garbage\n")
    _write(landing / "types.csv", [HEADER, "BTCUSD,yesterday,a,b,c,d,e,f,g"])
    good = _write(landing / "good.csv", [HEADER, *GOOD])
    console = Console(record=True, width=200)
    ctx = RunContext(settings=s, console=console, days=[date(2024, 1, 3)], symbols=["BTCUSD"])
    stage_quarantine(ctx)
    out = console.export_text()
    assert ctx.results["quarantine"] == {"files": 3}
    for name in ("empty.csv", "garbage.csv", "types.csv"):
        assert f"{name}: quarantined" in out
    assert "good.csv" not in out
    store = StorageResource(backend="local").get_store()
    reasons = store.read_rejects().groupby("source")["reason"].apply(set).to_dict()
    assert reasons[str(landing / "empty.csv")] == {"empty_file"}
    assert "wrong_type" in reasons[str(landing / "types.csv")]
    assert str(good) not in reasons
