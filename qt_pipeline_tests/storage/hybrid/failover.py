"""One network-fault scenario against a real hybrid store, shared by the tests and
``benchmarks/bench_failover.py``.

A hybrid store whose central PostgreSQL is reached through a real :class:`TcpProxy` writes some batches
(acknowledged), then the proxy fails in one of four ways, more batches are written (each write must
return: queued in the outbox), the proxy is restored and the outbox replayed. The result says what was
acknowledged, what Postgres holds afterwards (read directly, not through the proxy), the duplicates and
the times (fail over = the first write after the fault, recover = health probe + replay).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from qt_pipeline.market.contract import KEY
from qt_pipeline.storage.checksum import frame_checksum
from qt_pipeline.storage.duckdb_store import DuckDBStore
from qt_pipeline.storage.hybrid import HybridStore, central_settings
from qt_pipeline.storage.outbox import Outbox
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.faults import TcpProxy
from qt_pipeline_tests.storage.backends import make_bars

MODES = ("refuse", "blackhole-new", "blackhole-established", "cut-mid-stream")
HANG_GUARD_S = 120.0  # a write that has not returned by then is a hang (the bug: ~15 min), not slowness


@dataclass
class ScenarioResult:
    mode: str
    acknowledged_rows: int
    rows_after_recovery: int
    duplicates: int
    failover_s: float
    store_failover_s: float | None
    recover_s: float
    checksum_equal: bool
    queued_batches: int

    def row(self) -> str:
        return (
            f"| {self.mode} | {self.acknowledged_rows} | {self.rows_after_recovery} | {self.duplicates} | "
            f"{self.failover_s:.2f} s / {self.recover_s:.2f} s |"
        )


def _fault(proxy: TcpProxy, mode: str) -> None:
    if mode == "refuse":
        proxy.cut("refuse")
    elif mode == "blackhole-new":
        proxy.cut("blackhole")  # live connections die (as after a recycle), new ones are never answered
    elif mode == "blackhole-established":
        proxy.cut("blackhole-all")  # pooled connections stay open but nothing comes back, new ones hang
    elif mode == "cut-mid-stream":
        proxy.drop_after_bytes(30_000, once=False)  # every connection dies after 30 kB client->server
    else:
        raise ValueError(mode)


def _heal(proxy: TcpProxy, mode: str) -> None:
    if mode == "cut-mid-stream":
        proxy.clear_faults()
    else:
        proxy.restore()


def _write_bounded(store: HybridStore, frame: pd.DataFrame) -> tuple[dict, float]:
    """``store.write_bars(frame)`` in a thread; returns (details, seconds) or raises on a hang."""
    out: dict = {}

    def run() -> None:
        try:
            out["details"] = store.write_bars(frame).details
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            out["error"] = exc

    t0 = time.perf_counter()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG_GUARD_S)
    elapsed = time.perf_counter() - t0
    if t.is_alive():
        raise AssertionError(f"write_bars did not return within {HANG_GUARD_S:.0f} s: the store hangs")
    if "error" in out:
        raise out["error"]
    return out["details"], elapsed


def run_scenario(
    mode: str, settings, url: str, schema: str, workdir: Path, *, batch_rows: int = 2_000
) -> ScenarioResult:
    """Run ``mode`` against Postgres ``url`` (schema ``schema``, expected empty); ``settings`` are the
    hybrid settings (failover budget, probe interval)."""
    workdir.mkdir(parents=True, exist_ok=True)
    proxy = TcpProxy("127.0.0.1", make_port(url))
    central = PostgresStore(proxy.url_for(url), central_settings(settings), schema=schema)
    direct = PostgresStore(url, settings, schema=schema)
    store = HybridStore(
        DuckDBStore(workdir / "cache.duckdb"), central, settings, outbox=Outbox(workdir / "ob")
    )
    start = pd.Timestamp("2026-03-02", tz="UTC")
    acknowledged: list[pd.DataFrame] = []
    try:
        central.ensure_schema()
        for i in range(2):  # healthy: written centrally, pool connections are open and idle
            frame = make_bars(["AAA", "BBB"], start + pd.Timedelta(days=i), batch_rows // 2, seed=i)
            details, _ = _write_bounded(store, frame)
            assert details["central"] == "written", details
            acknowledged.append(frame)
        _fault(proxy, mode)
        frame = make_bars(["AAA", "BBB"], start + pd.Timedelta(days=2), batch_rows // 2, seed=2)
        details, failover_s = _write_bounded(store, frame)
        acknowledged.append(frame)
        assert details["central"] == "queued", details
        assert store.degraded
        for i in range(3, 5):  # more writes while down: straight to the outbox
            frame = make_bars(["AAA", "BBB"], start + pd.Timedelta(days=i), batch_rows // 2, seed=i)
            details, _ = _write_bounded(store, frame)
            assert details["central"] == "queued", details
            acknowledged.append(frame)
        # an update of already-acknowledged keys while down: the replay must keep the newest values
        upd = acknowledged[0].copy()
        upd["close"] = upd["close"] + 1.0
        details, _ = _write_bounded(store, upd)
        assert details["central"] == "queued", details
        acknowledged.append(upd)
        queued = store.state.outbox_batches
        store_failover_s = store.state.failover_s
        _heal(proxy, mode)
        time.sleep(max(0.0, float(settings.hybrid_probe_interval_s)) + 0.05)
        t0 = time.perf_counter()
        health = store.health()
        recover_s = time.perf_counter() - t0
        assert health.healthy, health.message
        assert store.state.outbox_batches == 0
        expected = (
            pd.concat(acknowledged, ignore_index=True)
            .drop_duplicates(list(KEY), keep="last")
            .sort_values(list(KEY))
            .reset_index(drop=True)
        )
        got = direct.read_range()
        dups = int(len(got) - len(got.drop_duplicates(list(KEY))))
        return ScenarioResult(
            mode=mode,
            acknowledged_rows=len(expected),
            rows_after_recovery=len(got),
            duplicates=dups,
            failover_s=failover_s,
            store_failover_s=store_failover_s,
            recover_s=recover_s,
            checksum_equal=frame_checksum(got) == frame_checksum(expected),
            queued_batches=queued,
        )
    finally:
        store.close()
        direct.close()
        proxy.close()


def make_port(url: str) -> int:
    from sqlalchemy.engine import make_url

    return int(make_url(url).port or 5432)


def hybrid_settings(settings, **extra):
    """Settings for the scenarios: a fast probe, the default failover budget unless overridden."""
    update = {"hybrid_probe_interval_s": 0.2}
    update.update(extra)
    return settings.model_copy(update=update)
