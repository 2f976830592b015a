"""The cost model and the budget governor (plain Python, no Dagster).

Inputs are measured, prices are configuration (``configs/cost.yaml``, or ``QT_COST_CONFIG``):

* **storage** — the true on-disk sizes of the central store's tables (``pg_total_relation_size`` of every
  partition/chunk, compressed chunks as stored: :func:`~qt_pipeline.storage.postgres.layout.list_time_partitions`),
  the cold tier's Parquet files, and the local DuckDB files (for the comparison);
* **compute** — CU-hours from Neon's consumption API when ``NEON_API_KEY``/``NEON_PROJECT_ID`` are set
  (:class:`~qt_pipeline.storage.neon_api.NeonApiClient`), otherwise the measured active time: the minutes
  in which a central connection was in use (every process, :class:`~.usage.UsageLedger`), each followed by
  the compute's suspend delay, times the configured compute size;
* **egress** — the bytes the central store actually sent for reads (:mod:`.telemetry`).

The report has one line per component with the period's cost and the projection for the month, the
comparison with a shared-filesystem (EFS) and a local-only design, the budget status and recommendations
with their estimated monthly saving. :func:`record_budget` stores the status; :func:`backoff_reason` is the
switch cache warming and migrations consult (``QT_COST_BACKOFF``).
"""

from __future__ import annotations

import calendar
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qt_pipeline.config import Settings
from qt_pipeline.monitoring.usage import UsageLedger
from qt_pipeline.redaction import redact

if TYPE_CHECKING:
    from qt_pipeline.storage.neon_api import NeonApiClient
    from qt_pipeline.storage.postgres.store import PostgresStore

GB = 1e9
DEFAULT_COST_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "cost.yaml"
BUDGET_STATE_KEY = "budget"
BACKOFF_MAX_AGE = timedelta(days=2)  # a budget status older than this no longer makes anything back off


