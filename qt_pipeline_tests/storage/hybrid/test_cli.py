"""`qt outbox status|replay` and `qt health`, run through the real Typer app against a real PostgreSQL."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from qt_pipeline.config import get_settings
from qt_pipeline.storage.outbox import Outbox
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.faults import free_port
from qt_pipeline_tests.storage.backends import make_bars

runner = CliRunner()


def _env(monkeypatch, **values):
    for k, v in values.items():
        monkeypatch.setenv(k, str(v))
    get_settings.cache_clear()
    return get_settings()


def test_outbox_status_and_replay(settings, pg_schema, monkeypatch):
    from qt_pipeline.cli import app

    url, schema = pg_schema
    s = _env(monkeypatch, NEON_DATABASE_URL=url, QT_PG_SCHEMA=schema)
    ob = Outbox(s.resolved_outbox_dir)
    for i in range(3):
        ob.append(make_bars(["CLI"], pd.Timestamp("2026-02-01", tz="UTC") + pd.Timedelta(hours=i), 5, seed=i))
    out = runner.invoke(app, ["outbox", "status", "--json"])
    assert out.exit_code == 0, out.output
    st = json.loads(out.output)
    assert st["batches"] == 3 and st["rows"] == 15
    out = runner.invoke(app, ["outbox", "replay"])
    assert out.exit_code == 0, out.output
    assert "replayed 3 batch(es), 15 row(s)" in out.output
    assert ob.is_empty()
    central = PostgresStore(url, s, schema=schema)
    try:
        assert len(central.read_bars("CLI")) == 15
    finally:
        central.close()
    assert "nothing to replay" in runner.invoke(app, ["outbox", "replay"]).output


def test_health_reports_and_exit_codes_without_leaking_the_password(settings, pg_url, monkeypatch):
    from qt_pipeline.cli import app

    _env(monkeypatch, NEON_DATABASE_URL=pg_url)
    out = runner.invoke(app, ["health"])
    assert out.exit_code == 0, out.output
    assert "healthy" in out.output and "PostgreSQL" in out.output

    _env(
        monkeypatch,
        NEON_DATABASE_URL=f"postgresql://qt:cli-secret-pw@127.0.0.1:{free_port()}/db",
        QT_PG_CONNECT_TIMEOUT_S=1,
    )
    out = runner.invoke(app, ["health", "--json"])
    assert out.exit_code == 1
    payload = json.loads(out.output)
    assert payload["central"]["healthy"] is False and "refused" in payload["central"]["reason"].lower()
    assert "cli-secret-pw" not in out.output

    monkeypatch.delenv("NEON_DATABASE_URL")
    get_settings.cache_clear()
    out = runner.invoke(app, ["health"])
    assert out.exit_code == 2 and "NEON_DATABASE_URL" in out.output
