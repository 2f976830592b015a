"""Cold tier repairs (issue 10): a lost archive whose range was re-migrated no longer breaks reads,
`qt cold forget` removes its catalogue entry, `qt cold restore` puts an archived range back into Postgres.
Real Postgres, real Parquet files, the real CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from qt_pipeline.config import get_settings
from qt_pipeline.market.contract import KEY
from qt_pipeline.storage.checksum import frame_checksum
from qt_pipeline.storage.cold_tier import list_archives, run_cold_tier
from qt_pipeline.storage.interface import StorageError
from qt_pipeline.storage.migration import migrate_all
from qt_pipeline_tests.storage.central.helpers import make_bars, sql

NOW = pd.Timestamp("2024-01-10T12:00Z")
runner = CliRunner()


def _cli_env(monkeypatch, pg_schema):
    url, schema = pg_schema
    monkeypatch.setenv("NEON_DATABASE_URL", url)
    monkeypatch.setenv("QT_PG_SCHEMA", schema)
    get_settings.cache_clear()


def test_lost_archive_then_remigrate_then_forget(settings, local, central, pg_schema, monkeypatch) -> None:
    from qt_pipeline.cli import app

    url, schema = pg_schema
    bars = make_bars(("BTCUSD", "ETHUSD"), days=3, per_day=20)  # 2024-01-02 .. 04
    local.write_bars(bars)
    migrate_all(local, central)
    expected = central.read_range()
    run_cold_tier(central, settings, older_than_days=7, now=NOW)  # cutoff 01-03: 01-02 archived
    cat = list_archives(central)
    assert len(cat) == 1 and cat["dropped_at"].notna().all()
    lost = Path(cat["location"].iloc[0])
    lost.unlink()  # the archive vanishes
    with pytest.raises(StorageError) as err:
        central.read_range()
    msg = str(err.value)
    assert "qt cold restore" in msg and "qt cold forget" in msg and "holds only 0 row(s)" in msg
    # re-migrate everything from the local store (what `qt migrate --no-resume` does)
    migrate_all(local, central, resume=False)
    assert sql(url, f'SELECT count(*) FROM "{schema}".ohlcv_bars')[0][0] == 120
    # reads no longer depend on the lost archive: Postgres holds the whole range again
    got = central.read_range()
    assert len(got) == 120 and frame_checksum(got) == frame_checksum(expected)
    _cli_env(monkeypatch, pg_schema)
    out = runner.invoke(app, ["cold", "status"])
    assert out.exit_code == 0 and "UNREADABLE" in out.output
    out = runner.invoke(app, ["cold", "forget", "--start", "2024-01-01", "--end", "2024-01-05"])
    assert out.exit_code == 0, out.output
    assert (
        "forgotten: [2024-01-02T00:00:00+00:00, 2024-01-03T00:00:00+00:00) 40 archived row(s), 40 in"
        in out.output
    )
    assert list_archives(central).empty
    # the next cold-tier run archives the day again, from Postgres, and reads stay exact
    report = run_cold_tier(central, settings, older_than_days=7, now=NOW)
    assert [p.rows for p in report.partitions if p.action == "archived"] == [40]
    assert frame_checksum(central.read_range()) == frame_checksum(expected)


def test_forget_refuses_when_postgres_lacks_the_rows_and_restore_puts_them_back(
    settings, local, central, pg_schema, monkeypatch
) -> None:
    from qt_pipeline.cli import app

    url, schema = pg_schema
    bars = make_bars(("BTCUSD",), days=3, per_day=25)
    local.write_bars(bars)
    migrate_all(local, central)
    expected = central.read_range()
    run_cold_tier(central, settings, older_than_days=6, now=NOW)  # cutoff 01-04: 01-02, 01-03 archived
    assert len(list_archives(central)) == 2
    assert sql(url, f'SELECT count(*) FROM "{schema}".ohlcv_bars')[0][0] == 25
    # a newer correction written into an archived day: it must win over the archive after restore
    fix = expected.iloc[[3]].assign(close=999.5)
    central.write_bars(fix)
    _cli_env(monkeypatch, pg_schema)
    out = runner.invoke(app, ["cold", "forget"])
    assert out.exit_code == 1 and "kept:" in out.output and "not in PostgreSQL" in out.output
    assert len(list_archives(central)) == 2  # nothing forgotten: Postgres lacks the archived rows
    out = runner.invoke(app, ["cold", "restore"])
    assert out.exit_code == 0, out.output
    assert out.output.count("restored:") == 2 and "24 row(s) written back" in out.output
    assert list_archives(central).empty
    assert not list((settings.resolved_cold_tier_dir / "ohlcv_bars").rglob("*.parquet"))
    assert sql(url, f'SELECT count(*) FROM "{schema}".ohlcv_bars')[0][0] == 75
    want = (
        pd.concat([expected, fix], ignore_index=True)
        .drop_duplicates(list(KEY), keep="last")
        .sort_values(list(KEY))
        .reset_index(drop=True)
    )
    got = central.read_range()
    assert len(got) == 75 and frame_checksum(got) == frame_checksum(want)
    assert got.loc[3, "close"] == 999.5
