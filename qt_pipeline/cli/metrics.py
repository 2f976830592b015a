"""``qt metrics serve --port N``: the Prometheus exporter (long-running), and ``qt metrics show``: one
collection printed. Metric names: README "Monitoring & cost" (``qt_pipeline.monitoring.collect.METRICS``).

The exporter observes the central store in use: ``NEON_DATABASE_URL``, or the embedded PostgreSQL when it
runs (it is never started by monitoring; ``qt_central_up`` is 0 meanwhile).
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qt_pipeline.config import get_settings

console = Console()


class _Source:
    """Collects a snapshot per scrape, reusing one central store (and its pool) while it answers."""

    def __init__(self, settings):
        from qt_pipeline.monitoring.collect import CentralMetricsCache

        self.settings = settings
        self.central = None
        self.why = ""
        # the whole-table aggregates at most once per QT_METRICS_INTERVAL_S, whatever the scrape interval
        self.cache = CentralMetricsCache(settings.metrics_interval_s)

    def __call__(self):
        from qt_pipeline.monitoring.collect import collect_metrics, open_central_if_running

        if self.central is None:
            self.central, self.why = open_central_if_running(self.settings)
        snap = collect_metrics(self.settings, self.central, cache=self.cache)
        if snap.value("qt_central_up") == 0 and self.central is not None:
            self.central.close()  # reopened on the next scrape (e.g. the embedded server restarted)
            self.central = None
        if self.why and self.central is None:
            snap.errors.append(f"central store not observed: {self.why}")
        return snap

    def close(self) -> None:
        if self.central is not None:
            self.central.close()
            self.central = None


def register(app: typer.Typer) -> None:
    metrics_app = typer.Typer(help="Platform metrics: Prometheus exporter and a one-off view.")

    @metrics_app.command("serve")
    def serve(
        port: Annotated[int, typer.Option("--port", help="TCP port of /metrics.")] = 9464,
        addr: Annotated[
            str, typer.Option("--addr", help="Address to listen on (0.0.0.0: every interface).")
        ] = "127.0.0.1",
    ) -> None:
        """Serve /metrics in the Prometheus text format until interrupted (Ctrl-C / SIGTERM)."""
        from qt_pipeline.monitoring.exporter import serve as start

        source = _Source(get_settings())
        try:
            server, _thread = start(source, port, addr)
        except OSError as exc:
            raise RuntimeError(
                f"cannot listen on {addr}:{port} ({exc.strerror}); choose another --port"
            ) from None
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        console.print(f"serving metrics on http://{addr}:{server.server_port}/metrics (Ctrl-C stops)")
        try:
            stop.wait()
        finally:
            server.shutdown()
            server.server_close()
            source.close()

    @metrics_app.command("show")
    def show() -> None:
        """Collect the metrics once and print them."""
        source = _Source(get_settings())
        try:
            snap = source()
        finally:
            source.close()
        t = Table(title=f"metrics at {snap.collected_at:%Y-%m-%d %H:%M:%S} UTC")
        t.add_column("metric")
        t.add_column("value", justify="right")
        for s in snap.samples:
            t.add_row(s.key, f"{s.value:g}")
        console.print(t)
        for e in snap.errors:
            console.print(f"[yellow]{e}[/yellow]")

    app.add_typer(metrics_app, name="metrics")
