"""Monitoring, alerting and the cost governor (plain Python, no Dagster imports).

* :mod:`.telemetry` — process-wide timing/pool/bytes hooks on the central store's engines;
* :mod:`.usage` — the usage ledger of a data directory (every process adds to it);
* :mod:`.collect` — one snapshot of every metric (names: ``collect.METRICS``);
* :mod:`.exporter` — the Prometheus exposition (``qt metrics serve``);
* :mod:`.cost` — the cost model, budget, recommendations and the back-off switch (``qt cost``);
* :mod:`.freshness` — newest bar per symbol against the allowed lag;
* :mod:`.alerts` — webhook alerts with the repair command.

Dagster wiring: :mod:`qt_pipeline.defs.monitoring`.
"""