class CostConfigError(ValueError):
    """The cost configuration is unusable (the message names the file, the field and the fix)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Prices(_Strict):
    compute_cu_hour: float = Field(ge=0)
    storage_gb_month: float = Field(ge=0)
    egress_gb: float = Field(ge=0)
    egress_included_gb_month: float = Field(ge=0)
    archive_gb_month: float = Field(ge=0)
    efs_gb_month: float = Field(ge=0)
    efs_read_gb: float = Field(ge=0)
    local_disk_gb_month: float = Field(ge=0)


class ComputeConfig(_Strict):
    cu: float = Field(gt=0)
    suspend_timeout_s: float = Field(ge=0)
    min_suspend_timeout_s: float = Field(ge=0)


class BudgetConfig(_Strict):
    monthly_usd: float = Field(ge=0)
    warn_ratio: float = Field(gt=0, le=1)


class AlternativesConfig(_Strict):
    research_machines: int = Field(ge=1)


class RecommendationConfig(_Strict):
    target_cache_hit_ratio: float = Field(gt=0, lt=1)
    archive_compression_ratio: float = Field(gt=0, le=1)


class CostConfig(_Strict):
    currency: str = "USD"
    prices: Prices
    compute: ComputeConfig
    budget: BudgetConfig
    alternatives: AlternativesConfig
    recommendations: RecommendationConfig
    source: str = ""


def load_cost_config(settings: Settings) -> CostConfig:
    """The cost configuration: ``QT_COST_CONFIG`` (else ``configs/cost.yaml``) with the budget variables
    applied. Raises :class:`CostConfigError` with a one-line reason."""
    path = Path(settings.cost_config) if settings.cost_config else DEFAULT_COST_CONFIG
    if not path.is_file():
        raise CostConfigError(
            f"cost configuration {path} not found; set QT_COST_CONFIG to a YAML file like configs/cost.yaml"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CostConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise CostConfigError(
            f"{path}: must be a mapping with prices, compute, budget, … (see configs/cost.yaml)"
        )
    budget = dict(raw.get("budget") or {})
    if settings.budget_monthly_usd is not None:
        budget["monthly_usd"] = settings.budget_monthly_usd
    if settings.budget_warn_ratio is not None:
        budget["warn_ratio"] = settings.budget_warn_ratio
    raw["budget"] = budget
    try:
        return CostConfig.model_validate({**raw, "source": str(path)})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CostConfigError(
            f"{path}: {where}: {err['msg']} (see configs/cost.yaml for every field and its default)"
        ) from None


# --- measured inputs --------------------------------------------------------------------------------------
@dataclass
class PartitionSize:
    day: date
    bytes: int
    compressed: bool


@dataclass
class StorageSizes:
    central_bytes: int = 0  # every qt table of the central store (bars partitions/chunks included)
    bars_bytes: int = (
        0  # ohlcv_bars: partitions/chunks as stored (compressed chunks at their compressed size)
    )
    compressed_bytes: int = 0  # of which compressed chunks
    bars_rows: int = 0
    cold_tier_bytes: int = 0  # Parquet archives on disk
    cold_tier_files: int = 0
    cold_tier_rows: int = 0  # rows the catalogue says were archived (and dropped)
    local_bytes: int = 0  # DuckDB files of this machine (ingestion file and hybrid cache)
    partitions: list[PartitionSize] = field(default_factory=list)
    symbol_rows: dict[str, int] = field(default_factory=dict)


def measure_storage(settings: Settings, central: PostgresStore) -> StorageSizes:
    """True on-disk sizes: the central store's relations, the cold tier's files, the local DuckDB files."""
    from sqlalchemy import text

    from qt_pipeline.storage.cold_tier import CATALOG_TABLE
    from qt_pipeline.storage.postgres.layout import list_time_partitions, table_layout

    sizes = StorageSizes()
    central.ensure_schema()
    with central.engine.connect() as conn:
        layout = table_layout(conn, central.schema)
        parts = list_time_partitions(conn, central.schema)
        others = 0
        for name in ("ohlcv_rejects", "migration_ledger", CATALOG_TABLE):
            others += int(
                conn.execute(
                    text("SELECT coalesce(pg_total_relation_size(to_regclass(:q)), 0)"),
                    {"q": central.qualified(name)},
                ).scalar_one()
            )
        parent = int(
            conn.execute(
                text("SELECT coalesce(pg_total_relation_size(to_regclass(:q)), 0)"),
                {"q": central.qualified("ohlcv_bars")},
            ).scalar_one()
        )
        archived: Any = conn.execute(
            text(
                f"SELECT coalesce(sum(rows), 0) FROM {central.qualified(CATALOG_TABLE)} WHERE dropped_at IS NOT NULL"
            )
        ).scalar_one()
        conn.rollback()
    for p in parts:
        day = p.range_start.astimezone(UTC).date()
        sizes.partitions.append(PartitionSize(day, int(p.bytes or 0), bool(p.is_compressed)))
    # a partitioned parent has no storage of its own; a hypertable's chunks are not counted in its size
    sizes.bars_bytes = sum(p.bytes for p in sizes.partitions) + (parent if layout != "partitioned" else 0)
    sizes.compressed_bytes = sum(p.bytes for p in sizes.partitions if p.compressed)
    sizes.central_bytes = sizes.bars_bytes + others
    sizes.cold_tier_rows = int(archived)
    summary = central.list_symbols()
    sizes.symbol_rows = {str(r.symbol): int(r.rows) for r in summary.itertuples(index=False)}
    sizes.bars_rows = sum(sizes.symbol_rows.values()) - sizes.cold_tier_rows
    cold_dir = settings.resolved_cold_tier_dir
    if cold_dir.exists():
        files = [f for f in cold_dir.rglob("*.parquet") if f.is_file()]
        sizes.cold_tier_files = len(files)
        sizes.cold_tier_bytes = sum(f.stat().st_size for f in files)
    for f in {settings.resolved_duckdb_path, settings.resolved_hybrid_cache_path}:
        for path in (f, f.with_name(f.name + ".wal")):
            if path.exists():
                sizes.local_bytes += path.stat().st_size
    return sizes


@dataclass
class ComputeUsage:
    source: str  # "neon_api" | "measured"
    cu_hours: float
    active_hours: float
    busy_hours: float  # measured minutes with a connection in use (idle tail excluded)
    idle_hours: float  # active but no connection in use (the suspend delay after the last query)
    active_hours_min_suspend: float  # the active hours had the suspend delay been the plan's minimum


def _active_minutes(busy: list[int], suspend_s: float, end_minute: int) -> int:
    """Minutes the compute was up: every busy minute plus the suspend delay after the last busy minute of
    each stretch (a stretch continues while the next busy minute comes before the compute suspended)."""
    tail = math.ceil(suspend_s / 60.0)
    total, run_end = 0, None
    for m in busy:
        if run_end is None or m > run_end:
            total += 1 + min(tail, max(0, end_minute - m))
            run_end = m + tail
        else:
            total += max(0, min(m + tail, end_minute) - min(run_end, end_minute))
            run_end = m + tail
    return total


def measure_compute(
    cfg: CostConfig,
    ledger: UsageLedger,
    start: datetime,
    end: datetime,
    *,
    neon: NeonApiClient | None = None,
    project_id: str | None = None,
) -> ComputeUsage:
    busy = ledger.busy_minutes(start)
    end_minute = int(end.timestamp() // 60)
    active = _active_minutes(busy, cfg.compute.suspend_timeout_s, end_minute) / 60.0
    active_min = _active_minutes(busy, cfg.compute.min_suspend_timeout_s, end_minute) / 60.0
    busy_h = len(busy) / 60.0
    if neon is not None and project_id:
        rows = neon.consumption(project_id, start, end, granularity="daily")
        cu_seconds = sum(float(r.get("compute_time_seconds") or 0) for r in rows)
        active_s = sum(float(r.get("active_time_seconds") or 0) for r in rows)
        return ComputeUsage(
            "neon_api",
            cu_seconds / 3600.0,
            active_s / 3600.0,
            busy_h,
            max(0.0, active_s / 3600.0 - busy_h),
            active_min,
        )
    return ComputeUsage(
        "measured", active * cfg.compute.cu, active, busy_h, max(0.0, active - busy_h), active_min
    )


# --- the report -------------------------------------------------------------------------------------------
@dataclass
class CostLine:
    component: str
    quantity: float
    unit: str
    unit_price: float
    period_cost: float
    monthly: float
    note: str = ""


@dataclass
class Recommendation:
    title: str
    detail: str
    monthly_saving: float


@dataclass
class CostReport:
    currency: str
    period_days: float
    observed_days: float
    start: datetime
    end: datetime
    days_in_month: int
    lines: list[CostLine]
    alternatives: list[CostLine]
    budget_monthly: float
    warn_at: float
    status: str  # ok | warn | over
    recommendations: list[Recommendation]
    inputs: dict[str, Any]

    @property
    def period_total(self) -> float:
        return sum(line.period_cost for line in self.lines)

    @property
    def projected_monthly(self) -> float:
        return sum(line.monthly for line in self.lines)

    def status_message(self) -> str:
        c = self.currency
        if self.status == "over":
            return f"projected {self.projected_monthly:.2f} {c}/month is OVER the budget of {self.budget_monthly:.2f} {c}"
        if self.status == "warn":
            return (
                f"projected {self.projected_monthly:.2f} {c}/month is above the warning threshold "
                f"({self.warn_at:.2f} {c}) of the budget {self.budget_monthly:.2f} {c}"
            )
        return f"projected {self.projected_monthly:.2f} {c}/month is within the budget of {self.budget_monthly:.2f} {c}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        d["period_total"], d["projected_monthly"] = self.period_total, self.projected_monthly
        return d


def parse_period(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w`` → a time delta (bad input: a ValueError saying what is accepted)."""
    units = {"h": 3600, "d": 86400, "w": 7 * 86400}
    t = text.strip().lower()
    if len(t) < 2 or t[-1] not in units or not t[:-1].replace(".", "", 1).isdigit() or float(t[:-1]) <= 0:
        raise ValueError(f"period {text!r} is not understood; use a positive number with h, d or w, e.g. 30d")
    return timedelta(seconds=float(t[:-1]) * units[t[-1]])


