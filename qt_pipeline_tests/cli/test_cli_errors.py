"""Every CLI failure ends with one line saying what failed (redacted); the traceback only with
`qt --verbose` (issue 10). Real commands against a real refused port and a real locked DuckDB file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from qt_pipeline.config import get_settings
from qt_pipeline_tests.faults import free_port

REPO = Path(__file__).resolve().parents[2]
SECRET = "cli-err-secret-pw"


def _env(monkeypatch, **values):
    for k, v in values.items():
        monkeypatch.setenv(k, str(v))
    get_settings.cache_clear()


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_unexpected_failure_is_one_line_and_verbose_adds_the_traceback(settings, monkeypatch):
    from qt_pipeline.cli import app

    _env(
        monkeypatch,
        STORAGE_BACKEND="hybrid",
        NEON_DATABASE_URL=f"postgresql://qt:{SECRET}@127.0.0.1:{free_port()}/db",
        QT_HYBRID_CONNECT_TIMEOUT_S=2,
    )
    from qt_pipeline.storage.duckdb_store import DuckDBStore
    from qt_pipeline_tests.storage.backends import make_bars

    cache = DuckDBStore(get_settings().resolved_hybrid_cache_path)
    cache.write_bars(make_bars(["AAA"], "2026-03-02", 10))
    cache.close()
    out = CliRunner().invoke(app, ["hybrid", "recover"])
    assert out.exit_code == 1
    err = _lines(out.stderr)
    assert len(err) == 1, out.stderr
    line = err[0]
    assert line.startswith("error: qt hybrid recover failed: StorageUnavailableError: "), line
    low = line.lower()
    assert "connection refused" in low or "could not be reached" in low, line
    assert "?." not in line and ". the" not in line  # one sentence mark, then a capitalised sentence
    assert "--verbose" in line and "Traceback" not in out.output and SECRET not in out.output

    out = CliRunner().invoke(app, ["--verbose", "hybrid", "recover"])
    assert out.exit_code == 1
    assert "Traceback (most recent call last)" in out.stderr and SECRET not in out.stderr
    assert _lines(out.stderr)[-1].startswith("error: qt hybrid recover failed: StorageUnavailableError")


def test_a_second_concurrent_qt_run_says_the_duckdb_file_is_locked_in_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(data / 'local.duckdb')!r}); "
            "print('locked', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        env = {k: v for k, v in os.environ.items() if not k.startswith("QT_") and k != "NEON_DATABASE_URL"}
        env["QT_DATA_DIR"] = str(data)
        t0 = time.perf_counter()
        out = subprocess.run(
            [str(Path(sys.executable).parent / "qt"), "run", "--days", "1", "--generations", "0"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=600,
        )
        print(f"\n[cli] failing qt run took {time.perf_counter() - t0:.1f} s")
    finally:
        holder.kill()
        holder.wait(10)
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "Traceback" not in text and "Stack Trace" not in text, text[-3000:]
    failure = [ln for ln in _lines(text) if "failed" in ln]
    assert len(failure) == 1, text[-3000:]
    assert "is locked by another process" in failure[0] and "local.duckdb" in failure[0]
    assert len(_lines(text)) <= 4, text
