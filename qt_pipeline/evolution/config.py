"""EvolutionConfig: everything one evolution run needs, validated before any work starts.

The config is a frozen pydantic model. :func:`parse_config` / :func:`load_config` turn any validation
problem into one :class:`EvolutionConfigError` that lists every bad field with what was given and how to
fix it. Checks that need the outside world (symbols present in the store, enough bars in the train and
test windows, a Ray address that answers, a run id that exists when resuming) are done by
:func:`qt_pipeline.evolution.runner.run_evolution` *before* anything is written to the state tables.

Naive datetimes (e.g. ``2024-01-01`` in YAML) are read as UTC.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qt_pipeline.market.contract import SYMBOL_PATTERN

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"

# Fields that do not change the result of a run (where and how fast it is computed, resume intent):
# they are left out of the config identity, so a run may be resumed on another cluster/worker count.
NON_IDENTITY_FIELDS = frozenset(
    {
        "run_id",
        "resume",
        "ray_address",
        "num_workers",
        "worker_threads",
        "batch_size",
        "use_ray",
        "memory_budget_mb",
    }
)


class EvolutionConfigError(ValueError):
    """An evolution config is invalid; the message names every bad field and how to fix it."""


def new_run_id() -> str:
    return f"evo-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


class FitnessSettings(BaseModel):
    """Mirrors :class:`qt_pipeline.evolution.fitness.FitnessConfig` (plus ``min_horizon_days``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["sharpe", "sortino", "calmar", "cagr"] = "sharpe"
    min_trades: int = Field(default=10, ge=0)  # in sample, all folds and symbols together
    min_trades_per_fold: int = Field(default=3, ge=0)
    max_drawdown: float = Field(default=0.5, gt=0.0, le=1.0)  # in every in-sample fold
    min_exposure: float = Field(default=0.0, ge=0.0, le=1.0)
    max_exposure: float = Field(default=1.0, ge=0.0, le=1.0)
    fold_aggregate: Literal["mean", "median", "min"] = "mean"
    # CAGR and Calmar extrapolate to a year: refused as fitness, and shown as n/a, on shorter windows
    min_horizon_days: float = Field(default=365.0, gt=0.0)

    @model_validator(mode="after")
    def _exposure(self) -> FitnessSettings:
        if self.min_exposure > self.max_exposure:
            raise ValueError(
                f"min_exposure ({self.min_exposure}) must not exceed max_exposure ({self.max_exposure})"
            )
        return self

    def to_core(self) -> Any:
        from qt_pipeline.evolution.fitness import FitnessConfig

        return FitnessConfig(**self.model_dump(exclude={"min_horizon_days"}))


class CostSettings(BaseModel):
    """Mirrors :class:`qt_pipeline.evolution.backtest.Costs` (see ``docs/execution_model.md``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fee_bps: float = Field(default=1.0, ge=0.0, le=1000.0)  # per unit of traded notional
    slippage_bps: float = Field(default=1.0, ge=0.0, le=1000.0)
    borrow_bps_per_year: float = Field(default=0.0, ge=0.0, le=5000.0)  # on short positions, per bar held

    def to_core(self) -> Any:
        from qt_pipeline.evolution.backtest import Costs

        return Costs(**self.model_dump())


def _utc(v: Any) -> Any:
    if v is None or isinstance(v, str) and not v.strip():
        return None
    try:
        t = pd.Timestamp(v)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{v!r} is not a date/time; use ISO format such as 2024-01-01 or 2024-01-01T12:00Z"
        ) from exc
    if t is pd.NaT:
        raise ValueError(f"{v!r} is not a date/time")
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.to_pydatetime()


class EvolutionConfig(BaseModel):
    """One evolution run. See ``configs/evolution.example.yaml`` for a commented example."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- data --------------------------------------------------------------------------------------
    symbols: tuple[str, ...] = Field(
        min_length=1, description="Symbols to evolve on (must be in the bar store)"
    )
    start: datetime = Field(description="First bar time (inclusive), e.g. 2024-01-01 (naive = UTC)")
    end: datetime = Field(description="End of the data (exclusive)")
    train_end: datetime | None = Field(
        default=None, description="End of the training window; default: start + train_fraction*(end-start)"
    )
    test_start: datetime | None = Field(
        default=None, description="Start of the out-of-sample window (>= train_end); default: train_end"
    )
    train_fraction: float = Field(default=0.7, gt=0.0, lt=1.0)
    min_bars: int = Field(default=200, ge=10)  # per symbol, in each in-sample and out-of-sample segment
    periods_per_year: float | None = Field(default=None, gt=0.0)  # default: inferred calendar (calendar.py)
    # portfolio: capital per symbol (normalised to sum 1); None = equal weight
    weights: dict[str, float] | None = Field(default=None, description="Capital per symbol; empty: equal")

    # --- walk-forward validation (validation.py) -------------------------------------------------------
    folds: int = Field(default=3, ge=1, le=52, description="Walk-forward folds (1 = one train/test split)")
    scheme: Literal["rolling", "anchored"] = "rolling"
    purge_bars: int = Field(default=0, ge=0)  # dropped at the start of every out-of-sample segment
    embargo_bars: int = Field(default=0, ge=0)  # dropped at the start of every later in-sample segment

    # --- GA ------------------------------------------------------------------------------------------
    population_size: int = Field(default=50, ge=2, le=100_000)
    generations: int = Field(default=10, ge=1, le=100_000)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    tournament_size: int = Field(default=3, ge=1)
    crossover_prob: float = Field(default=0.9, ge=0.0, le=1.0)
    mutation_prob: float = Field(default=0.3, ge=0.0, le=1.0)
    gene_mutation_prob: float = Field(default=0.2, ge=0.0, le=1.0)
    sbx_eta: float = Field(default=15.0, gt=0.0)
    mutation_eta: float = Field(default=20.0, gt=0.0)
    elite: int = Field(default=2, ge=0)
    hall_of_fame_size: int = Field(default=10, ge=1, le=1000)
    oos_collapse_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    fitness: FitnessSettings = Field(default_factory=FitnessSettings)
    costs: CostSettings = Field(default_factory=CostSettings)

    # --- execution -----------------------------------------------------------------------------------
    use_ray: bool = True
    ray_address: str | None = Field(
        default=None, description="Existing Ray cluster (ray://host:10001); empty: local Ray"
    )
    num_workers: int = Field(default=2, ge=1, le=4096)
    # CPUs (Numba threads) of each Ray worker process; None: a local Ray runs all num_workers CPUs in one
    # process (its threads share every span of the series in cache), a cluster one process per CPU
    worker_threads: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)  # genomes per Ray task; None: automatic
    # evaluation memory per worker (indicator cache + portfolio rows); None: QT_EVOLUTION_MEMORY_MB or 2048
    memory_budget_mb: int | None = Field(default=None, ge=16)

    # --- identity ------------------------------------------------------------------------------------
    run_id: str = Field(
        default_factory=new_run_id,
        pattern=RUN_ID_PATTERN,
        description="Run id; an existing id with the same config resumes it; empty: generated",
    )
    resume: bool = False

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s for s in v.split(",")]
        if isinstance(v, list | tuple):
            out = [str(s).strip().upper() for s in v if str(s).strip()]
            import re

            bad = [s for s in out if not re.match(SYMBOL_PATTERN, s)]
            if bad:
                raise ValueError(f"malformed symbol(s) {bad}; symbols look like BTCUSD or ETH-USD")
            dup = sorted({s for s in out if out.count(s) > 1})
            if dup:
                raise ValueError(f"symbol(s) {dup} listed more than once")
            return tuple(out)
        return v

    @field_validator("start", "end", "train_end", "test_start", mode="before")
    @classmethod
    def _times(cls, v: Any) -> Any:
        return _utc(v)

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k).strip().upper(): v2 for k, v2 in v.items()}
        return v

    @field_validator("ray_address", mode="before")
    @classmethod
    def _address(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            return None
        return v.strip() if isinstance(v, str) else v

    @field_validator("run_id", mode="before")
    @classmethod
    def _run_id(cls, v: Any) -> Any:
        if v is None or isinstance(v, str) and not v.strip():
            return new_run_id()
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EvolutionConfig:
        problems = []
        if self.end <= self.start:
            problems.append(
                f"end ({self.end:%Y-%m-%d %H:%M}) must be after start ({self.start:%Y-%m-%d %H:%M})"
            )
        else:
            tr_end, te_start = self.train_end_resolved, self.test_start_resolved
            if not self.start < tr_end < self.end:
                problems.append(
                    f"train_end ({tr_end:%Y-%m-%d %H:%M}) must lie strictly between start and end "
                    f"[{self.start:%Y-%m-%d %H:%M}, {self.end:%Y-%m-%d %H:%M}]"
                )
            if te_start < tr_end:
                problems.append(
                    f"test window [{te_start:%Y-%m-%d %H:%M}, {self.end:%Y-%m-%d %H:%M}) overlaps the training "
                    f"window [{self.start:%Y-%m-%d %H:%M}, {tr_end:%Y-%m-%d %H:%M}); set test_start >= train_end"
                )
            elif te_start >= self.end:
                problems.append(
                    f"test_start ({te_start:%Y-%m-%d %H:%M}) must be before end; the test window is empty"
                )
        if self.folds > 1 and (self.train_end is not None or self.test_start is not None):
            problems.append(
                f"train_end/test_start set a single split, but folds={self.folds}: with several walk-forward "
                "folds each block is split by train_fraction; remove train_end/test_start or set folds: 1"
            )
        if self.weights is not None:
            extra = sorted(set(self.weights) - set(self.symbols))
            missing = [s for s in self.symbols if s not in self.weights]
            bad = {k: v for k, v in self.weights.items() if not (v >= 0 and v < float("inf"))}
            if extra or missing or bad or sum(self.weights.values()) <= 0:
                problems.append(
                    f"weights must give every symbol {list(self.symbols)} a number >= 0 (not all 0); "
                    f"unknown {extra or 'none'}, missing {missing or 'none'}, bad {bad or 'none'}"
                )
        if self.fitness.metric in ("cagr", "calmar") and self.end > self.start:
            days = self.in_sample_days
            if days < self.fitness.min_horizon_days:
                problems.append(
                    f"fitness.metric {self.fitness.metric!r} extrapolates returns to a year, but an in-sample fold "
                    f"spans {days:.1f} days < fitness.min_horizon_days={self.fitness.min_horizon_days:g}; use "
                    "sharpe or sortino, or a longer window"
                )
        if self.tournament_size > self.population_size:
            problems.append(
                f"tournament_size ({self.tournament_size}) cannot exceed population_size ({self.population_size})"
            )
        if self.elite >= self.population_size:
            problems.append(
                f"elite ({self.elite}) must be smaller than population_size ({self.population_size}) "
                "or no offspring are ever bred"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- derived -----------------------------------------------------------------------------------
    @property
    def train_end_resolved(self) -> datetime:
        if self.train_end is not None:
            return self.train_end
        span = pd.Timestamp(self.end) - pd.Timestamp(self.start)
        return (pd.Timestamp(self.start) + span * self.train_fraction).floor("s").to_pydatetime()

    @property
    def in_sample_days(self) -> float:
        """Days spanned by the shortest in-sample fold."""
        if self.folds == 1:
            return (pd.Timestamp(self.train_end_resolved) - pd.Timestamp(self.start)) / pd.Timedelta(days=1)
        span = (pd.Timestamp(self.end) - pd.Timestamp(self.start)) / pd.Timedelta(days=1)
        return span / self.folds * self.train_fraction

    def weight_vector(self) -> list[float]:
        if self.weights is None:
            return [1.0] * len(self.symbols)
        return [float(self.weights[s]) for s in self.symbols]

    @property
    def test_start_resolved(self) -> datetime:
        return self.test_start if self.test_start is not None else self.train_end_resolved

    def identity(self) -> dict[str, Any]:
        """The part of the config that determines the result (JSON-safe)."""
        return self.model_dump(mode="json", exclude=set(NON_IDENTITY_FIELDS))

    def identity_hash(self) -> str:
        payload = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def format_validation_error(exc: ValidationError, *, source: str = "evolution config") -> str:
    lines = [f"{source} is invalid ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(config)"
        msg = err["msg"].removeprefix("Value error, ")
        given = err.get("input")
        shown = "" if isinstance(given, dict) or err["type"] == "missing" else f" (got {given!r})"
        if err["type"] == "extra_forbidden":
            model: Any = {"fitness": FitnessSettings, "costs": CostSettings}.get(
                str(err["loc"][0]), EvolutionConfig
            )
            known = model.model_fields if len(err["loc"]) > 1 else EvolutionConfig.model_fields
            msg = f"unknown field; known fields: {', '.join(sorted(known))}"
        lines.append(f"  - {loc}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any] | EvolutionConfig, **overrides: Any) -> EvolutionConfig:
    """Validate ``data`` (plus ``overrides`` whose value is not None) into an :class:`EvolutionConfig`."""
    if isinstance(data, EvolutionConfig):
        data = data.model_dump()
    merged = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return EvolutionConfig.model_validate(merged)
    except ValidationError as exc:
        raise EvolutionConfigError(format_validation_error(exc)) from None


def load_config(path: str | Path, **overrides: Any) -> EvolutionConfig:
    """Read a YAML/JSON run config. Accepts the plain field mapping, or the Dagster run-config shape
    (``ops: {evolved_strategies: {config: {...}}}``) so ``configs/evolution.example.yaml`` works for both."""
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise EvolutionConfigError(f"evolution config file {p} does not exist") from None
    except yaml.YAMLError as exc:
        raise EvolutionConfigError(f"evolution config file {p} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise EvolutionConfigError(f"evolution config file {p} must hold a mapping of fields")
    if "ops" in raw:
        ops = raw["ops"] or {}
        if len(ops) != 1:
            raise EvolutionConfigError(f"{p}: expected exactly one entry under 'ops', found {list(ops)}")
        raw = (next(iter(ops.values())) or {}).get("config") or {}
    try:
        return parse_config(raw, **overrides)
    except EvolutionConfigError as exc:
        raise EvolutionConfigError(str(exc).replace("evolution config", f"evolution config {p}", 1)) from None