def _first_seen(ledger: UsageLedger, start: datetime) -> datetime:
    first = ledger.first_day()
    busy = ledger.busy_minutes(start)
    candidates = [start]
    seen = []
    if first is not None:
        seen.append(datetime(first.year, first.month, first.day, tzinfo=UTC))
    if busy:
        seen.append(datetime.fromtimestamp(busy[0] * 60, UTC))
    if seen:
        candidates.append(min(seen))
    return max(candidates)


def estimate_cost(
    settings: Settings,
    central: PostgresStore,
    period: timedelta,
    *,
    cfg: CostConfig | None = None,
    now: datetime | None = None,
    neon: NeonApiClient | None = None,
) -> CostReport:
    """The cost report of the last ``period`` with the projection for the month of ``now``."""
    cfg = cfg or load_cost_config(settings)
    end = now or datetime.now(UTC)
    start = end - period
    ledger = UsageLedger.for_data_dir(settings.data_dir)
    from qt_pipeline.monitoring.telemetry import TELEMETRY

    sizes = measure_storage(settings, central)
    TELEMETRY.flush()  # this process's own use counts too (the size queries included)
    observed_from = _first_seen(ledger, start)
    observed_days = max((end - observed_from).total_seconds() / 86400.0, 1 / 24)
    dim = calendar.monthrange(end.year, end.month)[1]
    month_factor = dim / observed_days
    p = cfg.prices

    own_neon = None
    if neon is None and settings.neon_api_key is not None and settings.neon_project_id:
        from qt_pipeline.storage.neon_api import NeonApiClient

        own_neon = neon = NeonApiClient.from_settings(settings)
    try:
        compute = measure_compute(cfg, ledger, start, end, neon=neon, project_id=settings.neon_project_id)
    finally:
        if own_neon is not None:
            own_neon.close()
    totals = ledger.totals(since=start.date())
    bytes_read = totals.get("central_bytes_read", 0.0)
    hits, misses = totals.get("cache_hits", 0.0), totals.get("cache_misses", 0.0)

    # storage grows with what is migrated: on-disk bytes per row × rows migrated per day in the period
    rows_per_day = _rows_migrated(central, start) / observed_days
    bytes_per_row = sizes.bars_bytes / sizes.bars_rows if sizes.bars_rows else 0.0
    remaining_days = dim - end.day + 1 - end.hour / 24.0
    central_gb = sizes.central_bytes / GB
    central_gb_end = (sizes.central_bytes + rows_per_day * bytes_per_row * remaining_days) / GB
    cold_gb = sizes.cold_tier_bytes / GB
    egress_gb = bytes_read / GB
    egress_gb_month = egress_gb * month_factor
    included = p.egress_included_gb_month
    lines = [
        CostLine(
            "central storage",
            central_gb,
            "GB",
            p.storage_gb_month,
            central_gb * p.storage_gb_month * observed_days / dim,
            central_gb_end * p.storage_gb_month,
            f"on-disk, {sizes.compressed_bytes / 1e6:.1f} MB of it in compressed chunks; "
            f"{central_gb_end:.4f} GB projected at month end",
        ),
        CostLine(
            "cold tier",
            cold_gb,
            "GB",
            p.archive_gb_month,
            cold_gb * p.archive_gb_month * observed_days / dim,
            cold_gb * p.archive_gb_month,
            f"{sizes.cold_tier_files} Parquet file(s)",
        ),
        CostLine(
            "compute",
            compute.cu_hours,
            "CU-h",
            p.compute_cu_hour,
            compute.cu_hours * p.compute_cu_hour,
            compute.cu_hours * month_factor * p.compute_cu_hour,
            (
                "Neon consumption API"
                if compute.source == "neon_api"
                else f"measured: {compute.active_hours:.2f} h active × {cfg.compute.cu} CU "
                f"({compute.busy_hours:.2f} h with a connection in use)"
            ),
        ),
        CostLine(
            "egress",
            egress_gb,
            "GB",
            p.egress_gb,
            max(0.0, egress_gb - included * observed_days / dim) * p.egress_gb,
            max(0.0, egress_gb_month - included) * p.egress_gb,
            f"bytes read from the central store; {included:g} GB/month included",
        ),
    ]
    hit_ratio = hits / (hits + misses) if hits + misses else None
    # the naive design reads everything from the shared store: every read at the average central read size
    naive_read_gb = (bytes_read / misses * (hits + misses) / GB) if misses else egress_gb
    total_gb = (sizes.central_bytes + sizes.cold_tier_bytes) / GB
    machines = cfg.alternatives.research_machines
    alternatives = [
        CostLine(
            "EFS (shared filesystem)",
            total_gb,
            "GB",
            p.efs_gb_month,
            total_gb * p.efs_gb_month * observed_days / dim + naive_read_gb * p.efs_read_gb,
            total_gb * p.efs_gb_month + naive_read_gb * month_factor * p.efs_read_gb,
            f"all data on EFS, {naive_read_gb * month_factor:.4f} GB/month read (every read, no cache)",
        ),
        CostLine(
            "local-only",
            total_gb * machines,
            "GB",
            p.local_disk_gb_month,
            total_gb * machines * p.local_disk_gb_month * observed_days / dim,
            total_gb * machines * p.local_disk_gb_month,
            f"a full copy on each of {machines} machine(s); no shared store, no consistency across machines",
        ),
    ]
    budget = cfg.budget.monthly_usd
    warn_at = budget * cfg.budget.warn_ratio
    projected = sum(line.monthly for line in lines)
    status = "over" if projected > budget else "warn" if projected >= warn_at else "ok"
    recs = recommend(
        settings, cfg, sizes, compute, ledger, start, hit_ratio, lines[3].monthly, month_factor, end
    )
    inputs = {
        "central_bytes": sizes.central_bytes,
        "bars_bytes": sizes.bars_bytes,
        "compressed_bytes": sizes.compressed_bytes,
        "cold_tier_bytes": sizes.cold_tier_bytes,
        "cold_tier_files": sizes.cold_tier_files,
        "local_bytes": sizes.local_bytes,
        "central_bytes_read": bytes_read,
        "cache_hits": hits,
        "cache_misses": misses,
        "cache_hit_ratio": hit_ratio,
        "compute_source": compute.source,
        "cu_hours": compute.cu_hours,
        "active_hours": compute.active_hours,
        "busy_hours": compute.busy_hours,
        "rows_migrated_per_day": rows_per_day,
        "config": cfg.source,
    }
    return CostReport(
        cfg.currency,
        period.total_seconds() / 86400.0,
        observed_days,
        start,
        end,
        dim,
        lines,
        alternatives,
        budget,
        warn_at,
        status,
        recs,
        inputs,
    )


