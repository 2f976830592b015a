"""`qt hybrid recover`: rows that reached the hybrid cache but never the central store (a process of a
version without the write-ahead outbox died mid-write, or rows were lost centrally) are pushed through
the outbox; keys the centre already has keep the centre's value. Real CLI, real DuckDB, real Postgres."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from qt_pipeline.config import get_settings
from qt_pipeline.market.contract import KEY
from qt_pipeline.storage.checksum import frame_checksum
from qt_pipeline.storage.duckdb_store import DuckDBStore
from qt_pipeline.storage.outbox import Outbox
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.storage.backends import make_bars

runner = CliRunner()


def test_recover_pushes_only_what_the_centre_lacks(settings, pg_schema, monkeypatch):
    from qt_pipeline.cli import app

    url, schema = pg_schema
    for k, v in {"NEON_DATABASE_URL": url, "QT_PG_SCHEMA": schema, "STORAGE_BACKEND": "hybrid"}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    s = get_settings()
    central = PostgresStore(url, s, schema=schema)
    central.ensure_schema()
    t0 = pd.Timestamp("2026-03-02", tz="UTC")
    both = make_bars(["AAA", "BBB"], t0, 300, seed=1)
    central.write_bars(both)
    newer = both[both["symbol"] == "AAA"].head(50).copy()
    newer["close"] += 5.0  # written centrally by another machine later: must survive
    central.write_bars(newer)
    lost = make_bars(["AAA", "CCC"], t0 + pd.Timedelta(days=1), 200, seed=2)  # only in the cache
    cache = DuckDBStore(s.resolved_hybrid_cache_path)
    cache.write_bars(both)
    cache.write_bars(lost)
    cache.close()

    out = runner.invoke(app, ["hybrid", "recover", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "400 row(s) missing centrally (AAA: 200, CCC: 200)" in out.output
    assert len(central.read_range()) == 600

    out = runner.invoke(app, ["hybrid", "recover"])
    assert out.exit_code == 0, out.output
    assert "queued and replayed: 400 row(s); 0 batch(es) left" in out.output
    assert Outbox(s.resolved_outbox_dir).is_empty()
    expected = (
        pd.concat([both, newer, lost], ignore_index=True)
        .drop_duplicates(list(KEY), keep="last")
        .sort_values(list(KEY))
        .reset_index(drop=True)
    )
    got = central.read_range()
    assert len(got) == 1_000 and len(got.drop_duplicates(list(KEY))) == 1_000
    assert frame_checksum(got) == frame_checksum(expected)

    out = runner.invoke(app, ["hybrid", "recover"])  # idempotent
    assert out.exit_code == 0 and "0 row(s) missing centrally" in out.output
    central.close()