def _rows_migrated(central: PostgresStore, since: datetime) -> int:
    from sqlalchemy import text

    with central.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    f"SELECT coalesce(sum(rows), 0) FROM {central.qualified('migration_ledger')} "
                    "WHERE status = 'done' AND migrated_at >= :since"
                ),
                {"since": since},
            ).scalar_one()
        )


def recommend(
    settings: Settings,
    cfg: CostConfig,
    sizes: StorageSizes,
    compute: ComputeUsage,
    ledger: UsageLedger,
    start: datetime,
    hit_ratio: float | None,
    egress_monthly: float,
    month_factor: float,
    now: datetime,
) -> list[Recommendation]:
    """Recommendations with their estimated monthly saving, largest first."""
    p = cfg.prices
    ratio = cfg.recommendations.archive_compression_ratio
    if sizes.cold_tier_rows and sizes.cold_tier_bytes and sizes.bars_rows and sizes.bars_bytes:
        # measured: archive bytes per row / database bytes per row
        ratio = (sizes.cold_tier_bytes / sizes.cold_tier_rows) / (sizes.bars_bytes / sizes.bars_rows)
    per_gb_saving = p.storage_gb_month - p.archive_gb_month * ratio
    today = now.date()
    out: list[Recommendation] = []

    overdue = [
        x for x in sizes.partitions if not x.compressed and (today - x.day).days > settings.cold_after_days
    ]
    if overdue:
        gb = sum(x.bytes for x in overdue) / GB
        out.append(
            Recommendation(
                f"compress/archive {len(overdue)} day(s) older than QT_COLD_AFTER_DAYS={settings.cold_after_days}",
                f"{gb * 1e3:.1f} MB still uncompressed in the database; run the cold tier "
                "(`dagster job launch -w workspace.yaml -j cold_tier_job`, or switch on cold_tier_schedule)",
                gb * per_gb_saving,
            )
        )
    window = [
        x
        for x in sizes.partitions
        if not x.compressed and settings.warm_days < (today - x.day).days <= settings.cold_after_days
    ]
    if window:
        gb = sum(x.bytes for x in window) / GB
        out.append(
            Recommendation(
                f"archive {len(window)} more day(s): lower QT_COLD_AFTER_DAYS to QT_WARM_DAYS={settings.warm_days}",
                f"{gb * 1e3:.1f} MB of days beyond the cache's warm window are still in the database",
                gb * per_gb_saving,
            )
        )
    reads = ledger.symbol_reads(start.date())
    unread = sorted(s for s in sizes.symbol_rows if reads.get(s, 0) == 0)
    if unread and sizes.bars_rows > 0:
        rows = sum(sizes.symbol_rows[s] for s in unread)
        gb = sizes.bars_bytes * min(1.0, rows / max(1, sizes.bars_rows)) / GB
        out.append(
            Recommendation(
                f"{len(unread)} symbol(s) never read in the period: {', '.join(unread[:10])}",
                f"{rows} row(s), about {gb * 1e3:.1f} MB; archive them to the cold tier or drop them from "
                "QT_SYMBOLS if nobody needs them",
                gb * per_gb_saving,
            )
        )
    idle = compute.active_hours - compute.active_hours_min_suspend
    if compute.idle_hours > 0 and idle > 0:
        saving = idle * month_factor * cfg.compute.cu * p.compute_cu_hour
        out.append(
            Recommendation(
                f"compute idle {compute.idle_hours:.2f} h of {compute.active_hours:.2f} h active",
                f"the compute waits {cfg.compute.suspend_timeout_s:g} s after the last query before it "
                f"suspends; {cfg.compute.min_suspend_timeout_s:g} s would save {idle:.2f} h in the period "
                "(Neon: endpoint suspend_timeout_seconds); batch migrations so the compute wakes less often",
                saving,
            )
        )
    target = cfg.recommendations.target_cache_hit_ratio
    if hit_ratio is not None and hit_ratio < target:
        saving = egress_monthly * (1 - (1 - target) / (1 - hit_ratio)) if hit_ratio < 1 else 0.0
        out.append(
            Recommendation(
                f"cache hit ratio {hit_ratio:.0%} below {target:.0%}",
                f"raise QT_HOT_DAYS (now {settings.hot_days}) to cover the days research reads, or use "
                "STORAGE_BACKEND=hybrid on every research machine; saving priced on egress above the allowance",
                max(0.0, saving),
            )
        )
    return sorted(out, key=lambda r: -r.monthly_saving)


# --- the governor -----------------------------------------------------------------------------------------
def record_budget(settings: Settings, report: CostReport) -> None:
    """Remember the budget status (the back-off switch and the exporter read it)."""
    UsageLedger.for_data_dir(settings.data_dir).set_state(
        BUDGET_STATE_KEY,
        {
            "status": report.status,
            "projected_monthly": report.projected_monthly,
            "budget_monthly": report.budget_monthly,
            "currency": report.currency,
            "at": report.end.isoformat(),
        },
    )


def backoff_reason(settings: Settings, action: str) -> str | None:
    """Why ``action`` (cache warming, migration) should back off now, or ``None``. ``QT_COST_BACKOFF``:
    ``over`` (default) backs off when the last budget status is over budget, ``warn`` already at the warning
    threshold, ``off`` never. A status older than two days is ignored (the cost asset runs daily)."""
    if settings.cost_backoff == "off":
        return None
    state = UsageLedger.for_data_dir(settings.data_dir).state(BUDGET_STATE_KEY, max_age=BACKOFF_MAX_AGE)
    if not state:
        return None
    levels = {"ok": 0, "warn": 1, "over": 2}
    if levels.get(str(state.get("status")), 0) < levels[settings.cost_backoff]:
        return None
    return redact(
        f"{action} backs off: the projected monthly cost {float(state['projected_monthly']):.2f} "
        f"{state.get('currency', '')} is {state['status']} the budget {float(state['budget_monthly']):.2f} "
        f"(QT_COST_BACKOFF={settings.cost_backoff}; `qt cost` shows the recommendations, QT_COST_BACKOFF=off "
        "lifts the switch)"
    )


__all__ = [
    "DEFAULT_COST_CONFIG",
    "ComputeUsage",
    "CostConfig",
    "CostConfigError",
    "CostLine",
    "CostReport",
    "Recommendation",
    "StorageSizes",
    "backoff_reason",
    "estimate_cost",
    "load_cost_config",
    "measure_compute",
    "measure_storage",
    "parse_period",
    "record_budget",
    "recommend",
]
